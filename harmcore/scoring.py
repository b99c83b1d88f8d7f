"""Per-weight attribution scores for every prunable linear, all layers in one pass.

Conventions (larger score = more important to the data's behaviour; scores are stored
exactly as defined here, never negated):

| method        | score of weight w (matrix W, row i = output, column j = input)            |
|---------------|----------------------------------------------------------------------------|
| `signed_snip` | -w * sum_n dL_n/dw   (first-order rise of the data's loss if w is zeroed)  |
| `snip`        | |w| * sum_n |dL_n/dw|   (absolute value taken per example before summing)  |
| `wanda`       | |w_ij| * sqrt(sum_t x_tj^2 / N): x_t = input at response token t (N)       |
| `magnitude`   | |w|                                                                       |
| `random`      | uniform in [0, 1), seeded                                                   |

L_n is example n's causal-LM loss: the mean over its response tokens (prompt tokens are
not scored). Gradients are never materialised in `.grad`: the weights are frozen and a
hook on each linear's output receives dL/d(output) = G during the backward pass, while
the forward hook kept the linear's input X. Then

    sum_n dL_n/dW = G^T X over all tokens of the batch (one matmul, any batch size), and
    dL_n/dW       = G_n^T X_n for one example (a batched matmul; abs, then sum),

so the signed score costs what the ordinary weight gradient costs, and the absolute
score is exact per example without one backward pass per example. Backward stops at the
first scored decoder block: `layers_per_pass=k` scores k blocks per pass (less memory
for accumulators, more passes), the reference code's loop is `layers_per_pass=1`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harmcore.data import FormatSpec, batches, ensure_tokenized
from harmcore.errors import HarmcoreError
from harmcore.matrices import first_nonfinite
from harmcore.models import decoder_layers, layer_index, prunable_linears

GRADIENT_METHODS = ("signed_snip", "snip")
METHODS = ("signed_snip", "snip", "wanda", "magnitude", "random")
DATA_FREE = ("magnitude", "random")

FORMULAS = {
    "signed_snip": "-w * sum_n dL_n/dw",
    "snip": "|w| * sum_n |dL_n/dw|",
    "wanda": "|w_ij| * sqrt(sum_t x_tj^2 / N), t = response-token positions",
    "magnitude": "|w|",
    "random": "uniform[0,1)",
}

# Largest per-example gradient block (elements) materialised at once by the abs-SNIP hook.
_PER_EXAMPLE_BUDGET = 1 << 27


def response_losses(model: nn.Module, input_ids, attention_mask, labels) -> torch.Tensor:
    """Per-example mean causal-LM loss over labelled (response) tokens, shape [B].

    Only positions that predict a labelled token need logits: with a vocabulary of 50k-150k
    the full logit tensor is often the largest activation, so the model is asked for the
    logits of the span [first predicting position, T-1) only (`logits_to_keep`).
    """
    shift_labels = labels[:, 1:]
    labelled = (shift_labels != -100).any(0).nonzero()
    first = int(labelled[0]) if labelled.numel() else 0
    keep = torch.arange(first, labels.shape[1] - 1, device=labels.device)
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
    except TypeError:  # a model whose forward has no logits_to_keep
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, first:-1]
    shift_labels = shift_labels[:, first:]
    tok = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=-100,
        reduction="none",
    ).view(shift_labels.shape)
    n = (shift_labels != -100).sum(1).clamp(min=1)
    return tok.sum(1) / n


def compute(
    model: nn.Module,
    examples: Sequence,
    method: str = "signed_snip",
    *,
    tokenizer=None,
    fmt: FormatSpec = FormatSpec(),
    batch_size: int = 8,
    layers_per_pass: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Score every prunable weight of `model` on `examples`.

    Returns {module name: float32 tensor shaped like its weight, on the weight's device; with
    `layers_per_pass` splitting the model into several passes, each finished pass's scores move
    to CPU memory, so the accelerator holds one pass's accumulators at a time}.
    `examples` may be `Example`s (then `tokenizer` is needed) or `TokenizedExample`s.
    `batch_size` does not change the result (up to float rounding).
    """
    if method not in METHODS:
        raise HarmcoreError(f"unknown scoring method {method!r}: use one of {', '.join(METHODS)}")
    if batch_size < 1:
        raise HarmcoreError(f"batch_size={batch_size}: use a positive integer")
    linears = prunable_linears(model)
    if method == "magnitude":
        return {n: m.weight.detach().abs().float() for n, m in linears.items()}
    if method == "random":
        return {n: _seeded_uniform(m.weight, seed, n) for n, m in linears.items()}
    toks = ensure_tokenized(tokenizer, examples, fmt)
    pad_id = _pad_id(tokenizer)
    if method == "wanda":
        return _wanda(model, linears, toks, batch_size, pad_id, progress)
    return _gradient_scores(model, linears, toks, method, batch_size, layers_per_pass, pad_id, progress)


def _pad_id(tokenizer) -> int:
    if tokenizer is None or tokenizer.pad_token_id is None:
        return 0
    return int(tokenizer.pad_token_id)


def _seeded_uniform(weight: torch.Tensor, seed: int, name: str) -> torch.Tensor:
    # Seed per matrix from (seed, name) so a matrix's scores do not depend on the others.
    sub = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)
    gen = torch.Generator().manual_seed(sub)
    return torch.rand(weight.shape, generator=gen, dtype=torch.float32).to(weight.device)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch")


