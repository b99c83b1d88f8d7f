"""The per-example loss behind every score and every NLL metric.

L_n, example n's causal-LM loss, is the MEAN over its response tokens of the token
cross-entropy (nats/token); prompt and padding tokens are labelled -100 and not scored.
`response_losses` is the differentiable batch form used by scoring and fine-tuning;
`response_nll` evaluates it without gradients over a dataset, in the dataset's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harmcore.core.offload import input_device
from harmcore.data.examples import Example, FormatSpec, collate, tokenize


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


@torch.no_grad()
def response_nll(model, tokenizer, examples: Sequence[Example], fmt: FormatSpec, batch_size: int = 8) -> list[float]:
    """Per-example mean negative log-likelihood (nats/token) of each response given its prompt.

    Returned in the order of `examples`. Higher on harmful references after pruning means
    the model has lost the ability to produce them.
    """
    if not examples:
        return []
    toks = tokenize(tokenizer, examples, fmt)
    device = input_device(model)
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
