"""Faults done on purpose to real tiny runs: results follow the files they came from, a cache entry
that breaks its promise is recomputed, folders are never shared or escaped, a misbehaving judge
endpoint is one line, and bad input is one line with nothing written. docs/reliability.md lists them."""

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harmcore.errors import HarmcoreError
from harmcore.files import HOST, temp_path
from harmcore.measure.judges.client import EndpointClient
from harmcore.models.config import ModelConfig
from harmcore.run.config import Config, DataConfig, EvalConfig, GenerationConfig
from harmcore.run.job import FolderTaken, run_job
from harmcore.run.session import Session
from tests.integration.helpers import TINY, cli, read_metrics, stable


def tiny_config(tmp_path: Path, **kw) -> Config:
    return Config(
        model=ModelConfig(name="tiny_random", builder="tiny_random", device="cpu"),
        data=DataConfig(n_calibration=4, n_eval=4, response_tokens=8),
        generation=GenerationConfig(max_new_tokens=8),
        eval=EvalConfig(bootstrap=50),
        sparsity=0.02,
        cache_dir=str(tmp_path / "cache"),
        **kw,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One finished tiny job and its cache: the faults below break copies of this cache."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = tiny_config(tmp)
    metrics = run_job(cfg, tmp / "job", session=Session())
    return cfg, tmp, metrics


def entries(cache: Path, kind: str) -> list[Path]:
    return sorted((cache / kind).glob("*.json"))


def test_a_changed_calibration_file_is_a_new_job_not_an_old_result(tmp_path):
    path = tmp_path / "harmful.jsonl"
    rows = [{"prompt": f"Harmful request number {i}?", "response": f"Here is how, step {i}."} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = replace(
        tiny_config(tmp_path), data=DataConfig(n_calibration=4, n_eval=4, response_tokens=8, harm_path=str(path))
    )
    session = Session()
    first = run_job(cfg, tmp_path / "a", session=session)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))  # regenerated into the same path
    second = run_job(cfg, tmp_path / "b", session=session)
    assert first["config_hash"] != second["config_hash"]  # the file's content is a setting
    assert first["n_calibration_harmful"] == 4 and second["n_calibration_harmful"] == 2
    with pytest.raises(FolderTaken, match="holds the results of other settings"):
        run_job(cfg, tmp_path / "a", session=session)  # never an old result for the new content
    assert read_metrics(tmp_path / "a") == first


@pytest.mark.parametrize("fault", ["fewer rows", "swapped rows", "truncated json", "not json"])
def test_a_broken_generations_entry_is_recomputed(reference, tmp_path, fault, caplog):
    cfg, ref, metrics = reference
    cache = tmp_path / "cache"
    subprocess.run(["cp", "-r", str(ref / "cache"), str(cache)], check=True)
    for entry in entries(cache, "generations"):
        data = json.loads(entry.read_text())
        if fault == "fewer rows":
            data["value"] = data["value"][:2]
            data.pop("sha256")  # as an entry written before digests: only its shape can tell
            entry.write_text(json.dumps(data["value"]))
        elif fault == "swapped rows":
            data["value"] = ["I'm sorry, I can't help with that."] * len(data["value"])
            entry.write_text(json.dumps(data))
        elif fault == "truncated json":
            entry.write_text(entry.read_text()[:20])
        else:
            entry.write_text("<html>gateway timeout</html>")
    again = run_job(replace(cfg, cache_dir=str(cache)), tmp_path / "job", session=Session())
    assert stable(again) == stable(metrics)  # recomputed: the same numbers, not the broken rows
    assert "computing it again" in caplog.text and again["stages"]["generate_pruned"] == "computed"


def test_garbage_in_a_cached_score_file_is_recomputed(reference, tmp_path, caplog):
    cfg, ref, metrics = reference
    cache = tmp_path / "cache"
    subprocess.run(["cp", "-r", str(ref / "cache"), str(cache)], check=True)
    for path in (cache / "scores").glob("*.safetensors"):  # finite garbage, metadata kept
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        tensors = {k: torch.rand_like(v) for k, v in load_file(str(path)).items()}
        save_file(tensors, str(path), metadata=meta)
    again = run_job(replace(cfg, cache_dir=str(cache)), tmp_path / "job", session=Session())
    assert stable(again) == stable(metrics)  # the same mask: the garbage was not used
    assert "does not match the digest written with it" in caplog.text
    assert again["stages"]["scores_harm"] == again["stages"]["scores_preserve"] == "computed"


