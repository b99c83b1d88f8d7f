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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from harmcore.core.losses import response_losses
from harmcore.core.matrices import first_nonfinite
from harmcore.core.offload import input_device, reloaded_in_backward, store_device, weight_of
from harmcore.core.weights import decoder_layers, layer_index, prunable_linears
from harmcore.data.examples import FormatSpec, TokenizedExample, batches, ensure_tokenized
from harmcore.errors import HarmcoreError, unknown_name

# Largest per-example gradient block (elements) materialised at once by the abs-SNIP hook.
_PER_EXAMPLE_BUDGET = 1 << 27


@dataclass(frozen=True)
class ScoringRun:
    """What a scorer gets: the model, its prunable linears and, for data scorers, the examples."""

    model: nn.Module
    linears: dict[str, nn.Linear]
    examples: list[TokenizedExample]  # empty for data-free scorers
    batch_size: int = 8
    layers_per_pass: int | None = None  # gradient scorers: decoder blocks per backward pass
    pad_id: int = 0
    seed: int = 0  # random scorer
    progress: bool = False


@dataclass(frozen=True)
class Scorer:
    name: str
    formula: str  # the formula as text; part of every score cache key, so changing it recomputes
    fn: Callable[[ScoringRun], dict[str, torch.Tensor]]
    needs_data: bool = True  # False: the scores depend on the weights only (no examples, no data hash)


SCORERS: dict[str, Scorer] = {}


def scorer(name: str, formula: str, needs_data: bool = True):
    """Register `fn(run: ScoringRun) -> {name: scores}` as scoring method `name` (then add conf/scorer/<name>.yaml)."""

    def register(fn):
        SCORERS[name] = Scorer(name, formula, fn, needs_data)
        return fn

    return register


def get(name: str) -> Scorer:
    if name not in SCORERS:
        raise unknown_name("scoring method", name, SCORERS)
    return SCORERS[name]


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
    """Score every prunable weight of `model` on `examples` with scoring method `method`.

    Returns {module name: float32 tensor shaped like its weight, on the weight's device (host memory
    for a weight accelerate offloaded); with
    `layers_per_pass` splitting the model into several passes, each finished pass's scores move
    to CPU memory, so the accelerator holds one pass's accumulators at a time}.
    `examples` may be `Example`s (then `tokenizer` is needed) or `TokenizedExample`s.
    `batch_size` does not change the result (up to float rounding).
    """
    s = get(method)
    if batch_size < 1:
        raise HarmcoreError(f"batch_size={batch_size}: use a positive integer")
    if layers_per_pass is not None and layers_per_pass < 1:
        raise HarmcoreError(f"layers_per_pass={layers_per_pass}: use a positive integer or null (all layers)")
    toks = ensure_tokenized(tokenizer, examples, fmt) if s.needs_data else []
    linears = prunable_linears(model)
    return s.fn(ScoringRun(model, linears, toks, batch_size, layers_per_pass, _pad_id(tokenizer), seed, progress))


@scorer("magnitude", "|w|", needs_data=False)
def magnitude(run: ScoringRun) -> dict[str, torch.Tensor]:
    return {n: weight_of(m).detach().abs().float() for n, m in run.linears.items()}


@scorer("random", "uniform[0,1)", needs_data=False)
def random_scores(run: ScoringRun) -> dict[str, torch.Tensor]:
    return {n: _seeded_uniform(m, run.seed, n) for n, m in run.linears.items()}


@scorer("signed_snip", "-w * sum_n dL_n/dw")
def signed_snip(run: ScoringRun) -> dict[str, torch.Tensor]:
    return _gradient_scores(run, "signed_snip", _accumulate_signed, lambda w, acc: -w * acc)


@scorer("snip", "|w| * sum_n |dL_n/dw|")
def snip(run: ScoringRun) -> dict[str, torch.Tensor]:
    return _gradient_scores(run, "snip", _accumulate_abs, lambda w, acc: w.abs() * acc)


@scorer("wanda", "|w_ij| * sqrt(sum_t x_tj^2 / N), t = response-token positions")
def wanda(run: ScoringRun) -> dict[str, torch.Tensor]:
    return _wanda(run.model, run.linears, run.examples, run.batch_size, run.pad_id, run.progress)


def _pad_id(tokenizer) -> int:
    if tokenizer is None or tokenizer.pad_token_id is None:
        return 0
    return int(tokenizer.pad_token_id)


