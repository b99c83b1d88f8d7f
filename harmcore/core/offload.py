"""Where a module's weight values are, on a model accelerate dispatched with offloading.

A module whose weights accelerate offloads (device map "cpu" beside GPUs, or "disk") keeps its
parameters on the meta device; its hook loads the values onto the execution device for each forward
and drops them after. Everything in harmcore that reads or writes weight values goes through
`weight_of`, which returns the stored tensor for such a module and the parameter otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from harmcore.errors import HarmcoreError


def _weights_map(module: nn.Module):
    hook = getattr(module, "_hf_hook", None)
    return getattr(hook, "weights_map", None) if getattr(hook, "offload", False) else None


def is_offloaded(module: nn.Module) -> bool:
    return module.weight.device.type == "meta" and _weights_map(module) is not None


def weight_of(module: nn.Module, writable: bool = False) -> torch.Tensor:
    """The module's weight values: the parameter's data, or the offloaded copy. `writable`: a tensor
    whose in-place changes the next forward sees (a disk-offloaded matrix is read into host memory
    once and kept there, so that pruning it lasts)."""
    if not writable or module.weight.device.type != "meta":
        return _values(module, "weight")
    stored = _weights_map(module)
    loader, key = getattr(stored, "dataset", stored), getattr(stored, "prefix", "") + "weight"
    held = getattr(loader, "state_dict", loader)  # accelerate's loader looks in its state_dict first
    if key not in held:
        held[key] = _values(module, "weight").contiguous()
    return held[key]


def value_of(model: nn.Module, name: str) -> torch.Tensor:
    """The values of parameter `name` (dotted) of `model`, offloaded or not."""
    owner, _, leaf = name.rpartition(".")
    return _values(model.get_submodule(owner), leaf)


def _values(module: nn.Module, leaf: str) -> torch.Tensor:
    param = getattr(module, leaf)
    if param.device.type != "meta":
        return param.data
    stored = _weights_map(module)
    if stored is None:
        raise HarmcoreError(f"a {type(module).__name__}'s {leaf} is on the meta device with no offloaded copy")
    return stored[leaf]


def store_device(module: nn.Module) -> torch.device:
    """Where the module's weight values live between forwards (host memory for offloaded ones):
    where its accumulators and scores go."""
    return torch.device("cpu") if is_offloaded(module) else module.weight.device


def offload_store(model: nn.Module):
    """The store the hooks of the model's offloaded modules read their weights from (accelerate's
    loader, shared by all of them), or None when nothing is offloaded."""
    maps = (_weights_map(m) for m in model.modules())
    return next((getattr(w, "dataset", w) for w in maps if w is not None), None)


def offloaded_params(model: nn.Module) -> set[int]:
    """ids of the parameters accelerate offloaded (a model built on the meta device has none)."""
    return {id(p) for m in model.modules() if _weights_map(m) is not None
            for p in m.parameters(recurse=False) if p.device.type == "meta"}  # fmt: skip


def input_device(model: nn.Module) -> torch.device:
    """Where a batch goes in: the dispatched model's execution device, else its first real parameter's."""
    hook = getattr(model, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    params = list(model.parameters())
    fallback = params[0].device if params else torch.device("cpu")  # a model built on the meta device
    return next((p.device for p in params if p.device.type != "meta"), fallback)


@dataclass(frozen=True)
class _Reload:
    """A saved tensor that was (a view of) an offloaded module's loaded copy of a parameter."""

    module: nn.Module
    leaf: str
    device: torch.device
    dtype: torch.dtype
    size: torch.Size
    stride: tuple[int, ...]
    offset: int  # into the parameter's own elements


@contextmanager
def reloaded_in_backward(model: nn.Module) -> Iterator[None]:
    """Within this context, autograd saves an offloaded module's loaded weights (which the input
    gradients need) as a reference to their store, and loads them again when the backward reaches
    them: the execution device holds one module's copy at a time instead of every copy until the
    backward. Nothing changes for a model without offloaded weights."""
    owners = {m: [n for n, p in m.named_parameters(recurse=False) if p.device.type == "meta"]
              for m in model.modules() if _weights_map(m) is not None}  # fmt: skip
    owners = {m: leaves for m, leaves in owners.items() if leaves}
    if not owners:
        yield
        return
    running: list[nn.Module] = []  # the offloaded modules whose forward is under way, innermost last

    def pack(t: torch.Tensor):
        if not running or t.layout != torch.strided:
            return t
        module = running[-1]
        for leaf in owners[module]:
            p = getattr(module, leaf)
            same = p.device == t.device and p.dtype == t.dtype and p.is_contiguous()  # offsets in p's elements
            if same and p.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
                offset = t.storage_offset() - p.storage_offset()
                return _Reload(module, leaf, t.device, t.dtype, t.size(), t.stride(), offset)
        return t

    def unpack(saved):
        if not isinstance(saved, _Reload):
            return saved
        values = _values(saved.module, saved.leaf).to(device=saved.device, dtype=saved.dtype).contiguous()
        return values.as_strided(saved.size, saved.stride, values.storage_offset() + saved.offset)

    def enter(module, args) -> None:
        running.append(module)

    def leave(module, args, output) -> None:  # returns None: the output stays as it is
        running.pop()

    handles = [h for m in owners for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        for h in handles:
            h.remove()
