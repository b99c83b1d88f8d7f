"""What a cache entry promises, and the check that it keeps the promise when it is read back.

A JSON entry is written with the sha256 of its value; read back it must decode, match that digest
and have the shape its reader asked for (`one_per`: one value per prompt; `with_keys`: these keys). An
entry that fails is recomputed, never used: results must not rest on fewer rows than asked for, or on
rows edited since they were written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

ENTRY = "harmcore_cache_entry"  # marks an entry written with its digest (older entries are the bare value)
Check = Callable[[object], "str | None"]  # None when the value is what was asked for, else what is wrong


def value_digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_entry(path: Path, expect: Check | None) -> tuple[object, str | None]:
    """(value, None) for a sound entry; (None, what is wrong) for one to recompute."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"cannot be read ({type(err).__name__})"
    if isinstance(data, dict) and data.get(ENTRY) == 1:
        value = data.get("value")
        if data.get("sha256") != value_digest(value):
            return None, "does not match the digest written with it"
    else:
        value = data  # written before entries carried a digest: only its shape can be checked
    problem = expect(value) if expect else None
    return (value, None) if problem is None else (None, problem)


def one_per(n: int, kind: type | tuple = str) -> Check:
    """Check: a list of exactly `n` values of `kind` (one per prompt asked for)."""

    def check(value) -> str | None:
        if not isinstance(value, list):
            return f"is a {type(value).__name__}, not a list"
        if len(value) != n:
            return f"holds {len(value)} rows where {n} were asked for"
        bad = next((v for v in value if not isinstance(v, kind) or isinstance(v, bool)), None)
        return None if bad is None else f"holds {bad!r}"[:120] + f", not {getattr(kind, '__name__', kind)}"

    return check


def with_keys(*keys: str) -> Check:
    """Check: a dict holding at least `keys`."""

    def check(value) -> str | None:
        if not isinstance(value, dict):
            return f"is a {type(value).__name__}, not an object"
        missing = [k for k in keys if k not in value]
        return f"lacks {missing}" if missing else None

    return check
