"""The reference method of the paper's code, kept as a baseline and a cross-check.

For each decoder block in turn, gradients are enabled on that block's linear weights
only and the whole calibration set is run through the model, reading `.grad` after each
backward. Signed SNIP uses batches (the gradient of a sum is the sum of gradients); abs
SNIP runs one example per backward so that the absolute value is taken per example.
This costs one full pass over the data per block: `harmcore.scoring.compute` gets the
same numbers from one pass. Used by the tests and `benchmarks/`, not by the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from harmcore.core.losses import response_losses
from harmcore.core.weights import decoder_layers, layer_index, prunable_linears
from harmcore.data.examples import FormatSpec, batches, ensure_tokenized


def layerwise_snip(
    model: nn.Module,
    examples: Sequence,
    method: str = "signed_snip",
    *,
    tokenizer=None,
    fmt: FormatSpec = FormatSpec(),
    batch_size: int = 8,
) -> dict[str, torch.Tensor]:
    """Signed or absolute SNIP scores computed one decoder block at a time via `.grad`."""
    if method not in ("signed_snip", "snip"):
        raise ValueError(f"layerwise_snip computes signed_snip or snip, not {method!r}")
    toks = ensure_tokenized(tokenizer, examples, fmt)
    pad_id = 0 if tokenizer is None or tokenizer.pad_token_id is None else tokenizer.pad_token_id
    linears = prunable_linears(model)
    owner = layer_index(model)
    device = next(model.parameters()).device
    flags = {p: p.requires_grad for p in model.parameters()}
    step = batch_size if method == "signed_snip" else 1
    scores = {}
    try:
        for layer in range(len(decoder_layers(model))):
            names = [n for n in linears if owner[n] == layer]
            for p in model.parameters():
                p.requires_grad_(False)
            acc = {}
            for n in names:
                linears[n].weight.requires_grad_(True)
                acc[n] = torch.zeros(linears[n].weight.shape, dtype=torch.float64, device=device)
            for batch in batches(toks, step, pad_id):
                model.zero_grad(set_to_none=True)
                loss = response_losses(
                    model, batch.input_ids.to(device), batch.attention_mask.to(device), batch.labels.to(device)
                ).sum()
                loss.backward()
                for n in names:
                    grad = linears[n].weight.grad.double()
                    acc[n] += grad if method == "signed_snip" else grad.abs()
            for n in names:
                w = linears[n].weight.detach().double()
                s = -w * acc[n] if method == "signed_snip" else w.abs() * acc[n]
                scores[n] = s.float()
                linears[n].weight.grad = None
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return {n: scores[n] for n in linears}