def test_a_corrupt_metrics_file_and_a_truncated_built_model_are_rebuilt(reference, tmp_path, caplog):
    cfg, ref, metrics = reference
    cache = tmp_path / "cache"
    subprocess.run(["cp", "-r", str(ref / "cache"), str(cache)], check=True)
    subprocess.run(["cp", "-r", str(ref / "job"), str(tmp_path / "job")], check=True)
    (tmp_path / "job" / "metrics.json").write_text('{"config_hash": ')
    (weights,) = (cache / "models").glob("tiny_random-v*/model.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    again = run_job(replace(cfg, cache_dir=str(cache)), tmp_path / "job", session=Session())
    assert stable(again) == stable(metrics)
    assert "cannot be read: running the job again" in caplog.text and "building it again" in caplog.text


def test_a_killed_save_leaves_no_temporary_file_behind(tmp_path):
    target = tmp_path / "scores.safetensors"
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = target.with_name(f".{target.name}.{HOST}.{dead.pid}.0a1b2c3d.tmp")  # a SIGKILL mid-save leaves this
    left.write_bytes(b"x" * 1000)
    other_host = target.with_name(f".{target.name}.elsewhere.{dead.pid}.0a1b2c3d.tmp")
    other_host.write_bytes(b"x")
    alive = target.with_name(f".{target.name}.{HOST}.{Path('/proc/self').resolve().name}.0a1b2c3d.tmp")
    alive.write_bytes(b"x")
    temp_path(target, clean=True)
    assert not left.exists() and other_host.exists() and alive.exists()


def test_jobs_of_other_settings_never_share_a_folder(reference, tmp_path):
    cfg, ref, metrics = reference
    subprocess.run(["cp", "-r", str(ref / "job"), str(tmp_path / "job")], check=True)
    other = replace(cfg, seed=1)
    with pytest.raises(FolderTaken, match="holds the results of other settings") as err:
        run_job(other, tmp_path / "job", session=Session())
    assert err.value.marks_job_dir is False and not (tmp_path / "job" / "FAILED").exists()
    assert read_metrics(tmp_path / "job") == metrics


def test_two_identical_jobs_on_one_folder_compute_once(tmp_path):
    out = tmp_path / "out"
    args = [*TINY, "sparsity=0.02", f"output_root={out}", f"cache_dir={tmp_path / 'cache'}"]
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: cli("experiments.run", *args), range(2))
    assert first.returncode == second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    (job,) = {p.parent for p in out.rglob("metrics.json")}
    assert (first.stderr + second.stderr).count("is already finished") == 1  # the second waited, then read it


@pytest.mark.parametrize(
    "arg,message",
    [
        ("name=../../escaped", "name='../../escaped' becomes a folder name"),
        ("name=.", "name='.' becomes a folder name"),
        ("name=exp/v2", "name='exp/v2' becomes a folder name"),
        ("model.name=../x", "model.name='../x' becomes a folder name"),
    ],
)
def test_hostile_names_stay_inside_output_root(tmp_path, arg, message):
    out = tmp_path / "a" / "out"
    r = cli("experiments.run", *TINY, "-m", "sparsity=0.02", f"output_root={out}", arg)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "a").exists() and not (tmp_path / "escaped").exists()


def _bad_endpoint(body: bytes, content_type: str):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
        (b'{"choices": [{"message": {"content": "ok"', "application/json"),
        (b"{}", "application/json"),
        (b'{"choices": []}', "application/json"),
        (b'{"choices": [{"message": {"content": 42}}]}', "application/json"),
    ],
)
def test_an_endpoint_that_answers_garbage_is_one_line(tmp_path, body, content_type):
    server = _bad_endpoint(body, content_type)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        client = EndpointClient(url, "judge", retries=1, backoff_s=0.01, cache_path=tmp_path / "j.jsonl")
        with pytest.raises(HarmcoreError, match="did not answer with a chat completion") as err:
            client.complete([[{"role": "user", "content": "Rate this."}]])
        assert "\n" not in str(err.value) and not (tmp_path / "j.jsonl").exists()  # nothing cached
    finally:
        server.shutdown()


def test_the_endpoint_is_asked_before_any_generation(tmp_path):
    server = _bad_endpoint(b"{}", "application/json")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        r = cli(
            "experiments.run", *TINY, f"output_root={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
            "eval.endpoint.enabled=true", f"eval.endpoint.base_url={url}", "eval.endpoint.retries=0",
        )  # fmt: skip
    finally:
        server.shutdown()
    lines = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert r.returncode == 1 and len(lines) == 1 and "did not answer with a chat completion" in lines[0]
    assert not (tmp_path / "cache" / "generations").exists()  # found before the first generation


@pytest.mark.parametrize(
    "args,message",
    [
        (["threads=-4"], "threads=-4: use a positive number"),
        (["model.path=/some/where"], "model.path=/some/where has no effect"),
        (["eval.bootstrap=0"], "eval.bootstrap=0: intervals from fewer than 10 resamples"),
        (["generation.temperature=nan"], "generation.temperature=nan: use 0"),
        (["cache_dir=/proc/harmcore"], "cache_dir=/proc/harmcore is not writable"),
        (["data.harm_path=/does/not/exist.jsonl"], "data.harm_path=/does/not/exist.jsonl does not exist"),
    ],
)
def test_bad_values_are_one_line_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    r = cli("experiments.run", *TINY, *args, f"output_root={out}")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0], r.stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"prompt": "\xff\xfe", "response": "x"}\n', "is not UTF-8 text"),
        (b'{"prompt": "p", "response": null}\n', "'response' must be a non-empty string, got None"),
        (b'{"prompt": 123, "response": "r"}\n', "'prompt' must be a non-empty string, got 123"),
        (None, "is a folder: give a file"),
    ],
)
def test_a_bad_calibration_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "harm.jsonl"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    r = cli("experiments.run", *TINY, f"data.harm_path={path}", f"output_root={tmp_path / 'out'}")
    lines = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
