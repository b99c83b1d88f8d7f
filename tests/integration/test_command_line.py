"""The command line as a researcher types it: flags anywhere, one folder per set of settings, typos
caught before anything runs, files a lab can share, and the `harmcore` command from any folder."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT, TINY, cli, read_metrics

USED_BY = ["model=llama3_instruct", "scorer=wanda", "-m", "sparsity=0.001,0.01"]


def jobs(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.rglob("metrics.json"))


def test_the_used_by_command_as_typed_offline_is_one_line_and_writes_nothing(tmp_path):
    r = cli("experiments.run", *USED_BY, f"output_root={tmp_path / 'out'}", env={"HF_HUB_OFFLINE": "1"})
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("error: cannot fetch model 'meta-llama/Llama-3.1-8B-Instruct'")
    assert "set model.path=/local/dir" in lines[0]
    assert not (tmp_path / "out").exists()


def test_m_after_the_overrides_runs_the_sweep(tmp_path):
    out = tmp_path / "out"
    r = cli("experiments.run", *TINY, "-m", "sparsity=0,0.02", f"output_root={out}", "name=late_m")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checked the 2 job(s) of the sweep" in r.stderr
    assert sorted(read_metrics(j)["sparsity_requested"] for j in jobs(out / "sweeps" / "late_m")) == [0.0, 0.02]


def test_every_setting_keeps_its_own_folder_and_an_identical_rerun_resumes(tmp_path):
    out, common = tmp_path / "out", [*TINY, f"cache_dir={tmp_path / 'cache'}"]
    r = cli("experiments.run", *common, "-m", "data.split_seed=0,1", "sparsity=0,0.02", f"output_root={out}", "name=s")
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = jobs(out / "sweeps" / "s")
    assert len(sweep) == 4 and len({j.parent for j in sweep}) == 2  # two settings, two points each
    seeds = {read_metrics(j)["config_hash"]: j for j in sweep}
    assert len(seeds) == 4
    for n in (4, 5):  # a single run with another data size is another folder, not a replacement
        r = cli("experiments.run", *common, f"data.n_calibration={n}", "sparsity=0.02", f"output_root={out}")
        assert r.returncode == 0, r.stderr[-3000:]
    runs = jobs(out / "runs")
    assert len(runs) == 2 and {read_metrics(j)["n_calibration_harmful"] for j in runs} <= {3, 4, 5}
    before = {j: (j / "metrics.json").stat().st_mtime_ns for j in sweep + runs}
    r = cli("experiments.run", *common, "-m", "data.split_seed=0,1", "sparsity=0,0.02", f"output_root={out}", "name=s")
    assert r.returncode == 0 and r.stderr.count("is already finished") == 4, r.stderr[-3000:]
    assert {j: (j / "metrics.json").stat().st_mtime_ns for j in sweep + runs} == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["sparsty=0.01"], "unknown key 'sparsty' in 'sparsty=0.01'. Did you mean 'sparsity'?"),
        (["+sparsty=0.01"], "unknown key 'sparsty' in '+sparsty=0.01'. Did you mean 'sparsity'?"),
        (["+sparsity=0.01"], "sparsity is a key of the config: set it with sparsity=0.01"),
        (["data.n_calibraton=3"], "Did you mean 'data.n_calibration'?"),
        (["-m", "sparsity=0,0.01", "pruning.ranking=per_matrix,globl"], "pruning.ranking=globl: use per_matrix"),
        (["sparsity=0,0.5,1.5", "-m"], "sparsity=1.5 is outside [0, 1)"),
        (["em.judge_templates.aligned=a.txt"], "To append to your config use +em.judge_templates.aligned=a.txt"),
    ],
)
def test_typos_and_bad_values_stop_before_any_job(tmp_path, args, message):
    out = tmp_path / "out"
    r = cli("experiments.run", *TINY, *args, f"output_root={out}")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0], r.stderr[-2000:]
    assert not out.exists()  # nothing launched, nothing written


def test_files_follow_the_users_umask(tmp_path):
    """A shared cache_dir (and the outputs) are readable and writable by the group under umask 002."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    script = "import os, sys, runpy; os.umask(0o002); sys.argv = sys.argv[1:]; "
    script += "runpy.run_module(sys.argv[0], run_name='__main__')"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "experiments.run",
            *TINY,
            "sparsity=0.02",
            f"output_root={out}",
            f"cache_dir={cache}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    written = [p for p in [*out.rglob("*"), *cache.rglob("*")] if p.is_file() and not p.name.endswith(".lock")]
    assert any(p.suffix == ".safetensors" for p in written) and any(p.name == "metrics.json" for p in written)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert all(m & 0o060 == 0o060 for m in modes.values()), {
        str(p): oct(m) for p, m in modes.items() if m & 0o060 != 0o060
    }


def test_the_harmcore_command_runs_from_any_folder(tmp_path):
    exe = Path(sys.executable).with_name("harmcore")
    assert exe.exists(), "the harmcore console script is installed with the package"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([str(exe), "run", "--help"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: harmcore run") and "smollm2_135m_instruct" in r.stdout
    r = subprocess.run(
        [str(exe), "run", *TINY, "-m", "sparsity=0.02", "name=here", "output_root=out"],
        cwd=elsewhere,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (job,) = jobs(elsewhere / "out" / "sweeps" / "here")
    assert read_metrics(job)["n_pruned"] > 0 and (elsewhere / "out" / "sweeps" / "here" / "curve.csv").exists()


@pytest.mark.parametrize("command", ["run", "generate-data", "finetune-em", "aggregate", "export", "serve"])
def test_help_answers_for_every_command(command):
    r = subprocess.run(
        [sys.executable, "-m", "harmcore", command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.startswith(f"usage: harmcore {command}"), r.stderr
    modules = {"run": "run", "generate-data": "generate_data", "finetune-em": "finetune_em", "aggregate": "aggregate"}
    if command in modules:  # the checkout's entry points are the same commands
        r = cli(f"experiments.{modules[command]}", "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: harmcore {command}")


def test_a_sweep_without_q0_takes_its_dense_point_from_the_jobs_baseline(tmp_path):
    out, cache = tmp_path / "out", f"cache_dir={tmp_path / 'cache'}"
    summaries = {}
    for name, grid in (("with_dense", "0,0.02,0.05"), ("without", "0.02,0.05")):
        r = cli("experiments.run", *TINY, cache, "-m", f"sparsity={grid}", f"output_root={out}", f"name={name}")
        assert r.returncode == 0, r.stderr[-3000:]
        (curve,) = json.loads((out / "sweeps" / name / "summary.json").read_text())["curves"]
        summaries[name] = curve
    without, with_dense = summaries["without"], summaries["with_dense"]
    assert "skipped" not in without and without["dense_point"] == "the jobs' dense baseline"
    # the same numbers as with a q = 0 job: the baseline is that job's measurement
    for measure in ("compliance", "harm_likelihood"):
        assert without["by_measure"][measure] == with_dense["by_measure"][measure], measure
