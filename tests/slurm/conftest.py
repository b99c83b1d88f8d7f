"""The slurm tier: sweeps sent to a real SLURM cluster through harmcore/conf/hydra/launcher/local_slurm.yaml.

These tests (marked `slurm`) need the single-node cluster of scripts/slurm/start.sh, and
they run only when HARMCORE_SLURM=1 is set:

    sudo scripts/slurm/start.sh && HARMCORE_SLURM=1 python -m pytest -q tests/slurm

.ci/run starts the cluster, sets HARMCORE_SLURM=1 for the whole suite and stops the
cluster afterwards. Without HARMCORE_SLURM=1 the slurm tests are deselected when pytest
collects them (the summary line says "N deselected"), so `make test` works on a machine
without SLURM; they are never skipped or xfailed. With HARMCORE_SLURM=1 and no cluster
answering, every slurm test fails with a line saying to run scripts/slurm/start.sh.

Tests in this folder without the marker (test_launch_configs.py: the launcher files
compose and render their sbatch scripts) need no cluster and always run.
"""

import os
import shutil
import subprocess

import pytest

ENABLED = os.environ.get("HARMCORE_SLURM") == "1"


def pytest_collection_modifyitems(config, items):
    if ENABLED:
        return
    deselected = [item for item in items if item.get_closest_marker("slurm")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("slurm")]


def _cluster_problem() -> str | None:
    """None when a controller answers and a node takes jobs; else what is wrong."""
    if shutil.which("sbatch") is None:
        return "the SLURM client commands (sbatch, sacct) are not installed"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        if "is UP" not in ping.stdout:
            said = (ping.stdout + ping.stderr).strip().splitlines()
            return f"slurmctld does not answer ({said[0] if said else 'scontrol ping said nothing'})"
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired as err:
        return f"{err.cmd[0]} timed out"
    states = nodes.stdout.split()
    if not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no node takes jobs (node states: {states or 'none'})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    problem = _cluster_problem()
    if problem:
        pytest.fail(
            f"HARMCORE_SLURM=1 but no usable SLURM cluster: {problem}. "
            "Start the local one with scripts/slurm/start.sh (as root), or unset HARMCORE_SLURM.",
            pytrace=False,
        )
