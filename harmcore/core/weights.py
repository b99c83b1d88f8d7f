"""The weights harmcore scores and prunes, found by structure, and a fingerprint of them.

Prunable weights are the `nn.Linear` layers inside the decoder blocks (q/k/v/o and
gate/up/down in Llama-style models). They are found structurally, not by name: the
decoder blocks are the largest `nn.ModuleList` of identical modules, so embeddings,
lm_head and norms are never included whatever the architecture calls them.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from harmcore.core.offload import weight_of
from harmcore.errors import HarmcoreError


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks: the ModuleList of same-class modules holding the most parameters."""
    best, best_size = None, 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(m) for m in module}) != 1:
                continue
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = module, size
    if best is None:
        raise HarmcoreError(f"{type(model).__name__} has no list of decoder blocks: it is not a decoder-only LM")
    return best


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Map `named_modules()` name -> nn.Linear for every linear inside the decoder blocks."""
    inside = {id(m) for m in decoder_layers(model).modules()}
    found = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) in inside}
    if not found:
        raise HarmcoreError(f"{type(model).__name__} has no nn.Linear inside its decoder blocks: nothing to prune")
    return found


def layer_index(model: nn.Module) -> dict[str, int]:
    """Prunable linear name -> index of the decoder block that holds it."""
    layers = decoder_layers(model)
    owner = {}
    for i, block in enumerate(layers):
        for m in block.modules():
            owner[id(m)] = i
    return {name: owner[id(m)] for name, m in prunable_linears(model).items()}


def fingerprint(model: nn.Module) -> str:
    """A cheap hash of the prunable weights: shape, dtype, a strided sample and the abs-sum of each matrix.

    Hashing every weight's bytes would copy an 8B model to the CPU; a sample of 4096 values
    plus one reduction per matrix (on the weights' own device) changes after fine-tuning or
    pruning. It is taken on the dense model at load time.
    """
    h = hashlib.sha256()
    for name, lin in sorted(prunable_linears(model).items()):
        w = weight_of(lin).detach().reshape(-1)
        step = max(1, w.numel() // 4096)
        sample = w[::step].to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(lin.weight.shape)}:{lin.weight.dtype}".encode())
        h.update(sample.numpy().tobytes())
        h.update(str(float(w.abs().sum(dtype=torch.float32))).encode())
    return h.hexdigest()[:16]
