"""Sweeps on a real SLURM cluster (scripts/slurm/start.sh) through hydra/launcher=local_slurm.

Every test submits through the real CLI, as a user would, and checks what SLURM's own
accounting (sacct) says about the jobs as well as what they wrote.
"""

import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from harmcore.core.score_store import load_scores
from tests.integration.helpers import ROOT, TINY, cli, read_metrics, stable

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

SLURM = ["-m", "hydra/launcher=local_slurm"]
# Reaches the jobs through --export=ALL; must never be written into a job script.
FAKE_TOKEN = "hf_harmcore_test_token_never_written"


def sweep_jobs(sweep_dir: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sweep_dir.rglob("metrics.json")}


def slurm_job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM ids of a sweep's jobs (array tasks as <array>_<task>), from submitit's folders."""
    return sorted(p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl"))


def sacct(job_ids: list[str], every_run: bool = False) -> list[dict]:
    """SLURM's accounting rows of these jobs: one per job, or one per run with every_run."""
    fields = ["JobID", "State", "Start", "End"]
    cmd = ["sacct", "-a", "-X", "-n", "-P", "-o", ",".join(fields), "-j", ",".join(job_ids)]
    out = subprocess.run([*cmd, *(["-D"] if every_run else [])], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]


def wait_for(what: str, condition, timeout: float = 120, proc=None):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) while waiting for {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def completed_in_sacct(job_ids: list[str]) -> list[dict]:
    """sacct's rows once every job is COMPLETED there (slurmdbd may lag the jobs by a moment)."""

    def done():
        rows = sacct(job_ids)
        return rows if len(rows) == len(job_ids) and all(r["State"] == "COMPLETED" for r in rows) else None

    return wait_for(f"jobs {job_ids} COMPLETED in sacct (now {sacct(job_ids)})", done, timeout=60)


def start_cli(log_dir: Path, *args: str) -> subprocess.Popen:
    """experiments.run in the background, as `cli` runs it; output to files (no pipe to fill)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=ROOT,
        env=env,
        stdout=open(log_dir / "stdout", "w"),
        stderr=open(log_dir / "stderr", "w"),
    )


# ---------------------------------------------------------------------------------------
# One two-job sweep through SLURM, and the same sweep with the basic launcher beside it.


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    out = tmp_path_factory.mktemp("slurm_sweeps")
    common = [*TINY, f"output_root={out}", "sparsity=0.0,0.02"]
    with ThreadPoolExecutor(2) as pool:
        basic = pool.submit(cli, "experiments.run", "-m", *common, "name=basic", f"cache_dir={out}/cache_basic")
        slurm = pool.submit(
            cli,
            "experiments.run",
            *SLURM,
            *common,
            "name=slurm",
            f"cache_dir={out}/cache_slurm",
            env={"HF_TOKEN": FAKE_TOKEN},
            timeout=300,
        )
        basic, slurm = basic.result(), slurm.result()
    assert basic.returncode == 0, basic.stderr[-3000:]
    assert slurm.returncode == 0, slurm.stderr[-3000:]
    return out


def test_sweep_runs_as_a_job_array_and_matches_the_basic_launcher(sweeps):
    sweep = sweeps / "sweeps" / "slurm"
    ids = slurm_job_ids(sweep)
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1, ids  # one array, two tasks
    completed_in_sacct(ids)
    basic, slurm = sweep_jobs(sweeps / "sweeps" / "basic"), sweep_jobs(sweep)
    assert set(basic) == set(slurm) == {"q=0.0", "q=0.02"}
    for q in basic:
        assert stable(read_metrics(slurm[q])) == stable(read_metrics(basic[q])), q
    with open(sweep / "curve.csv") as f:
        assert [float(r["sparsity_requested"]) for r in csv.DictReader(f)] == [0.0, 0.02]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["n_points"] == 2 and summary["n_failed"] == summary["n_missing"] == 0
    # the job script: local_slurm's settings, the environment passed by --export, not written
    (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
    text = script.read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=debug", "#SBATCH --export=ALL", "WANDB_MODE=offline"):
        assert line in text, line
    for f in (sweep / ".submitit").rglob("*"):
        assert not f.is_file() or FAKE_TOKEN.encode() not in f.read_bytes(), f


def test_two_jobs_at_once_share_the_score_cache(sweeps):
    sweep = sweeps / "sweeps" / "slurm"
    completed_in_sacct(slurm_job_ids(sweep))
    # Whether the two tasks overlap is the scheduler's choice; the file lock that makes one of them
    # wait is shown deterministically in tests/unit/test_stage_locks.py.
    metrics = [read_metrics(job) for job in sweep_jobs(sweep).values()]
    for stage in ("calibration_harmful", "scores_harm", "scores_preserve"):
        # two processes, one cache: one computes under the file lock, the other reads the file
        assert sorted(m["stages"][stage] for m in metrics) == ["cached", "computed"], stage
    for method in ("signed_snip", "snip"):
        (written,) = (sweeps / "cache_slurm" / "scores").glob(f"{method}-*.safetensors")
        (reference,) = (sweeps / "cache_basic" / "scores").glob(f"{method}-*.safetensors")
        assert written.name == reference.name  # same content address
        scores, expected = load_scores(written), load_scores(reference)  # intact, finite, right metadata
        # equal up to float rounding: one thread (the job's one core) sums in another order than two
        assert scores.keys() == expected.keys()
        assert all(torch.allclose(scores[k], expected[k], rtol=1e-5, atol=1e-7) for k in scores)


# ---------------------------------------------------------------------------------------
# A job that fails


def test_failing_job_is_recorded_and_the_others_finish(tmp_path):
    """One job of the sweep fails inside run_job (data.max_length=8: no calibration example fits,
    which only the data can tell); the other finishes.

    Under this launcher the job runs in its own process, where the job's error handler writes
    FAILED and returns, so the SLURM job ends COMPLETED; the submitting process learns of it when
    it aggregates the sweep and exits 1, as the basic launcher does.
    """
    out = tmp_path / "outputs"
    r = cli(
        "experiments.run",
        *SLURM,
        *TINY,
        "data.max_length=256,8",
        f"output_root={out}",
        f"cache_dir={tmp_path / 'cache'}",
        "name=failing",
        "sparsity=0.02",
        env={"HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 1 and "1 job(s) failed" in r.stderr
    sweep = out / "sweeps" / "failing"
    completed_in_sacct(slurm_job_ids(sweep))  # both jobs ran to their end
    (ok,) = sweep_jobs(sweep).values()
    (bad,) = [p.parent for p in sweep.rglob("FAILED")]
    assert read_metrics(ok)["n_pruned"] > 0 and ok.parent != bad.parent  # two settings, two folders
    assert not (bad / "metrics.json").exists()
    assert "no calibration example fits data.max_length=8" in (bad / "FAILED").read_text()
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["n_points"] == 1 and summary["n_failed"] == 1, summary
    (problem,) = summary["problems"]
    assert problem["job"] == str(bad.relative_to(sweep)) and "data.max_length=8" in problem["error"]
    # the submitting process names the failed job when it aggregates
    assert f"{bad.relative_to(sweep)} failed" in r.stdout + r.stderr


# ---------------------------------------------------------------------------------------
# Preemption / time limit: requeued jobs resume from the cache


# Long generations, one prompt at a time (about 7 s per generation stage on one core, three
# such stages after the scores), leave time to interrupt the job after its scores are cached
# and before it finishes, also after the 5 s (KillWait) that a job keeps running after
# `scontrol requeue`, and again after the second run's first new generation; threads=1 as
# the SLURM job has 1 core. tiny_random decodes ~1k tok/s at batch 1, ~3k at batch 4.
LONG = {"generation.max_new_tokens": "800", "generation.batch_size": "1", "data.n_eval": "8"}
SLOW = [*(a for a in TINY if a.split("=")[0] not in LONG), *(f"{k}={v}" for k, v in LONG.items())]


def squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def test_requeued_job_resumes_without_recomputing_finished_stages(tmp_path):
    """Interrupt one job twice, the two ways SLURM takes a running job away; it resumes each time.

    1. `scontrol requeue` (as PreemptMode=REQUEUE does): SIGTERM, SIGKILL after KillWait,
       and the job starts again from its original submission.
    2. USR2, which SLURM sends before the time limit (and at preemption with --signal):
       submitit calls the launcher's checkpoint(), which resubmits the same task, and
       requeues the job (local_slurm allows max_num_timeout=3 requeues).
    Each new run reads every finished stage back from the cache, and the metrics equal
    those of an uninterrupted run.
    """
    out, cache = tmp_path / "outputs", tmp_path / "cache"
    args = [*SLOW, "threads=1", "name=requeue", "sparsity=0.02"]
    sweep = out / "sweeps" / "requeue"
    generations = lambda: set((cache / "generations").glob("*.json"))  # noqa: E731
    with ThreadPoolExecutor(1) as pool:
        # the uninterrupted reference: basic launcher, own cache, beside the SLURM job
        reference = pool.submit(
            cli,
            "experiments.run",
            "-m",
            *args,
            f"output_root={tmp_path / 'ref'}",
            f"cache_dir={tmp_path / 'ref_cache'}",
        )
        proc = start_cli(tmp_path / "log", *SLURM, *args, f"output_root={out}", f"cache_dir={cache}")
        job = None
        try:
            (job,) = wait_for("the job's submission", lambda: slurm_job_ids(sweep), proc=proc)
            wait_for("the cached scores", lambda: list((cache / "scores").glob("snip-*.safetensors")), proc=proc)
            assert not sweep_jobs(sweep), "the job finished before it could be interrupted: make SLOW slower"
            subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
            wait_for(
                "the job to run again after its requeue",
                lambda: squeue_state(job) == "RUNNING" and any(r["State"] == "REQUEUED" for r in sacct([job], True)),
                timeout=180,
                proc=proc,
            )
            before = generations()  # the first run is gone: new files come from the second
            wait_for("a cache file written by the second run", lambda: generations() - before, timeout=180, proc=proc)
            assert not sweep_jobs(sweep), "the job finished before the second interruption: make SLOW slower"
            subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                if job:
                    subprocess.run(["scancel", job], timeout=30)
        ref = reference.result()
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert proc.returncode == 0, (tmp_path / "log" / "stderr").read_text()[-3000:]

    runs = wait_for(
        "two requeues and a completion in sacct",
        lambda: (rows := sacct([job], every_run=True)) and rows[-1]["State"] == "COMPLETED" and rows,
        timeout=60,
    )
    assert [r["State"] for r in runs] == ["REQUEUED", "REQUEUED", "COMPLETED"], runs
    log = next((sweep / ".submitit").glob(f"{job}/*_log.err")).read_text()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log  # submitit's checkpoint path

    (job_dir,) = sweep_jobs(sweep).values()
    metrics = read_metrics(job_dir)
    assert not (job_dir / "FAILED").exists()
    # everything finished before the interruptions was read back, not recomputed
    for stage in ("calibration_harmful", "calibration_benign", "scores_harm", "scores_preserve", "references_harmful"):
        assert metrics["stages"][stage] == "cached", (stage, metrics["stages"])
    (ref_dir,) = sweep_jobs(tmp_path / "ref" / "sweeps" / "requeue").values()
    assert stable(metrics) == stable(read_metrics(ref_dir))
    assert json.loads((sweep / "summary.json").read_text())["n_points"] == 1


def test_grouped_sweep_is_one_task_per_curve(tmp_path):
    """sparsities=[...]: each model walks its curve in one SLURM task (one model load)."""
    out = tmp_path / "outputs"
    r = cli(
        "experiments.run",
        *SLURM,
        *TINY,
        f"output_root={out}",
        f"cache_dir={tmp_path / 'cache'}",
        "name=grouped",
        "sparsities=[0.0,0.02]",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = out / "sweeps" / "grouped"
    ids = slurm_job_ids(sweep)
    assert len(ids) == 1
    completed_in_sacct(ids)
    jobs = sweep_jobs(sweep)
    assert set(jobs) == {"q=0.0", "q=0.02"}
    assert sorted(read_metrics(j)["stages"]["scores_harm"] for j in jobs.values()) == ["computed", "memory"]
    assert json.loads((sweep / "summary.json").read_text())["n_points"] == 2
