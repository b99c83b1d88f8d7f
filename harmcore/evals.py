"""Judge-free measurements on the live model: loss of reference responses."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harmcore.data import Example, FormatSpec, collate, tokenize
from harmcore.scoring import response_losses


@torch.no_grad()
def response_nll(model, tokenizer, examples: Sequence[Example], fmt: FormatSpec, batch_size: int = 8) -> list[float]:
    """Per-example mean negative log-likelihood (nats/token) of each response given its prompt.

    Returned in the order of `examples`. Higher on harmful references after pruning means
    the model has lost the ability to produce them.
    """
    if not examples:
        return []
    toks = tokenize(tokenizer, examples, fmt)
    device = next(model.parameters()).device
    out = [float("nan")] * len(toks)
    order = sorted(range(len(toks)), key=lambda i: len(toks[i].prompt_ids) + len(toks[i].response_ids))
    pad = tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        b = collate([toks[i] for i in idx], pad)
        losses = response_losses(model, b.input_ids.to(device), b.attention_mask.to(device), b.labels.to(device))
        for i, loss in zip(idx, losses.tolist()):
            out[i] = loss
    return out
