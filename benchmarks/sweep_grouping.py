"""Sweep granularity: one process per sparsity point vs one process walking all points.

Runs the same N-point sweep three ways, each with a fresh cache so every run scores once:
- `per_job_processes`: -m hydra/launcher=submitit_local sparsity=... (one process per point,
  like one SLURM array task per point: each loads the model, the first computes the scores),
- `basic_launcher`: -m sparsity=... (Hydra's basic launcher: all jobs in one process),
- `grouped`: sparsities=[...] (one job walks the curve: one SLURM task per model/domain/scorer).
Wall times are reported with their ratio to `grouped`, measured in the same run.

    python -m benchmarks.sweep_grouping [--model tiny_random] [--points 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.n_calibration=8", "data.n_eval=8", "data.response_tokens=16", "generation.max_new_tokens=16"]


def run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny_random")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    grid = [0.0] + [round(10 ** (-5 + i), 6) for i in range(args.points - 1)]
    common = [f"model={args.model}", *SMALL]
    results = {"model": args.model, "points": grid}
    with tempfile.TemporaryDirectory() as tmp:
        # Build the model (and its cache entry for the embedded model) outside the timings.
        run([*common, f"output_root={tmp}/warm", f"cache_dir={tmp}/warm_cache", "sparsity=0"])
        modes = {
            "per_job_processes": [
                "-m",
                "hydra/launcher=submitit_local",
                "hydra.launcher.timeout_min=30",
                "sparsity=" + ",".join(map(str, grid)),
            ],
            "basic_launcher": ["-m", "sparsity=" + ",".join(map(str, grid))],
            "grouped": [f"sparsities=[{','.join(map(str, grid))}]"],
        }
        for name, extra in modes.items():
            # Hydra wants -m before a launcher override: the mode's own arguments go first.
            results[f"{name}_s"] = round(
                run([*extra, *common, f"output_root={tmp}/{name}", f"cache_dir={tmp}/{name}_cache", f"name={name}"]), 2
            )
    results["ratio_vs_grouped"] = {
        k[:-2]: round(results[k] / results["grouped_s"], 2) for k in list(results) if k.endswith("_s")
    }
    emit(results, args.json)


if __name__ == "__main__":
    main()
