"""The user's own files: read as text with one clear line when they cannot be, and known by content.

A result must follow the content it came from, not a path: `digest` is the sha256 of a file (or of
every file below a folder, with their relative names), read once per process for an unchanged file,
and the settings hash of a job includes the digest of every file its settings name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from harmcore.errors import HarmcoreError

# (resolved path, size, mtime_ns) -> sha256: a file is read once per process while it is unchanged.
_DIGESTS: dict[tuple, str] = {}


def existing(path: str | Path, key: str, folder: bool = False) -> Path:
    """`path` as a Path when it is a file (or, with `folder`, a folder); else one line naming `key`."""
    p = Path(path).expanduser()
    if not p.exists():
        raise HarmcoreError(f"{key}={path} does not exist: fix the path")
    if folder and not p.is_dir():
        raise HarmcoreError(f"{key}={path} is not a folder: give the folder")
    if not folder and p.is_dir():
        raise HarmcoreError(f"{key}={path} is a folder: give a file")
    return p


def read_text(path: str | Path, key: str) -> str:
    """The UTF-8 text of a user file; one line naming `key` when it is missing, a folder or not UTF-8."""
    p = existing(path, key)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HarmcoreError(f"{key}={path} is not UTF-8 text (byte {err.start}): convert it to UTF-8") from None
    except OSError as err:
        raise HarmcoreError(f"{key}={path} cannot be read ({err.strerror})") from None


def digest(path: str | Path, key: str) -> str:
    """sha256 of a file's content, or of a folder's files (relative name and content, sorted)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise HarmcoreError(f"{key}={path} does not exist: fix the path")
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        h.update(_file_digest(f).encode())
    return h.hexdigest()


def _file_digest(f: Path) -> str:
    st = f.stat()
    key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
