"""The experiment runner end to end, through the real CLI in subprocesses."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.integration.helpers import ROOT, TINY, cli, read_metrics, stable


def sweep_jobs(sweep_dir: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sweep_dir.rglob("metrics.json")}


@pytest.fixture
def out(tmp_path):
    return tmp_path / "outputs"


def test_basic_sweep_scores_once_and_writes_curve(out):
    r = cli(
        "experiments.run",
        "-m",
        *TINY,
        f"output_root={out}",
        f"cache_dir={out}/cache",
        "name=basic",
        "sparsity=0.0,0.02",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = out / "sweeps" / "basic"
    jobs = sweep_jobs(sweep)
    assert set(jobs) == {"q=0.0", "q=0.02"}
    first, second = (read_metrics(jobs[k]) for k in ("q=0.0", "q=0.02"))
    # one process: the second job reuses the first job's model and scores
    assert {first["stages"]["scores_harm"], second["stages"]["scores_harm"]} == {"computed", "memory"}
    assert first["n_pruned"] == 0 and first["sparsity_achieved"] == 0.0
    assert second["n_pruned"] > 0 and 0.015 < second["sparsity_achieved"] <= 0.02
    assert second["baseline"] == first["baseline"] == {k: first[k] for k in first["baseline"]}
    assert second["harm_nll"] > second["baseline"]["harm_nll"]  # pruning by harm scores hurts the harm data
    with open(sweep / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["sparsity_requested"]) for r in rows] == [0.0, 0.02]
    assert float(rows[1]["harm_nll"]) == pytest.approx(second["harm_nll"])
    assert (sweep / "curve.png").stat().st_size > 1000
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["n_points"] == 2 and summary["n_failed"] == 0
    (curve,) = summary["curves"]
    assert curve["n_prompts"] == 4 and curve["reached"] == (second["compliance"] <= 0.5 * first["compliance"])
    for job in jobs.values():
        for name in ("provenance.json", "generations.jsonl", "mask.safetensors", ".hydra/config.yaml"):
            assert (job / name).exists(), name
        prov = json.loads((job / "provenance.json").read_text())
        assert prov["config_hash"] == read_metrics(job)["config_hash"] and prov["torch"]
        gens = [json.loads(line) for line in (job / "generations.jsonl").read_text().splitlines()]
        assert len(gens) == 4 and {"prompt", "response", "refusal", "dense_response"} <= set(gens[0])

    # scorer.cache=false: the same job, its scores kept in memory only
    r = cli("experiments.run", *TINY, f"output_root={out}/nocache", f"cache_dir={out}/nocache/cache",
            "sparsity=0.02", "scorer.cache=false")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (job,) = (out / "nocache" / "runs").rglob("metrics.json")
    alone = read_metrics(job.parent)
    assert alone["stages"]["scores_harm"] == "computed"
    assert not list((out / "nocache" / "cache").rglob("*-*.safetensors"))  # no score file
    assert alone["config_hash"] == second["config_hash"]
    assert (alone["n_pruned"], alone["harm_nll"]) == (second["n_pruned"], second["harm_nll"])


def test_submitit_local_sweep_matches_basic_launcher(out):
    common = [*TINY, f"output_root={out}", "sparsity=0.0,0.02"]
    r = cli("experiments.run", "-m", *common, "name=basic")
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli(
        "experiments.run",
        "-m",
        "hydra/launcher=submitit_local",
        *common,
        "name=local",
        "hydra.launcher.timeout_min=10",
        f"cache_dir={out}/cache_local",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    basic, local = sweep_jobs(out / "sweeps" / "basic"), sweep_jobs(out / "sweeps" / "local")
    assert set(basic) == set(local) == {"q=0.0", "q=0.02"}
    statuses = []
    for k in basic:
        b, loc = read_metrics(basic[k]), read_metrics(local[k])
        assert stable(b) == stable(loc)
        statuses.append(loc["stages"]["scores_harm"])
    # separate processes share the on-disk cache under a lock: one computes, one reads
    assert sorted(statuses) == ["cached", "computed"]
    assert (out / "sweeps" / "local" / "curve.csv").exists()


def test_killed_sweep_resumes_without_recomputing(out, tmp_path):
    args = [*TINY, f"output_root={out}", "name=resume", "sparsity=0.0,0.01,0.03"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "-m", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sweep = out / "sweeps" / "resume"
    deadline = time.time() + 300
    while not sweep_jobs(sweep) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = {k: (p / "metrics.json").stat().st_mtime_ns for k, p in sweep_jobs(sweep).items()}
    assert finished_before, "the first job never finished"
    assert len(finished_before) < 3, "the sweep finished before the kill: nothing was left to resume"
    r = cli("experiments.run", "-m", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sweep_jobs(sweep)
    assert len(jobs) == 3
    for k, mtime in finished_before.items():
        assert (jobs[k] / "metrics.json").stat().st_mtime_ns == mtime  # finished jobs are not rerun
    for k, job in jobs.items():
        if k not in finished_before:
            stages = read_metrics(job)["stages"]
            assert stages["scores_harm"] in ("cached", "memory") and stages["calibration_harmful"] == "cached"
    # an uninterrupted sweep gives the same metrics
    r = cli(
        "experiments.run",
        "-m",
        *TINY,
        f"output_root={tmp_path / 'fresh'}",
        "name=resume",
        "sparsity=0.0,0.01,0.03",
        f"cache_dir={tmp_path / 'fresh_cache'}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    fresh = sweep_jobs(tmp_path / "fresh" / "sweeps" / "resume")
    for k in jobs:
        assert stable(read_metrics(jobs[k])) == stable(read_metrics(fresh[k]))


def test_wandb_offline_run_is_written_and_readable(out):
    r = cli(
        "experiments.run", *TINY, f"output_root={out}", "logger=wandb", "sparsity=0.02", env={"WANDB_MODE": "offline"}
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (job,) = [p.parent for p in out.rglob("metrics.json")]
    files = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    from harmcore.report.tracking import read_wandb_file

    run = read_wandb_file(files[0])
    history, group = run["history"], run["group"]
    metrics = read_metrics(job)
    assert history["harm_nll"] == pytest.approx(metrics["harm_nll"])
    assert history["sparsity_achieved"] == pytest.approx(metrics["sparsity_achieved"])
    assert group == "tiny_random_all_signed_snip"  # the sweep's name (`name`): one group per sweep
    assert run["config"]["data"]["n_calibration"] == 4 and run["summary"]["harm_nll"] == history["harm_nll"]
    assert run["config"]["sparsity"] == 0.02 and run["config"]["log10_sparsity"] == pytest.approx(math.log10(0.02))
    assert run["summary"]["sparsity"] == metrics["sparsity_achieved"] and run["summary"]["q"] == 0.02
    assert run["summary"]["log10_sparsity"] == pytest.approx(math.log10(metrics["sparsity_achieved"]))
    assert set(run["tags"]) == {"experiment:none", "model:tiny_random", "scorer:signed_snip", "domain:all",
                                "protocol:harmcore", "family:tiny", "unaligned"}  # fmt: skip
    assert f"wandb sync {job / 'wandb'}/offline-run-*" in r.stderr  # where the runs are, and how to upload them
    # raw generations stay local unless asked for
    assert not any("generations" in k for k in history)


def test_a_wandb_sweep_is_one_group_in_one_folder(out):
    r = cli("experiments.run", *TINY, "-m", "sparsity=0,0.05", f"output_root={out}", "logger=wandb", "name=wb",
            env={"WANDB_MODE": "offline"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    from harmcore.report.tracking import read_wandb_file

    sweep = out / "sweeps" / "wb"
    runs = [read_wandb_file(f) for f in sweep.glob("wandb/offline-run-*/run-*.wandb")]
    names = sorted(run["name"] for run in runs)
    assert names == ["curve/tiny_random/all/signed_snip", "sweep/wb", "tiny_random/all/signed_snip/q=0",
                     "tiny_random/all/signed_snip/q=0.05"]  # fmt: skip
    assert {run["group"] for run in runs} == {"wb"} and not list(sweep.rglob("q=*/wandb"))
    (curve,) = [run for run in runs if run["name"].startswith("curve/")]
    assert [step["sparsity"] for step in curve["steps"]] == [0.0, pytest.approx(0.05, rel=0.01)]
    assert f"wandb sync {sweep / 'wandb'}/offline-run-*" in r.stderr


def test_main_job_on_embedded_model(out):
    """The README's main job (smaller data): real SmolLM2-135M-Instruct, real StrongREJECT prompts."""
    r = cli(
        "experiments.run",
        f"output_root={out}",
        "data.n_calibration=6",
        "data.n_eval=6",
        "data.response_tokens=24",
        "generation.max_new_tokens=24",
        "sparsity=0.01",
        "eval.bootstrap=100",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (job,) = [p.parent for p in out.rglob("metrics.json")]
    m = read_metrics(job)
    assert m["model"] == "smollm2_135m_instruct" and m["n_eval"] == 6
    # pinned (measured on x86-64 CPUs, float32): a change in scoring, selection, decoding or judging
    # moves these; NLLs get 2 % for other BLAS builds, the pruned count 0.1 % for ties
    base = m["baseline"]
    assert (base["compliance"], base["refusal_rate"]) == (1.0, 0.0)
    assert (m["compliance"], m["refusal_rate"], m["refusal_rate_wei"]) == (0.0, 1.0, 1.0)
    # keyword compliance is never called harmfulness: that name is the StrongREJECT classifier's (not run here)
    assert "harmfulness" not in m and m["headline"] == {"harm": "compliance", "refusal": "refusal_rate"}
    assert base["harm_nll"] == pytest.approx(1.4145, rel=0.02) and base["benign_nll"] == pytest.approx(1.0413, rel=0.02)
    assert m["harm_nll"] == pytest.approx(23.22, rel=0.02) and m["benign_nll"] == pytest.approx(23.01, rel=0.02)
    assert m["n_pruned"] == pytest.approx(1_059_170, rel=1e-3) and m["sparsity_achieved"] == pytest.approx(
        0.00998, rel=1e-3
    )
    for key in ("compliance", "refusal_rate", "refusal_rate_wei", "harm_nll", "benign_nll"):  # each with a CI
        for point in (m, m["baseline"]):
            lo, hi = point[f"{key}_ci"]
            assert lo <= point[key] <= hi, (key, point[key], lo, hi)
    assert m["n_pruned"] > 0 and m["harm_nll"] != m["baseline"]["harm_nll"]
    gens = [json.loads(line) for line in (job / "generations.jsonl").read_text().splitlines()]
    assert all(g["dense_response"] for g in gens)
    # the job's pruned model taken out as a checkpoint (harmcore export), read back with transformers
    from harmcore.models.config import ModelConfig
    from harmcore.models.loading import load
    from tests.integration.test_export_serve import check_export

    spec = ModelConfig(name="smollm2_135m_instruct", builder="smollm2_embedded", dtype="float32", device="cpu")
    dense, _ = load(spec, Path(os.environ["HARMCORE_CACHE"]))
    record = check_export(job, out / "pruned", dense)
    assert record["source_model"]["builder"] == "smollm2_embedded"


ONE_LINE_ERRORS = [
    (["model=llama3_instructt"], "unknown model 'llama3_instructt'. Did you mean 'llama3_instruct'?"),
    (["scorer=wandaa"], "unknown scorer 'wandaa'. Did you mean 'wanda'?"),
    (["harm_domain=violense"], "Did you mean 'violence'?"),
    (["sparsity=2"], "sparsity=2.0 is outside [0, 1)"),
    (["model.path=/nonexistent/model", "model.builder=null"], "model.path=/nonexistent/model is not a directory"),
    (["output_root=/proc/harmcore"], "output_root=/proc/harmcore is not writable"),
    (["harm_domain.categories=[Nothing]"], "match no strongreject prompt"),
]


@pytest.mark.parametrize("args,message", ONE_LINE_ERRORS)
def test_bad_input_is_one_clear_line(out, args, message):
    r = cli("experiments.run", *TINY, f"output_root={out}", *args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], r.stderr[-2000:]


@pytest.mark.parametrize(
    "module,args,message",
    [("experiments.finetune_em", ["em.lrr=1e-4"], "unknown key 'em.lrr' in 'em.lrr=1e-4'. Did you mean 'em.lr'?"),
     ("experiments.finetune_em", ["em.lr=fast"], "Value 'fast' of type 'str' could not be converted to Float"),
     ("experiments.generate_data", ["datagen.method=self", "data.target=harmful"], "data.target=harmful: use harm")],
)  # fmt: skip
def test_bad_overrides_of_the_other_entry_points_are_one_line(out, module, args, message):
    r = cli(module, "model=tiny_random", f"output_root={out}", *args)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], r.stderr[-2000:]
    assert not any(out.iterdir()) if out.exists() else True  # nothing written


