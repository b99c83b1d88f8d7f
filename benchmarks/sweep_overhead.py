"""The cost of the sweep itself, and the peak memory of a whole job.

Runs one grouped job (`sparsities=[...]`: one model load, one scoring, N points) in a fresh
process with an empty cache (the built model folders are linked in, so no model is rebuilt)
and splits its wall time with the per-stage seconds every point records in metrics.json:

- `scoring_s`: harm + preserve scores (computed once for the whole curve);
- `generation_s`: every generate call (calibration responses, reference answers, dense and
  pruned evaluation generations);
- `nll_s`: the judge-free reference losses (evaluation compute, like generation);
- `load_model_s`: reading the model;
- `overhead_s`: everything else: interpreter and framework start, config composition,
  selection, mask apply/restore, file writes, the sweep report.
`overhead_fraction` = overhead_s / wall_s (target <= 0.05). `peak_rss_gb` is the job
process's maximum resident set (ru_maxrss of the child), i.e. the whole job's peak memory.

    python -m benchmarks.sweep_overhead [--model smollm2_135m_instruct] [--points 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit
from harmcore.files import default_cache_dir

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = {
    "scoring_s": ("scores_",),
    "generation_s": ("calibration_", "references_", "generate_", "recognition_"),
    "nll_s": ("nll_",),
    "load_model_s": ("load_model",),
    "select_s": ("select",),
}


def stage_seconds(job_dir: Path) -> tuple[dict[str, float], int]:
    """Seconds per category summed over every point of the job, and the number of points."""
    sums = dict.fromkeys(CATEGORIES, 0.0)
    points = sorted(job_dir.rglob("metrics.json"))
    for path in points:
        seconds = json.loads(path.read_text())["seconds"]
        for stage, s in seconds.items():
            for cat, prefixes in CATEGORIES.items():
                if stage.startswith(prefixes):
                    sums[cat] += s
    return sums, len(points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2_135m_instruct", help="a conf/model option")
    ap.add_argument("--points", type=int, default=4, help="sparsity points (the first is q = 0)")
    ap.add_argument("--examples", type=int, default=16, help="calibration and evaluation examples each")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    grid = [0.0] + [10.0 ** (-6 + i) for i in range(args.points - 1)]  # 0, 1e-6, 1e-5, ...: the paper's tiny q
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "out"
        cache.mkdir()
        models = default_cache_dir() / "models"
        if models.is_dir():
            (cache / "models").symlink_to(models)  # built models are reused; scores, generations are not
        overrides = [
            f"model={args.model}", f"cache_dir={cache}", f"hydra.run.dir={out}",
            f"sparsities=[{','.join(f'{q:g}' for q in grid)}]", f"data.n_calibration={args.examples}",
            f"data.n_eval={args.examples}", f"data.response_tokens={args.new_tokens}",
            f"generation.max_new_tokens={args.new_tokens}",
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.run", *overrides], cwd=ROOT, env=env, check=True,
                       capture_output=True)  # fmt: skip
        wall = time.perf_counter() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        sums, n_points = stage_seconds(out)
    r = {"model": args.model, "points": n_points, "grid": grid, "examples": args.examples,
         "new_tokens": args.new_tokens, "wall_s": wall, **sums}  # fmt: skip
    r["overhead_s"] = wall - sum(v for k, v in sums.items() if k != "select_s")
    r["overhead_fraction"] = r["overhead_s"] / wall
    r["select_fraction"] = sums["select_s"] / wall
    r["peak_rss_gb"] = peak_kb / 1024**2
    emit(r, args.json, digits=4)


if __name__ == "__main__":
    main()
