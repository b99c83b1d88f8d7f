"""Files written atomically, advisory locks, content addresses and where the cache lives.

Every file is written to a temporary name in the target folder and renamed into place,
so a killed job never leaves a half-written file, and two jobs writing the same entry
at once both end with one intact file. Tensors go to safetensors with string metadata
(never pickle). This module is the ground floor: it imports nothing of harmcore but errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import secrets
import shutil
import socket
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from harmcore.errors import HarmcoreError


def job_settings_file(job_dir: Path) -> Path | None:
    """The settings Hydra composed for a job (.hydra/config.yaml): in its folder or, for a point of a
    job that walks several q, in its parent's; None when neither has them."""
    for where in (Path(job_dir), Path(job_dir).parent):
        if (where / ".hydra" / "config.yaml").is_file():
            return where / ".hydra" / "config.yaml"
    return None


def job_settings(job_dir: Path) -> dict:
    """A job's composed settings as plain YAML data ({} when missing or unreadable)."""
    import yaml

    path = job_settings_file(job_dir)
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    except (OSError, yaml.YAMLError):
        return {}
    return settings if isinstance(settings, dict) else {}


def default_cache_dir() -> Path:
    """Where built models and cache entries live: $HARMCORE_CACHE or ~/.cache/harmcore."""
    return Path(os.environ.get("HARMCORE_CACHE", Path.home() / ".cache" / "harmcore"))


def umask() -> int:
    """The process's file mode creation mask (read without changing it where Linux shows it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give every file and folder below `folder` the mode the umask gives new ones (libraries that
    write through mkstemp leave 0600 behind, which a lab's shared cache cannot read)."""
    mask = umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


HOST = socket.gethostname().replace(".", "-")


def temp_path(path: Path, clean: bool = False) -> Path:
    """A fresh name beside `path` for writing it before the rename (".<name>.<host>.<pid>.<random>.tmp").

    With `clean`, temporary files (or folders) that a killed process of this host left for the same target are
    removed first (a SIGKILL during a score save leaves a model-sized file that nothing else would
    remove); those of live processes, and of other hosts sharing the folder, are left alone.
    """
    for old in path.parent.glob(f".{glob.escape(path.name)}.{HOST}.*.tmp") if clean else ():
        pid = old.name[len(path.name) + len(HOST) + 3 :].split(".", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def alive(pid: int) -> bool:
    """Whether process `pid` of this host is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def disk_errors(path: Path):
    """A full disk or a refused write is one line naming the file, not a traceback."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM):
            raise HarmcoreError(
                f"cannot write {path} ({err.strerror}): free some space or choose another output_root / cache_dir"
            ) from None
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync, rename. The file gets the mode the
    user's umask gives (a lab's shared cache_dir stays readable to the group), unlike mkstemp's 0600."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def file_lock(path):
    """Exclusive advisory lock on `path` (created if needed), held for the `with` block.

    Jobs of a sweep that need the same cache entry wait here: the first computes it,
    the others then find the finished file instead of computing it again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path, rows: list[dict], columns: list[str]) -> None:
    """A CSV with a header row; keys of `rows` outside `columns` are an error (csv.DictWriter)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_write_figure(path, fig, dpi: int = 100) -> None:
    """Save a matplotlib figure as PNG atomically and close it (pyplot figures; a bare Figure needs no closing)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def save_tensors(tensors: dict[str, torch.Tensor], path, meta: dict[str, str]) -> None:
    """safetensors with string metadata, written atomically (with the user's umask, as above)."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path, clean=True)
        try:
            cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
            save_file(cpu, tmp, metadata={k: str(v) for k, v in meta.items()})
            tmp.chmod(0o666 & ~umask())  # safetensors writes 0600
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_meta(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_tensors(path, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        return load_file(str(path), device=device), read_meta(path)
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise HarmcoreError(f"cannot read {path}: {err}; delete the file to recompute it") from err


def key_of(meta: dict) -> str:
    """Content address of a cache entry: a hash of its defining metadata."""
    blob = json.dumps({k: str(v) for k, v in meta.items()}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
