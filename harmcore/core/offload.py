"""Where a module's weight values are, on a model accelerate dispatched with offloading.

A module whose weights accelerate offloads (device map "cpu" beside GPUs, or "disk") keeps its
parameters on the meta device; its hook loads the values onto the execution device for each forward
and drops them after. Everything in harmcore that reads or writes weight values goes through
`weight_of`, which returns the stored tensor for such a module and the parameter otherwise.
"""

from __future__ import annotations

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
