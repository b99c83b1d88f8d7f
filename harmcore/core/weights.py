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
    """A cheap hash of the prunable weights: shape, dtype, a strided sample and the bit sum of each matrix.

    Hashing every weight's bytes would copy an 8B model to the CPU; a sample of 4096 values plus
    one exact reduction per matrix (on the weights' own device, `bit_sum`) changes after fine-tuning
    or pruning, and is the same on every device and machine. It is taken on the dense model at load time.
    """
    return _fingerprint(model, b"v2", lambda w: str(bit_sum(w)))


def fingerprint_v1(model: nn.Module) -> str:
    """The fingerprint masks recorded before v2 (the float32 abs-sum of each matrix: the same weights
    give it again on the device and machine that made it), to recognise their weights."""
    return _fingerprint(model, b"", lambda w: str(float(w.abs().sum(dtype=torch.float32))))


def _fingerprint(model: nn.Module, version: bytes, reduce) -> str:
    h = hashlib.sha256(version)
    for name, lin in sorted(prunable_linears(model).items()):
        w = weight_of(lin).detach().reshape(-1)
        sample = w[:: max(1, w.numel() // 4096)].to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(lin.weight.shape)}:{lin.weight.dtype}".encode())
        h.update(sample.numpy().tobytes())
        h.update(reduce(w).encode())
    return h.hexdigest()[:16]


_SAME_WIDTH_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bit_sum(w: torch.Tensor, chunk: int = 1 << 24) -> int:
    """The sum, modulo 2**64, of the values' bit patterns read as integers. Integer sums are exact, so
    it does not depend on the order of summation (device, kernel, threads); any change of one value
    (pruning it to zero included) changes it. Chunked: at most `chunk` int64 temporaries at a time."""
    bits = w.reshape(-1).view(_SAME_WIDTH_INT[w.element_size()])
    total = sum(int(bits[i : i + chunk].to(torch.int64).sum()) for i in range(0, bits.numel(), chunk))
    return total % (1 << 64)
