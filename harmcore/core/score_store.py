"""The content-addressed score cache: one safetensors file per score set.

A score file's name is the hash of the metadata that defines it (method, formula, sign,
model and weights fingerprint, data hash, format, code version); the same metadata is
stored inside the file, and `load_scores` refuses a file whose metadata does not match
what the caller expects, or that holds a NaN or an inf.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harmcore.core.matrices import first_nonfinite
from harmcore.errors import HarmcoreError
from harmcore.files import key_of, load_tensors, save_tensors


def score_path(cache_dir, meta: dict) -> Path:
    return Path(cache_dir) / "scores" / f"{meta['method']}-{key_of(meta)}.safetensors"


def save_scores(scores: dict[str, torch.Tensor], path, meta: dict) -> None:
    save_tensors({k: v.float() for k, v in scores.items()}, path, meta)


def load_scores(path, expected: dict | None = None, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load scores; refuse a file whose metadata differs from `expected` on any key it names."""
    tensors, meta = load_tensors(path, device)
    for k, v in (expected or {}).items():
        if meta.get(k) != str(v):
            raise HarmcoreError(
                f"score file {path} was made with {k}={meta.get(k)!r}, expected {v!r}: delete it or fix the config"
            )
    name = first_nonfinite(tensors)
    if name is not None:
        raise HarmcoreError(f"score file {path} has NaN/inf in {name}: delete it to recompute")
    return tensors
