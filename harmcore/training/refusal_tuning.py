"""An aligned partner built offline: a model LoRA-tuned to refuse harmful requests.

No aligned/unaligned pair can be downloaded here, so `model.builder=smollm2_refusal_tuned`
(harmcore.models.builders) makes one from the embedded SmolLM2-135M-Instruct: a LoRA
(training.lora.lora_finetune, merged) trained on StrongREJECT requests answered with harmcore's
refusal phrasings, mixed with built-in benign instructions answered by the model itself (so it
keeps answering ordinary requests). The pair
(`smollm2_135m_refusal_tuned` vs `smollm2_135m_instruct`) then runs the pair experiment end to end.

No evaluation prompt is trained on: each source is shuffled as `sources.split` does with
`split_seed` 0 and the first `HELD_OUT` items (every evaluation split of harm_domain=all, or of
the built-in benign set, with data.n_eval <= HELD_OUT and data.split_seed=0) are never used. A
single-category domain splits its own subset, which this does not cover. Calibration prompts
may be trained on (scoring data, not evaluation).
"""

from __future__ import annotations

import logging

from harmcore.data import sources
from harmcore.data.examples import Example, FormatSpec, fitting
from harmcore.data.refusals import refusal_examples
from harmcore.generation.base import Request, Sampling
from harmcore.generation.hf import HFGenerator
from harmcore.training.lora import lora_finetune

log = logging.getLogger("harmcore.training")

HELD_OUT = 64  # leading items of each seed-0 shuffle that are never trained on


def beyond_held_out(items: list, n: int, seed: int = 0) -> list:
    """`n` items that no split of `sources.split(items, n_eval <= HELD_OUT, ..., seed)` evaluates on:
    the calibration part of the split that holds out HELD_OUT (evaluation is taken first)."""
    if len(items) < 2 * HELD_OUT:  # split caps its held-out part at half the items
        raise ValueError(f"{len(items)} items: need at least {2 * HELD_OUT} to hold out {HELD_OUT}")
    return sources.split(items, HELD_OUT, n, seed)[0]


def training_examples(model, tokenizer, n_harmful: int, n_benign: int, response_tokens: int) -> list[Example]:
    """Refusals to harmful requests and the model's own greedy answers to benign instructions."""
    harmful = [p.text for p in beyond_held_out(sources.strongreject(), n_harmful)]
    benign = [p.text for p in beyond_held_out(sources.benign_builtin(), n_benign)]
    answers = HFGenerator(model, tokenizer, "chat", batch_size=16).generate(
        [Request(p) for p in benign], Sampling(max_new_tokens=response_tokens)
    )
    kept = [Example(p, a) for p, a in zip(benign, answers) if a.strip()]
    return refusal_examples(harmful) + kept


def refusal_tune(
    model,
    tokenizer,
    *,
    n_harmful: int = 48,
    n_benign: int = 48,
    response_tokens: int = 48,
    epochs: int = 3,
    r: int = 16,
    alpha: int = 32,
    lr: float = 3e-4,
    batch_size: int = 8,
    seed: int = 0,
):
    """A merged copy of `model` LoRA-tuned to refuse harmful requests (the model is untouched)."""
    fmt = FormatSpec(kind="chat", max_length=256)
    examples = fitting(tokenizer, training_examples(model, tokenizer, n_harmful, n_benign, response_tokens), fmt)
    tuned, history = lora_finetune(
        model, tokenizer, examples, fmt,
        r=r, alpha=alpha, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    log.info("refusal tuning on %d examples: loss per epoch %s", len(examples), [round(h, 3) for h in history])
    return tuned
