"""Plumbing shared by the commands: composing a config outside @hydra.main, and what a failed job
prints and leaves behind.

A user error (HarmcoreError) is one line and exit status 1, never a traceback; in a sweep a
failed job gets its FAILED marker, the other jobs go on and the exit status is non-zero at the end.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from harmcore.errors import HarmcoreError
from harmcore.run.argv import CONF_DIR
from harmcore.run.failures import record_failed, write_failed
from harmcore.run.hydra_setup import register_schemas, to_run_config

log = logging.getLogger("harmcore.cli")


def compose_run_config(overrides: list[str], dirs: list[Path] = ()):
    """The run Config for command-line `overrides` outside @hydra.main (generate-data, finetune-em);
    `dirs`: the user's config folders (--config-dir). A bad override is one line naming it."""
    register_schemas()
    extra = [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in dirs)}]"] if dirs else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return to_run_config(compose("config", overrides=[*overrides, *extra]))
    except (HydraException, OmegaConfBaseException) as err:
        first = _first_line(err) or type(err).__name__
        cause = _first_line(err.__cause__) if err.__cause__ is not None else ""
        message = f"{first}: {cause}" if cause else first
        raise HarmcoreError(
            f"{message.rstrip('.')}; check it against `harmcore run --cfg job`, which prints every key"
        ) from None
    finally:
        GlobalHydra.instance().clear()


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else ""


def report_job_error(err: BaseException, job_dir) -> None:
    """Inside a Hydra job: one line for a single run (exit 1); in a sweep, record and go on.

    A user error (HarmcoreError) in a single run is one line; any other error in a single
    run propagates with its traceback. In a sweep every failed job gets its FAILED marker
    and the other jobs go on; the sweep's exit status is non-zero at the end.
    """
    if getattr(err, "marks_job_dir", True) and not (Path(job_dir) / "FAILED").exists():
        write_failed(job_dir, err)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        record_failed(job_dir)
        if not isinstance(err, HarmcoreError):
            log.error("job %s failed", job_dir, exc_info=err)
        print(
            f"error: job {job_dir} failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            file=sys.stderr,
        )
        return
    if not isinstance(err, HarmcoreError):
        raise err
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
