"""The content-addressed score cache: one safetensors file per score set.

A score file's name is the hash of the metadata that defines it (method, formula, sign,
model and weights fingerprint, data hash, format, code version); the same metadata is
stored inside the file with the sha256 of the scores. `load_scores` refuses a file whose
metadata does not match what the caller expects, and reports one whose content does not
match its digest, misses a matrix or holds a NaN or an inf as stale (to be recomputed).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from harmcore.core.matrices import first_nonfinite, per_matrix
from harmcore.errors import HarmcoreError
from harmcore.files import key_of, load_tensors, save_tensors


def score_path(cache_dir, meta: dict) -> Path:
    return Path(cache_dir) / "scores" / f"{meta['method']}-{key_of(meta)}.safetensors"


class StaleScores(HarmcoreError):
    """A score file that does not keep its promise (digest, names, shapes, finiteness): recompute it."""


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, shape, dtype and bytes (matrices hashed in parallel)."""

    def one(t: torch.Tensor) -> str:
        t = t.detach().to("cpu").contiguous()
        h = hashlib.sha256(f"{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        return h.hexdigest()

    h = hashlib.sha256()
    for name, d in sorted(per_matrix(one, tensors).items()):
        h.update(f"{name}:{d};".encode())
    return h.hexdigest()


def save_scores(scores: dict[str, torch.Tensor], path, meta: dict) -> None:
    """Scores as float32, with their metadata and the digest of their content."""
    scores = {k: v.float() for k, v in scores.items()}
    save_tensors(scores, path, {**meta, "sha256": tensors_digest(scores)})


def load_scores(path, expected: dict | None = None, device: str = "cpu", shapes: dict | None = None):
    """Scores read back and proven: metadata equal to `expected` on every key it names (else a
    HarmcoreError: another computation), and content that matches its digest, holds exactly the
    matrices of `shapes` (name -> shape) and is finite (else StaleScores: recompute it)."""
    try:
        tensors, meta = load_tensors(path, device)
    except HarmcoreError as err:
        raise StaleScores(str(err)) from None
    for k, v in (expected or {}).items():
        if meta.get(k) != str(v):
            raise HarmcoreError(
                f"score file {path} was made with {k}={meta.get(k)!r}, expected {v!r}: delete it or fix the config"
            )
    if "sha256" in meta and meta["sha256"] != tensors_digest(tensors):  # files written before digests: no check
        raise StaleScores(f"score file {path} does not match the digest written with it")
    if shapes is not None:
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if got != {k: tuple(v) for k, v in shapes.items()}:
            raise StaleScores(f"score file {path} does not hold one score per weight of the model's matrices")
    name = first_nonfinite(tensors)
    if name is not None:
        raise StaleScores(f"score file {path} has NaN/inf in {name}")
    return tensors
