"""Failed jobs: the FAILED marker of a job folder, and the jobs of this process that failed.

In a sweep a failed job gets its marker and the others go on; the entry point's exit status is
non-zero at the end when `FAILED_JOBS` is not empty (jobs of other processes, run through
submitit, are added by the sweep's aggregation callback from their markers).
"""

from __future__ import annotations

import traceback
from pathlib import Path

from harmcore.errors import HarmcoreError
from harmcore.files import atomic_write_text

FAILED_JOBS: list[str] = []  # resolved job folders


def write_failed(job_dir: Path, err: BaseException) -> None:
    """The FAILED marker: the error (with its traceback unless it is a user error)."""
    msg = str(err) if isinstance(err, HarmcoreError) else "".join(traceback.format_exception(err))
    atomic_write_text(Path(job_dir) / "FAILED", f"{type(err).__name__}: {msg}\n")


def record_failed(job_dir: Path) -> None:
    path = str(Path(job_dir).resolve())
    if path not in FAILED_JOBS:
        FAILED_JOBS.append(path)
