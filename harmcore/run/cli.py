"""Command-line plumbing shared by the entry points in experiments/.

`check_argv` catches the common mistakes before Hydra starts (an unknown config option,
an unwritable output folder), so the user sees one line with the valid names and the
closest match instead of a stack trace. `main_guard` turns harmcore's user errors into
that same one-line form with a non-zero exit.
"""

from __future__ import annotations

import functools
import logging
import sys
import tempfile
from pathlib import Path

from harmcore.errors import HarmcoreError, unknown_name
from harmcore.run.config import register_schemas, to_run_config
from harmcore.run.failures import FAILED_JOBS, record_failed, write_failed
from harmcore.run.options import CONF_DIR, options

log = logging.getLogger("harmcore.cli")

# Plain keys whose values name options of a config group.
OPTION_KEYS = {"eval_domain": "harm_domain", "intersect_domains": "harm_domain"}


def check_argv(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra"}
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = key if key in groups else OPTION_KEYS.get(key)
        if group:
            valid = options(group, conf_dir)
            for v in value.strip("[]").split(","):
                if v and v != "null" and v not in valid:
                    raise unknown_name(key, v, valid)
        if key == "output_root":
            _check_writable(Path(value))


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise HarmcoreError(
            f"output_root={path} is not writable ({err.strerror}): choose a folder you can write to"
        ) from None


def compose_run_config(overrides: list[str]):
    """The run Config for command-line `overrides` outside @hydra.main (experiments.finetune_em,
    experiments.generate_data); a bad override is one line naming it, not a traceback."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_schemas()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return to_run_config(compose("config", overrides=overrides))
    except (HydraException, OmegaConfBaseException) as err:
        first = _first_line(err) or type(err).__name__
        cause = _first_line(err.__cause__) if err.__cause__ is not None else ""
        message = f"{first}: {cause}" if cause else first
        raise HarmcoreError(
            f"{message.rstrip('.')}; check it against `python -m experiments.run --cfg job`, which prints every key"
        ) from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else ""


def report_job_error(err: BaseException, job_dir) -> None:
    """Inside a Hydra job: one line for a single run (exit 1); in a sweep, record and go on.

    A user error (HarmcoreError) in a single run is one line; any other error in a single
    run propagates with its traceback. In a sweep every failed job gets its FAILED marker
    and the other jobs go on; the sweep's exit status is non-zero at the end.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

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


def main_guard(fn):
    """Run an entry point; print harmcore errors as one line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            check_argv(sys.argv[1:])
            result = fn(*args, **kwargs)
        except HarmcoreError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        if FAILED_JOBS:
            print(f"error: {len(FAILED_JOBS)} job(s) failed; see FAILED in each job folder", file=sys.stderr)
            sys.exit(1)
        return result

    return wrapper