def _seeded_uniform(module: nn.Linear, seed: int, name: str) -> torch.Tensor:
    # Seed per matrix from (seed, name) so a matrix's scores do not depend on the others.
    sub = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)
    gen = torch.Generator().manual_seed(sub)
    return torch.rand(module.weight.shape, generator=gen, dtype=torch.float32).to(store_device(module))


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch")


def _wanda(model, linears, toks, batch_size, pad_id, progress):
    device = input_device(model)  # where the inputs go (a dispatched model moves them on)
    sumsq = {n: torch.zeros(m.in_features, dtype=torch.float64, device=store_device(m)) for n, m in linears.items()}
    state: dict = {"mask": None, "last": (None, None)}

    def make_hook(name):
        def hook(module, args, output):
            x = args[0]
            last_x, last_val = state["last"]
            if last_x is not x:  # q/k/v (and gate/up) share one input: reduce it once
                sel = x[state["mask"].to(x.device)]  # [N_response_tokens, in]
                last_val = sel.double().pow(2).sum(0)
                state["last"] = (x, last_val)
            sumsq[name] += last_val.to(sumsq[name].device)

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
        n: (weight_of(m).detach().abs().float() * (sumsq[n] / n_tokens).sqrt().float().unsqueeze(0))
        for n, m in linears.items()
    }


def _accumulate_signed(acc: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> None:
    g2 = g.reshape(-1, g.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    acc += (g2.transpose(0, 1) @ x2).float().to(acc.device)


def _accumulate_abs(acc: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> None:
    if x.dim() == 2:  # unbatched input: a single example
        x, g = x.unsqueeze(0), g.unsqueeze(0)
    batch = x.shape[0]
    step = max(1, _PER_EXAMPLE_BUDGET // acc.numel())
    for b in range(0, batch, step):
        per_example = torch.bmm(g[b : b + step].transpose(1, 2), x[b : b + step])  # [b, out, in]
        acc += per_example.abs().sum(0).float().to(acc.device)


def _gradient_scores(run: ScoringRun, desc: str, accumulate, combine) -> dict[str, torch.Tensor]:
    """sum_n dL_n/dW accumulated by `accumulate` (signed: one matmul; abs: per example), then
    `combine(w, acc)` in float32. Backward starts at the first scored block of each pass."""
    model, linears = run.model, run.linears
    layers = decoder_layers(model)
    owner = layer_index(model)
    per_pass = run.layers_per_pass or len(layers)
    # abs SNIP needs per-example gradients; examples in one batch stay separate in the
    # batched matmul, so batching is exact for both methods.
    # by name: accelerate swaps an offloaded module's parameter objects at every forward (and a tied
    # weight, one object before, may then be two)
    flags = {n: p.requires_grad for n, p in model.named_parameters(remove_duplicate=False)}
    for p in model.parameters():
        p.requires_grad_(False)
    device = input_device(model)
    scores: dict[str, torch.Tensor] = {}
    n_passes = -(-len(layers) // per_pass)
    try:
        for pass_no, start in enumerate(range(0, len(layers), per_pass)):
            names = [n for n in linears if start <= owner[n] < start + per_pass]
            # each accumulator beside its weight: on a model spread over devices, where its gradients arrive;
            # an offloaded weight's in host memory
            acc = {n: torch.zeros(linears[n].weight.shape, dtype=torch.float32, device=store_device(linears[n]))
                   for n in names}  # fmt: skip
            handles = [_start_grad_at(layers[start])]
            for n in names:
                handles.append(linears[n].register_forward_hook(_grad_hook(acc[n], accumulate)))
            try:
                total = -(-len(run.examples) // run.batch_size)
                label = desc if n_passes == 1 else f"{desc} pass {pass_no + 1}/{n_passes}"
                with reloaded_in_backward(model):  # an offloaded weight's copy is not kept until the backward
                    for batch in _progress(
                        batches(run.examples, run.batch_size, run.pad_id), total, label, run.progress
                    ):
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
                score = combine(weight_of(linears[n]).detach().float(), acc[n])
                scores[n] = score.cpu() if n_passes > 1 else score
                del acc[n], score
    finally:
        for n, p in model.named_parameters(remove_duplicate=False):
            p.requires_grad_(flags[n])
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
