"""Zero the masked weights in place and put them back bit-exactly.

`apply` gathers the original values of the masked entries before zeroing them, so
`restore` writes back exactly what was there (no reload, no copy of the whole model).
A mask whose meta names an `alpha` (`with_options`) scales its weights instead of zeroing
them: a number multiplies them, "mean" sets them to the mean of the selected weights of their
matrix (the authors' `--alpha` options).
A mask refers to weights by module name and flat index, so it re-applies to any
checkpoint of the same architecture (e.g. the model after fine-tuning).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from harmcore.core.offload import weight_of
from harmcore.core.selection import Mask
from harmcore.core.weights import prunable_linears
from harmcore.errors import HarmcoreError
from harmcore.files import load_tensors, save_tensors


@dataclass
class PruneHandle:
    """The original values of the pruned entries, to undo `apply`."""

    values: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]


def _flat_weight(module: nn.Linear) -> torch.Tensor:
    w = weight_of(module, writable=True)  # an offloaded matrix's stored copy
    if not w.is_contiguous():
        raise HarmcoreError("pruning needs contiguous weight tensors; call model.contiguous() first")
    return w.view(-1)


def _check_mask(model: nn.Module, mask: Mask) -> dict[str, nn.Linear]:
    linears = prunable_linears(model)
    for name, idx in mask.indices.items():
        if name not in linears:
            raise HarmcoreError(f"mask names {name}, which is not a prunable linear of this model")
        numel = linears[name].weight.numel()
        if mask.numel.get(name, numel) != numel:
            raise HarmcoreError(f"mask was made for a {mask.numel[name]}-weight {name}; this model's has {numel}")
        if idx.numel() and int(idx.max()) >= numel:
            raise HarmcoreError(f"mask index {int(idx.max())} is out of range for {name}")
    return linears


def alpha_of(mask: Mask) -> str | None:
    """The mask's `alpha` ("mean" or a number, as text), or None: its weights are zeroed."""
    alpha = mask.meta.get("alpha")
    return None if alpha in (None, "", "None") else alpha


def check_alpha(alpha) -> str | None:
    """`alpha` as a mask stores it; one HarmcoreError for a value that is neither a number nor "mean"."""
    if alpha is None:
        return None
    if str(alpha) == "mean":
        return "mean"
    try:
        return repr(float(alpha))
    except ValueError:
        raise HarmcoreError(f"pruning.alpha={alpha}: use null (zero the weights), a number or mean") from None


def with_options(mask: Mask, alpha=None, layers=None) -> Mask:
    """The mask as the pruning options ask: only the decoder layers in `layers` (None: all) and the
    `alpha` that `apply` uses (None: zero the weights)."""
    indices = mask.indices
    if layers is not None:
        keep = {int(i) for i in layers}
        indices = {n: i for n, i in indices.items() if _layer_of(n) in keep}
    meta = dict(mask.meta)
    if layers is not None:
        meta["layers"] = ",".join(str(i) for i in sorted({int(i) for i in layers}))
    if check_alpha(alpha) is not None:
        meta["alpha"] = check_alpha(alpha)
    return Mask(indices, dict(mask.numel), meta)


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a == "layers" and b.isdigit():
            return int(b)
    return None


@torch.no_grad()
def apply(model: nn.Module, mask: Mask) -> PruneHandle:
    """Set the masked weights to zero (or scale them: the mask's alpha); return what `restore` needs
    to undo it."""
    linears = _check_mask(model, mask)
    alpha = alpha_of(mask)
    values, indices = {}, {}
    for name, idx in mask.indices.items():
        flat = _flat_weight(linears[name])
        idx = idx.to(flat.device)
        values[name] = flat.index_select(0, idx)  # a copy
        indices[name] = idx
        if alpha is None:
            flat.index_fill_(0, idx, 0)
        elif alpha == "mean":
            if idx.numel():
                flat.index_fill_(0, idx, values[name].float().mean().to(flat.dtype))
        else:
            flat.index_copy_(0, idx, (values[name].float() * float(alpha)).to(flat.dtype))
    return PruneHandle(values, indices)


@torch.no_grad()
def restore(model: nn.Module, handle: PruneHandle) -> None:
    """Write back the values `apply` removed (bit-exact)."""
    linears = prunable_linears(model)
    for name, idx in handle.indices.items():
        _flat_weight(linears[name]).index_copy_(0, idx, handle.values[name])


def content_key(mask: Mask) -> str:
    """A short hash of which weights `mask` prunes ("dense" for none): names cached results of masked models."""
    if mask.n_pruned == 0:
        return "dense"
    h = hashlib.sha256()
    if alpha_of(mask) is not None:  # scaled, not zeroed: other weights (zeroing masks keep their key)
        h.update(f"alpha={alpha_of(mask)};".encode())
    for name in sorted(mask.indices):
        h.update(name.encode())
        h.update(mask.indices[name].numpy().tobytes())
    return h.hexdigest()[:16]


def save(mask: Mask, path, made_on: dict[str, str] | None = None) -> None:
    """Save a mask as sparse indices in safetensors (atomic). `made_on` (model id, weights
    fingerprint) goes into its metadata, so that whoever applies it later can check the model."""
    tensors = {f"idx/{n}": i.to(torch.long).contiguous() for n, i in mask.indices.items()}
    tensors.update({f"numel/{n}": torch.tensor([v], dtype=torch.long) for n, v in mask.numel.items()})
    save_tensors(tensors, path, {**mask.meta, **(made_on or {}), "kind": "mask"})


def load(path) -> Mask:
    """Load a mask saved by `save`."""
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "mask":
        raise HarmcoreError(f"{path} is not a harmcore mask file")
    indices = {k[4:]: v for k, v in tensors.items() if k.startswith("idx/")}
    numel = {k[6:]: int(v[0]) for k, v in tensors.items() if k.startswith("numel/")}
    meta.pop("kind")
    return Mask(indices, numel, meta)
