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
from harmcore.core.selection import _global_topk
from harmcore.errors import HarmcoreError
from harmcore.files import key_of, load_tensors, read_meta, save_tensors


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


# ---------------------------------------------------------------------------------------
# The compact store: what selection reads, not every score

FILL = float(torch.finfo(torch.float32).min)  # below every stored score in a reconstruction


def top_entries(scores: dict[str, torch.Tensor], frac: float, ranking: str) -> dict[str, torch.Tensor]:
    """name -> flat indices of the entries that every selection of at most `frac` of a ranking unit
    can pick: per matrix, per row or over all matrices (`ranking`), the top floor(frac x unit size)
    AND every entry tied with the last of them. Any top-k of k <= that size, whatever its tie rule
    among equal values, is among them."""

    def at_least(s: torch.Tensor, t) -> torch.Tensor:
        return torch.nonzero(s.reshape(-1) >= t).flatten()

    out = {}
    if ranking == "global":
        k = int(frac * sum(s.numel() for s in scores.values()))
        chosen = _global_topk(scores, k)
        values = [scores[n].reshape(-1)[i] for n, i in chosen.items() if i.numel()]
        if not values:
            return {n: torch.empty(0, dtype=torch.long) for n in scores}
        t = min(float(v.min()) for v in values)
        return {n: at_least(s, t) for n, s in scores.items()}
    for n, s in scores.items():
        if ranking == "per_row":
            rows = s.reshape(s.shape[0], -1)
            k = int(frac * rows.shape[1])
            if k <= 0:
                out[n] = torch.empty(0, dtype=torch.long)
                continue
            kth = torch.topk(rows, min(k, rows.shape[1]), dim=1).values[:, -1:]
            out[n] = torch.nonzero((rows >= kth).reshape(-1)).flatten()
        else:
            k = int(frac * s.numel())
            out[n] = (
                at_least(s, torch.topk(s.reshape(-1), k).values.min()) if k > 0 else torch.empty(0, dtype=torch.long)
            )
    return out


def save_top(scores: dict[str, torch.Tensor], path, meta: dict, frac: float, ranking: str) -> None:
    """The entries `top_entries` keeps (indices and float32 values per matrix, and every matrix's
    shape), with `meta`, the fraction and ranking they serve, and the digest of what is stored."""
    tensors = {}
    for n, idx in top_entries(scores, frac, ranking).items():
        tensors[f"idx/{n}"] = idx.to(torch.long).contiguous()
        tensors[f"val/{n}"] = scores[n].reshape(-1)[idx].float().contiguous()
        tensors[f"shape/{n}"] = torch.tensor(list(scores[n].shape), dtype=torch.long)
    save_tensors(tensors, path, {**meta, "store": "top", "fraction": repr(float(frac)), "ranking": ranking,
                                 "sha256": tensors_digest(tensors)})  # fmt: skip


def top_fraction(path) -> tuple[float, str] | None:
    """(fraction, ranking) a compact score file serves, or None when it cannot be read."""
    try:
        meta = read_meta(path)  # the header only, not the tensors
        return float(meta["fraction"]), meta["ranking"]
    except Exception:  # unreadable or not a compact file
        return None


def load_top(path, expected: dict, shapes: dict, frac: float, ranking: str) -> dict[str, torch.Tensor]:
    """Dense score tensors rebuilt from a compact file: the stored entries at their places, FILL
    elsewhere. Every selection of at most the file's fraction with its ranking reads the same
    weights from them as from the full scores. StaleScores when the file serves less (a smaller
    fraction, another ranking) or does not keep its promise (digest, matrices, shapes)."""
    try:
        tensors, meta = load_tensors(path)
    except HarmcoreError as err:
        raise StaleScores(str(err)) from None
    for k, v in expected.items():
        if meta.get(k) != str(v):
            raise HarmcoreError(f"score file {path} was made with {k}={meta.get(k)!r}, expected {v!r}")
    if meta.get("ranking") != ranking or float(meta.get("fraction", -1)) < frac:
        raise StaleScores(
            f"{path} keeps the top {meta.get('fraction')} ({meta.get('ranking')} ranking): "
            f"the top {frac} ({ranking}) needs the full scores again"
        )
    if meta.get("sha256") != tensors_digest(tensors):
        raise StaleScores(f"score file {path} does not match the digest written with it")
    names = {k.split("/", 1)[1] for k in tensors if k.startswith("shape/")}
    if {n: tuple(int(x) for x in tensors[f"shape/{n}"]) for n in names} != {n: tuple(v) for n, v in shapes.items()}:
        raise StaleScores(f"score file {path} does not hold the model's matrices")
    out = {}
    for n in shapes:
        dense = torch.full(tuple(shapes[n]), FILL, dtype=torch.float32)
        dense.view(-1)[tensors[f"idx/{n}"]] = tensors[f"val/{n}"]
        out[n] = dense
    name = first_nonfinite(out)
    if name is not None:
        raise StaleScores(f"score file {path} has NaN/inf in {name}")
    return out