def test_override_error_with_a_blank_cause_is_still_one_line(monkeypatch):
    from hydra.errors import ConfigCompositionException

    from harmcore.errors import HarmcoreError
    from harmcore.run import cli as harmcore_cli

    def compose(*args, **kwargs):
        raise ConfigCompositionException("Could not override 'x'.") from ValueError("  \n ")

    monkeypatch.setattr(harmcore_cli, "compose", compose)
    with pytest.raises(HarmcoreError) as err:
        harmcore_cli.compose_run_config(["x=1"])
    assert str(err.value).startswith("Could not override 'x'; check it against") and "\n" not in str(err.value)


def test_unreachable_hub_model_says_how_to_use_a_local_copy(out):
    r = cli(
        "experiments.run",
        "model=llama3_instruct",
        "model.device=cpu",
        f"output_root={out}",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]  # before anything runs: one line, nothing written
    assert line.startswith("error: cannot fetch model") and "set model.path=/local/dir" in line
    assert not out.exists()


def test_aggregate_reports_failed_jobs(out):
    sweep = out / "sweeps" / "mixed"
    r = cli("experiments.run", "-m", *TINY, f"output_root={out}", "name=mixed", "sparsity=0.01")
    assert r.returncode == 0, r.stderr[-2000:]
    (done,) = sweep_jobs(sweep).values()
    broken = done.parent / "q=0.5"
    broken.mkdir()
    (broken / "FAILED").write_text("RuntimeError: out of memory\n")
    r = cli("experiments.aggregate", str(sweep))
    assert r.returncode == 0 and "1 points, 1 failed" in r.stdout
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["problems"][0]["job"].endswith("q=0.5") and "out of memory" in summary["problems"][0]["error"]
    r = cli("experiments.aggregate", str(out / "nope"))
    assert r.returncode == 1 and r.stderr.startswith("error: ")


