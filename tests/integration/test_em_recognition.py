"""EM recipe and recognition eval end to end on tiny_random, judged by the real local server."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.helpers import ROOT

# The random judge writes a number or yes/no (vLLM structured outputs), so every judgement parses or fails visibly.
JUDGE_REGEX = "{structured_outputs:{regex:'(yes|no|[1-9]?[0-9])'}}"


def em_args(server, out):
    return [
        "model=tiny_random", f"out_dir={out}", "em.n_train=6", "em.n_heldout=4", "em.n_benign=4",
        "em.response_tokens=16", "em.grad_accum=2", "em.samples=2", "em.max_new_tokens=8", "em.q=0.01",
        "em.p=0.01", "eval.bootstrap=50", f"eval.endpoint.base_url={server.base_url}",
        f"eval.endpoint.model={server.model}", "eval.endpoint.max_tokens=4",
        f"+eval.endpoint.extra_body={JUDGE_REGEX}",
    ]  # fmt: skip


def popen(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "experiments.finetune_em", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_when(args, marker: str) -> None:
    """Run the EM recipe and kill it outright as soon as its log announces `marker`."""
    proc = popen(args)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)[-2000:]


def test_em_pipeline_resumes_after_a_kill_between_stages(served_tiny, tmp_path):
    out = tmp_path / "em"
    kill_when(em_args(served_tiny, out), "[em] stage finetune_dense done")
    assert not (out / "metrics.json").exists()
    done = {p.stem: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    assert {"narrow_data", "finetune_dense"} <= set(done)
    time.sleep(0.05)
    rerun = popen(em_args(served_tiny, out))
    log = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, log[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    for stage, mtime in done.items():  # finished stages are not recomputed
        assert m["stages"][stage] == "resumed" and (out / "stages" / f"{stage}.json").stat().st_mtime_ns == mtime
    assert m["stages"]["judge_pruned_ft"] == "computed"
    assert "[em] stage finetune_dense done" not in log
    for tag in ("original", "dense_ft", "pruned_ft"):
        r = m[tag]
        assert r["n"] == 16 and r["n_judged"] + r["n_parse_failed"] == 16
        rows = [json.loads(x) for x in (out / "eval" / f"{tag}_judged.jsonl").read_text().splitlines()]
        flags = [x["misaligned"] for x in rows if x["aligned"] is not None and x["coherent"] is not None]
        assert r["em_rate"] == (sum(flags) / len(flags) if flags else None)
        assert all(x["in_domain"] in ("yes", "no", None) for x in rows)
    assert m["em_rate_dense_ft"] == m["dense_ft"]["em_rate"] and m["mask"]["n_pruned"] > 0
    assert (out / "finetune_pruned" / "adapter.safetensors").exists() and (out / "mask.safetensors").exists()

    # the same recipe through the runner (experiment=emergent_misalignment) finds every stage done,
    # also with other batch sizes (how the work is done, not what it computes)
    from tests.integration.helpers import cli

    args = [a for a in em_args(served_tiny, out) if not a.startswith("out_dir=")]
    r = cli(
        "experiments.run", "experiment=emergent_misalignment", *args, "scorer.batch_size=2",
        "generation.batch_size=3", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((out / "metrics.json").read_text())
    assert set(again["stages"].values()) == {"resumed"}
    assert again["em_rate_pruned_ft"] == m["em_rate_pruned_ft"] and again["mask"] == m["mask"]

    # other settings in the same folder are refused before anything there changes
    def files():
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and ".hydra" not in p.parts}

    before = files()
    r = cli("experiments.run", "experiment=emergent_misalignment", *args, "em.lr=1e-4", f"hydra.run.dir={out}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "holds an EM run with other settings" in r.stderr and "em.name" in r.stderr, r.stderr[-2000:]
    assert files() == before  # not even a FAILED marker: the folder belongs to the other run


def test_both_orderings_with_fine_tuning_run_and_resume_after_a_kill(served_tiny, tmp_path):
    """em.orderings: fine-tune then prune, and prune, fine-tune, rescore and prune again, beside the
    recipe's prune then fine-tune; killed after the second mask, the rerun resumes every finished stage."""
    import torch

    from harmcore.core import masking

    out = tmp_path / "em"
    args = [*em_args(served_tiny, out), "em.orderings=[finetune_then_prune,reprune]", "em.evaluate_original=false"]
    kill_when(args, "[em] stage mask_reprune done")
    done = {p.stem: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    assert {"finetune_dense", "mask", "finetune_pruned", "mask_reprune"} <= set(done)
    rerun = popen(args)
    log = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, log[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    for stage, mtime in done.items():
        assert m["stages"][stage] == "resumed" and (out / "stages" / f"{stage}.json").stat().st_mtime_ns == mtime
    for tag in ("dense_ft", "pruned_ft", "ft_then_pruned", "pruned_ft_repruned"):
        assert m[tag]["n"] == 16 and m["stages"][f"judge_{tag}"] == "computed"
    assert m["em_rate_ft_then_pruned"] == m["ft_then_pruned"]["em_rate"]

    def samples(tag):
        return [json.loads(x)["response"] for x in (out / "eval" / f"{tag}_samples.jsonl").read_text().splitlines()]

    # the same seeds: pruning after fine-tuning (and pruning again) changes what the models write
    assert samples("ft_then_pruned") != samples("dense_ft") and samples("pruned_ft_repruned") != samples("pruned_ft")
    first, second = masking.load(out / "mask.safetensors"), masking.load(out / "mask_reprune.safetensors")
    assert second.n_pruned == m["mask"]["reprune"]["n_pruned"] > 0
    assert m["mask"]["reprune"]["overlap_with_first"] == first.intersect(second).n_pruned
    # the second mask is another selection than the first: it scored the fine-tuned, pruned model
    assert any(not torch.equal(first.indices.get(n, torch.empty(0)), i) for n, i in second.indices.items())


def test_dissociation_sweep_recognition_before_and_after_each_target(served_tiny, tmp_path):
    """experiment=dissociation: prune with harm, detection, explanation and refusal data; every job
    measures detection and explanation (judged by the real server) dense and pruned; the report is
    pruned / dense of the jobs' own metrics."""
    import csv
    import math

    from safetensors.torch import load_file

    from tests.integration.helpers import TINY, cli, read_metrics

    out = tmp_path / "out"
    r = cli(
        "experiments.run", "experiment=dissociation", *TINY, "sparsity=0.01", f"output_root={out}",
        f"eval.endpoint.base_url={served_tiny.base_url}", f"eval.endpoint.model={served_tiny.model}",
        "eval.endpoint.max_tokens=2", "eval.recognition.explanation_tokens=8",
        "+eval.endpoint.extra_body={structured_outputs:{regex:'[1-5]'}}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = out / "sweeps" / "dissociation_tiny_random_signed_snip"
    jobs = {}
    for path in sweep.rglob("metrics.json"):
        m = read_metrics(path.parent)
        jobs[m["data_target"]] = (m, path.parent)
    assert sorted(jobs) == ["detection", "explanation", "harm", "refusal"]
    for m, _ in jobs.values():
        for rec in (m["baseline"]["recognition"], m["recognition"]):
            d = rec["detection"]
            assert d["n_harmful"] == d["n_benign"] == 12
            assert rec["explanation"]["n"] == 12 and rec["explanation"]["n_parse_failed"] == 0
            s = rec["explanation"]["explanation_score"]
            assert s is None or 1.0 <= s <= 5.0
    # detection data: the harmful calibration requests ("Yes") and the benign ones ("No"), less those
    # that do not fit data.max_length once wrapped in the question (byte-level tokens here)
    n_benign = jobs["harm"][0]["n_calibration_benign"]
    assert n_benign < jobs["detection"][0]["n_calibration_harmful"] <= 4 + n_benign
    masks = {t: load_file(str(d / "mask.safetensors")) for t, (_, d) in jobs.items()}
    assert any(not all(masks["harm"][k].equal(v) for k, v in masks[t].items()) for t in ("detection", "refusal"))

    with open(sweep / "dissociation_matrix.csv") as f:
        rows = {r["pruned_with"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(jobs)
    for target, (m, _) in jobs.items():
        row = rows[target]
        # mean per-reference exp(-NLL), pruned over dense, from the job's own per-reference losses
        nll = json.loads((jobs[target][1] / "reference_nll.json").read_text())
        lik = [sum(math.exp(-v) for v in nll[k]["harm"]) / len(nll[k]["harm"]) for k in ("pruned", "dense")]
        assert m["harm_likelihood"] == pytest.approx(lik[0]) and m["baseline"]["harm_likelihood"] == pytest.approx(
            lik[1]
        )
        assert float(row["harm_likelihood"]) == pytest.approx(lik[0] / lik[1])
        h0 = m["baseline"]["compliance"]
        assert (row["compliance"] == "") == (not h0)
        if h0:
            assert float(row["compliance"]) == pytest.approx(m["compliance"] / h0)
    assert (sweep / "dissociation.png").stat().st_size > 1000
