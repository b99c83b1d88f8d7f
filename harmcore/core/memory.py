"""Memory planning for scoring: what a pass needs on each device, before any work starts.

A gradient pass (SNIP, signed SNIP) holds, on the device of each weight:

- the weights themselves;
- a float32 accumulator per scored weight of one pass (all layers, or `layers_per_pass`), each turned
  into its float32 score one matrix at a time;
- the activations autograd keeps for the backward pass: per token and decoder block about
  9 x hidden + 4 x intermediate + 2 x the key/value width values (norms, projections, the gated MLP)
  plus 2 x heads x sequence length (attention scores and probabilities; kernels that keep neither,
  such as flash attention, need less), in the model's dtype. The first pass runs through every block
  whatever `layers_per_pass` is, so fewer layers per pass save accumulators, not activations;
- the logits and their float32 loss (3 x vocabulary per token).

Wanda keeps one float64 sum of squares per input feature and no backward state. The estimate is
checked against the measured peak of a real pass (`tests/unit/test_memory_plan.py`); free memory is
what the device reports (CUDA) or what the machine has available (CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harmcore.core.offload import input_device, offloaded_params, store_device
from harmcore.core.weights import layer_index, prunable_linears
from harmcore.errors import HarmcoreError

GB = 1024**3


@dataclass
class MemoryPlan:
    batch_size: int
    layers_per_pass: int | None  # None: every layer in one pass
    need: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> part -> bytes
    free: dict[str, int] = field(default_factory=dict)  # device -> bytes

    def table(self) -> str:
        """The plan as lines a log shows: per device, each part and the free memory, in GiB."""
        lines = [f"scoring plan: batch_size={self.batch_size}, layers_per_pass={self.layers_per_pass or 'all'}"]
        for dev, parts in self.need.items():
            detail = ", ".join(f"{k} {v / GB:.2f}" for k, v in parts.items() if k != "total")
            lines.append(f"  {dev}: {parts['total'] / GB:.2f} GiB ({detail}) of {self.free.get(dev, 0) / GB:.2f} free")
        return "\n".join(lines)


def _config(model):
    c = model.config
    hidden = c.hidden_size
    heads = getattr(c, "num_attention_heads", 1)
    kv = getattr(c, "num_key_value_heads", heads) or heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    return hidden, getattr(c, "intermediate_size", 4 * hidden), heads, kv * head_dim, c.vocab_size


def estimate(model, n_tokens: int, batch_size: int, layers_per_pass: int | None, method: str) -> dict[str, dict]:
    """device -> {"weights", "accumulators", "activations", "total"} bytes of one scoring pass over
    batches of `batch_size` examples of `n_tokens` tokens (the longest example). On a model with
    offloaded blocks, their weights and accumulators count in host memory ("cpu") and their loaded
    copies on the execution device ("onloaded": the largest offloaded module's, accelerate loading each
    module's own weights for its forward, and scoring each again for its backward)."""
    linears = prunable_linears(model)
    owner = layer_index(model)
    n_layers = max(owner.values()) + 1 if owner else 0
    per_pass = layers_per_pass or n_layers
    need: dict[str, dict[str, int]] = {}

    def add(dev, part, value):
        d = need.setdefault(str(dev), {"weights": 0, "accumulators": 0, "activations": 0})
        d[part] = d.get(part, 0) + int(value)

    off = offloaded_params(model)
    for p in model.parameters():  # an offloaded weight is kept in host memory
        add("cpu" if id(p) in off else p.device, "weights", p.numel() * p.element_size())
    hidden, inter, heads, kv_width, vocab = _config(model)
    first = next(model.parameters())
    entry = input_device(model)
    # An offloaded module's weights are loaded onto the execution device for its forward, and in a gradient
    # pass again for its backward (scoring saves them as references to their store): one module at a time
    held = max((sum(p.numel() * p.element_size() for p in m.parameters(recurse=False) if id(p) in off)
                for m in model.modules()), default=0)  # fmt: skip
    if held:
        add(entry, "onloaded", held)
    tokens = batch_size * n_tokens
    if method == "wanda":
        for m in linears.values():
            add(store_device(m), "accumulators", m.in_features * 8)
        per_token_layer = 2 * hidden + inter  # the forward's live tensors, nothing kept for a backward
        add(entry, "activations", tokens * per_token_layer * first.element_size() * 2)
    else:
        largest = {}
        for n, m in linears.items():  # the scored layers of the heaviest pass: accumulator + score, float32
            largest.setdefault(owner[n] // per_pass, []).append(m)
        heaviest = max(largest.values(), key=lambda ms: sum(m.weight.numel() for m in ms), default=[])
        for m in heaviest:  # one float32 accumulator each; each becomes its score (one matrix at a time)
            add(store_device(m), "accumulators", m.weight.numel() * 4)
        if heaviest:
            big = max(heaviest, key=lambda m: m.weight.numel())
            add(store_device(big), "accumulators", big.weight.numel() * 4)
        per_token_layer = 9 * hidden + 4 * inter + 2 * kv_width + 2 * heads * n_tokens
        add(entry, "activations", tokens * n_layers * per_token_layer * first.element_size())
    add(entry, "activations", tokens * vocab * 4 * 3)  # logits, their float32 copy and the loss
    for d in need.values():
        d["total"] = sum(d.values())
    return need


def free_memory(devices) -> dict[str, int]:
    """device -> bytes free: CUDA's own count, or the machine's available memory for the CPU."""
    out = {}
    for dev in devices:
        d = torch.device(dev)
        if d.type == "cuda":
            out[str(dev)] = int(torch.cuda.mem_get_info(d)[0])
        else:
            import psutil

            out[str(dev)] = int(psutil.virtual_memory().available)
    return out


def plan(model, n_tokens: int, n_examples: int, method: str, batch_size="auto", layers_per_pass="auto",
         free: dict[str, int] | None = None, headroom: float = 0.9) -> MemoryPlan:  # fmt: skip
    """The batch size and layers per pass that fit every device in `headroom` of its free memory (the
    weights already there count as free: they are part of the plan), largest batch first, then all
    layers in one pass before fewer; fixed values are kept. One HarmcoreError when nothing fits."""
    owner = layer_index(model)
    n_layers = max(owner.values()) + 1 if owner else 1
    if free is None:
        resident = estimate(model, 1, 1, None, method)
        free = {d: f + resident[d]["weights"] for d, f in free_memory(resident).items()}
    batches = [batch_size] if batch_size != "auto" else [b for b in (64, 32, 16, 8, 4, 2, 1) if b <= max(n_examples, 1)]
    passes = [layers_per_pass] if layers_per_pass != "auto" else [None, *(k for k in (16, 8, 4, 2, 1) if k < n_layers)]
    if method == "wanda":
        passes = [None]
    for per_pass in passes:
        for b in batches:
            need = estimate(model, n_tokens, int(b), per_pass, method)
            if all(v["total"] <= headroom * free.get(d, 0) for d, v in need.items()):
                return MemoryPlan(int(b), per_pass, need, free)
    need = estimate(model, n_tokens, int(batches[-1]), passes[-1], method)
    dev, worst = max(need.items(), key=lambda kv: kv[1]["total"] - free.get(kv[0], 0))
    raise HarmcoreError(
        f"scoring does not fit: {dev} needs {worst['total'] / GB:.1f} GiB (weights {worst['weights'] / GB:.1f}, "
        f"accumulators {worst['accumulators'] / GB:.1f}, activations {worst['activations'] / GB:.1f}"
        + (f", offloaded weights loaded {worst['onloaded'] / GB:.1f}" if worst.get("onloaded") else "") + ") with "
        f"batch_size={batches[-1]}, layers_per_pass={passes[-1] or 'all'} but has {free.get(dev, 0) / GB:.1f} GiB "
        "free: " + ("" if (batch_size, layers_per_pass) == ("auto", "auto") else
                    "let harmcore choose (scorer.batch_size=auto scorer.layers_per_pass=auto), ")
        + "lower data.max_length, spread the model over more GPUs, or use a smaller dtype"
    )  # fmt: skip
