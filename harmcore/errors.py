"""User-facing errors: one line that names the bad value and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarmcoreError(Exception):
    """An error caused by user input or environment, reported without a traceback."""

    # False for errors about a folder that belongs to another run: no FAILED marker is written there
    marks_job_dir: bool = True


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """ " Did you mean 'x'?" for the valid name closest to `name`, or "" when none is close."""
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> HarmcoreError:
    """The one-line error for a name that is not among `valid`, with the closest valid name:
    "unknown scorer 'wandaa'. Did you mean 'wanda'? Valid: magnitude, random, ..."."""
    valid = sorted(valid)
    return HarmcoreError(f"unknown {kind} {name!r}.{did_you_mean(name, valid)} Valid: {', '.join(valid)}")
