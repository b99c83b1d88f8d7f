"""Run the CLI in a subprocess, as a user would."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Small settings that keep a tiny_random job to a second or two.
TINY = [
    "model=tiny_random",
    "data.n_calibration=4",
    "data.n_eval=4",
    "data.response_tokens=8",
    "generation.max_new_tokens=8",
    "eval.bootstrap=50",
]


def cli(module: str, *args: str, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_metrics(job_dir: Path) -> dict:
    return json.loads((Path(job_dir) / "metrics.json").read_text())


def stable(metrics: dict) -> dict:
    """Metrics without timings and cache statuses (which differ between runs by design)."""
    return {k: v for k, v in metrics.items() if k not in ("seconds", "stages")}
