"""scripts/slurm/start.sh on a running cluster: a quick no-op that leaves every daemon alone.

(stop.sh cannot run in the middle of the suite: .ci/run runs it after the tests and fails
when a slurm, munge or mariadb daemon is left.)
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

PID_DIR = Path(os.environ.get("HARMCORE_SLURM_DIR", "/var/lib/harmcore-slurm")) / "pid"


def pids() -> dict[str, str]:
    return {f.stem: f.read_text().strip() for f in PID_DIR.glob("*.pid")}


def test_start_again_is_a_quick_no_op():
    before = pids()
    assert {"mariadbd", "slurmdbd", "slurmctld", "slurmd"} <= set(before), f"{PID_DIR}: {before}"
    start = time.time()
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "slurm" / "start.sh")], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert time.time() - start < 60
    assert "ready (already running)" in r.stderr and "node" in r.stderr, r.stderr
    assert pids() == before  # nothing restarted