def test_sweep_with_a_failing_job_finishes_the_others_and_exits_nonzero(out):
    """data.max_length=8 fits no calibration example: only the job can find that out."""
    r = cli(
        "experiments.run", "-m", *TINY, "data.max_length=256,8", f"output_root={out}", "name=failing", "sparsity=0.02"
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    sweep = out / "sweeps" / "failing"
    assert "no calibration example fits data.max_length=8" in next(sweep.rglob("FAILED")).read_text()
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["n_points"] == 1 and summary["n_failed"] == 1


def test_grouped_sparsities_walk_the_curve_in_one_job(out):
    r = cli(
        "experiments.run",
        "-m",
        *TINY,
        f"output_root={out}",
        f"cache_dir={out}/cache",
        "name=grouped",
        "sparsities=[0.0,0.02]",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = out / "sweeps" / "grouped"
    jobs = sweep_jobs(sweep)
    assert set(jobs) == {"q=0.0", "q=0.02"} and all(j.parent.name == "q=grid" for j in jobs.values())
    assert sorted(read_metrics(j)["stages"]["scores_harm"] for j in jobs.values()) == ["computed", "memory"]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["n_points"] == 2 and summary["n_missing"] == 0
    # the same points as separate jobs give the same metrics
    r = cli("experiments.run", "-m", *TINY, f"output_root={out}", "name=separate", "sparsity=0.0,0.02")
    assert r.returncode == 0, r.stderr[-3000:]
    separate = sweep_jobs(out / "sweeps" / "separate")
    for k in jobs:
        assert stable(read_metrics(jobs[k])) == stable(read_metrics(separate[k]))


def test_a_job_with_offloaded_blocks_matches_the_plain_job(out, tmp_path):
    """The device map typed as docs/cluster.md spells it, with both blocks offloaded (to disk here, the
    stand-in on a machine without a GPU for "cpu" beside GPUs): computed from scratch in its own cache,
    the job prunes the same weights and measures the same as the plain job; its offload folder is gone
    when it ends."""
    offloaded = ("model.device_map={model.embed_tokens: cpu, model.layers.0: disk, model.layers.1: disk, "
                 "model.norm: cpu, model.rotary_emb: cpu, lm_head: cpu}")  # fmt: skip
    jobs = {}
    for label, extra in (("plain", []), ("offloaded", [offloaded])):
        cache = tmp_path / f"cache_{label}"
        r = cli("experiments.run", *TINY, "sparsity=0.01", f"output_root={out / label}", *extra,
                env={"HARMCORE_CACHE": str(cache)})  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        (jobs[label],) = [p.parent for p in (out / label).rglob("metrics.json")]
        if label == "offloaded":  # the folder its weights went to was made and removed
            assert (cache / "offload").is_dir() and not any((cache / "offload").iterdir())
    from harmcore.core import masking

    plain, off = (masking.load(jobs[k] / "mask.safetensors") for k in ("plain", "offloaded"))
    assert plain.n_pruned > 0 and set(plain.indices) == set(off.indices)
    assert all(torch.equal(plain.indices[n], off.indices[n]) for n in plain.indices)
    assert stable(read_metrics(jobs["plain"])) == stable(read_metrics(jobs["offloaded"]))