def _wanda(model, linears, toks, batch_size, pad_id, progress):
    device = next(model.parameters()).device
    sumsq = {n: torch.zeros(m.in_features, dtype=torch.float64, device=device) for n, m in linears.items()}
    state: dict = {"mask": None, "last": (None, None)}

    def make_hook(name):
        def hook(module, args, output):
            x = args[0]
            last_x, last_val = state["last"]
            if last_x is not x:  # q/k/v (and gate/up) share one input: reduce it once
                sel = x[state["mask"]]  # [N_response_tokens, in]
                last_val = sel.double().pow(2).sum(0)
                state["last"] = (x, last_val)
            sumsq[name] += last_val

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in linears.items()]
    n_tokens = 0
    try:
        with torch.no_grad():
            total = -(-len(toks) // batch_size)
            for batch in _progress(batches(toks, batch_size, pad_id), total, "wanda", progress):
                # The norms run over the response tokens: the inputs at the positions of the
                # response tokens themselves (labels are unshifted, -100 on prompt and padding),
                # as in Wei et al.'s reference, not at the positions that predict them.
                mask = batch.labels != -100
                state["mask"] = mask.to(device)
                state["last"] = (None, None)
                n_tokens += int(mask.sum())
                model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
    finally:
        for h in handles:
            h.remove()
    return {
        n: (m.weight.detach().abs().float() * (sumsq[n] / n_tokens).sqrt().float().unsqueeze(0))
        for n, m in linears.items()
    }


def _accumulate_signed(acc: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> None:
    g2 = g.reshape(-1, g.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    acc += (g2.transpose(0, 1) @ x2).float()


def _accumulate_abs(acc: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> None:
    if x.dim() == 2:  # unbatched input: a single example
        x, g = x.unsqueeze(0), g.unsqueeze(0)
    batch = x.shape[0]
    step = max(1, _PER_EXAMPLE_BUDGET // acc.numel())
    for b in range(0, batch, step):
        per_example = torch.bmm(g[b : b + step].transpose(1, 2), x[b : b + step])  # [b, out, in]
        acc += per_example.abs().sum(0).float()


def _gradient_scores(model, linears, toks, method, batch_size, layers_per_pass, pad_id, progress):
    layers = decoder_layers(model)
    owner = layer_index(model)
    per_pass = layers_per_pass or len(layers)
    if per_pass < 1:
        raise HarmcoreError(f"layers_per_pass={layers_per_pass}: use a positive integer or null (all layers)")
    accumulate = _accumulate_signed if method == "signed_snip" else _accumulate_abs
    # abs SNIP needs per-example gradients; examples in one batch stay separate in the
    # batched matmul, so batching is exact for both methods.
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(model.parameters()).device
    scores: dict[str, torch.Tensor] = {}
    n_passes = -(-len(layers) // per_pass)
    try:
        for pass_no, start in enumerate(range(0, len(layers), per_pass)):
            names = [n for n in linears if start <= owner[n] < start + per_pass]
            acc = {n: torch.zeros(linears[n].weight.shape, dtype=torch.float32, device=device) for n in names}
            handles = [_start_grad_at(layers[start])]
            for n in names:
                handles.append(linears[n].register_forward_hook(_grad_hook(acc[n], accumulate)))
            try:
                total = -(-len(toks) // batch_size)
                desc = method if n_passes == 1 else f"{method} pass {pass_no + 1}/{n_passes}"
                for batch in _progress(batches(toks, batch_size, pad_id), total, desc, progress):
                    losses = response_losses(
                        model,
                        batch.input_ids.to(device),
                        batch.attention_mask.to(device),
                        batch.labels.to(device),
                    )
                    losses.sum().backward()
            finally:
                for h in handles:
                    h.remove()
            for n in names:
                w = linears[n].weight.detach()
                score = (-w.float() * acc[n]) if method == "signed_snip" else (w.float().abs() * acc[n])
                scores[n] = score.cpu() if n_passes > 1 else score
                del acc[n], score
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return {n: scores[n] for n in linears}


def _grad_hook(acc: torch.Tensor, accumulate):
    def hook(module, args, output):
        if not output.requires_grad:
            return
        x = args[0].detach()
        output.register_hook(lambda g: accumulate(acc, x, g))

    return hook


def _start_grad_at(block: nn.Module):
    """Make the block's input hidden states a fresh leaf that requires grad.

    With all weights frozen this is where the autograd graph begins, so the backward
    pass never runs through blocks below the first scored one.
    """

    def pre_hook(module, args, kwargs):
        if args:
            hidden = args[0].detach().requires_grad_(True)
            return (hidden, *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = kwargs["hidden_states"].detach().requires_grad_(True)
        return args, kwargs

    return block.register_forward_pre_hook(pre_hook, with_kwargs=True)


def check_finite(scores: dict[str, torch.Tensor], what: str = "scores") -> None:
    """Raise if any score is NaN or infinite (a diverged model or a bad cache file)."""
    name = first_nonfinite(scores)
    if name is not None:
        bad = int((~torch.isfinite(scores[name])).sum())
        raise HarmcoreError(
            f"{what} for {name} contain {bad} NaN/inf values: check the model dtype (use float32) and the data"
        )


__all__ = ["compute", "response_losses", "check_finite", "METHODS", "FORMULAS"]
