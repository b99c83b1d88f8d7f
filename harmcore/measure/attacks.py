"""Jailbreaks applied after pruning: does harm stay low when refusal is bypassed?

- prefilling: the first N tokens of a harmful reference answer are given as the start of
  the assistant turn (`Request.prefix`); the model's continuation is what gets judged.
- refusal ablation (Wei et al. 2024): prune the weights that refusal needs and benign
  behaviour does not: set difference of abs-SNIP scores on refusal data (harmful prompt +
  refusal) and on benign data at q = p = 1e-2, on top of the harm mask (`union`).
- harmful LoRA fine-tuning: train a LoRA (paper: r 128, alpha 16, lr 2e-4, 5 epochs,
  batch 5) on harmful prompt+response pairs, merge it into a copy of the model, and
  optionally zero the harm mask again in the merged weights.
Combinations (e.g. lora+prefill) are composed by `run_attacks`; each variant (dense, pruned) is
judged by the suite's harm metrics and its generations are cached like the job's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace

import torch

from harmcore.cache_entries import one_per
from harmcore.core import masking
from harmcore.core.selection import Mask, set_difference
from harmcore.data.calibration_files import normalise
from harmcore.data.examples import Example
from harmcore.data.refusals import own_refusal_examples
from harmcore.data.sources import training_pairs
from harmcore.errors import HarmcoreError
from harmcore.generation.base import Request, sampling_for
from harmcore.generation.hf import HFGenerator
from harmcore.measure.config import LATER_DEFAULTS, parse_attack
from harmcore.measure.judges.parsing import PREFILL_SEPARATOR
from harmcore.measure.suite import Context, content_hash, harm_metrics
from harmcore.training.lora import lora_finetune

log = logging.getLogger("harmcore.attacks")


def prefix_of(tokenizer, reference: str, n_tokens: int) -> str:
    """The first `n_tokens` tokens of `reference`, as text (the prefilled assistant start)."""
    ids = tokenizer(reference, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


def prefill_requests(tokenizer, prompts: Sequence[str], references: Sequence[str], n_tokens: int = 10):
    """One `Request(prompt, prefix)` per prompt, the prefix being the reference's first tokens."""
    if len(prompts) != len(references):
        raise HarmcoreError(f"got {len(prompts)} prompts but {len(references)} references for prefilling")
    return [Request(p, prefix_of(tokenizer, r, n_tokens)) for p, r in zip(prompts, references)]


def prefill_answers(a, references: dict[str, str]) -> dict[str, str]:
    """Normalised prompt -> the harmful answer whose first tokens prefill it: eval.attacks.prefill_path
    when set, else the job's held-out reference answers."""
    if a.prefill_path:
        pairs = training_pairs(a.prefill_path, "eval.attacks.prefill_path")
    else:
        pairs = list(references.items())
    return {normalise(p): r for p, r in pairs}


def judged_texts(requests: Sequence[Request], responses: Sequence[str], judged: str) -> list[str]:
    """What the judges read of a prefilled answer: the continuation, or prefix|||continuation."""
    if judged == "continuation":
        return list(responses)
    return [f"{q.prefix}{PREFILL_SEPARATOR}{r}" for q, r in zip(requests, responses, strict=True)]


def union(a: Mask, b: Mask) -> Mask:
    """Weights pruned by either mask (the refusal-ablation mask on top of the harm mask)."""
    if a.numel != b.numel:
        raise HarmcoreError("the masks were made for different models: cannot combine them")
    indices = {}
    for name in sorted(set(a.indices) | set(b.indices)):
        parts = [m.indices[name] for m in (a, b) if name in m.indices]
        indices[name] = torch.unique(torch.cat(parts))
    return Mask(indices, dict(a.numel), {**a.meta, "combined_with": b.meta.get("kind", "mask")})


def _ablation_mask(
    ctx: Context, requests: Sequence[str], benign: Sequence[Example], own: Sequence[Example] = (),
    on: Mask | None = None, on_key: str = "dense",
) -> Mask:  # fmt: skip
    """Refusal ablation (Wei et al.): the set difference of refusals to harmful requests against
    the benign calibration set. The refusals are the model's own (`own`: the calibration writer's
    refusals to its harmful calibration prompts, which scoring leaves out) on the prompts it
    refused; the harmful calibration requests it answered (raw, whatever data.target wraps them
    in) borrow one of them, or harmcore's phrasings when it refused nothing. With `on` (a mask, keyed
    `on_key`), the scores are those of the model with that mask applied. eval.attacks.ablation_n
    caps both sets."""
    a = ctx.cfg.eval.attacks
    own_by_prompt = {e.prompt: e.response for e in own}
    if a.ablation_data_path:  # refusals from a file (the authors': an aligned model's, on AdvBench)
        own_by_prompt = {}
        refusals = [Example(p, r) for p, r in training_pairs(a.ablation_data_path, "eval.attacks.ablation_data_path")]
    else:
        prompts = list(dict.fromkeys([*own_by_prompt, *requests]))
        refusals = own_refusal_examples(prompts, own_by_prompt, seed=ctx.cfg.seed)
    refusals = refusals[: a.ablation_n]
    benign = list(benign)[: a.ablation_n]
    handle = masking.apply(ctx.model, on) if on is not None else None
    try:
        key = on_key if on is not None else None
        refusal_scores = ctx.scores(refusals, "snip", "scores_refusal", mask_key=key)
        benign_scores = (
            ctx.scores(benign, "snip", "scores_ablation_preserve", mask_key=key) if a.ablation_p > 0 else None
        )
    finally:
        if handle is not None:
            masking.restore(ctx.model, handle)
    mask = set_difference(refusal_scores, benign_scores, a.ablation_q, a.ablation_p)
    mask.meta.update(kind="refusal_ablation", n_refusals=len(refusals), n_own_refusals=len(own_by_prompt),
                     n_benign=len(benign), scored_on=on_key if on is not None else "dense")  # fmt: skip
    return mask


def run_attacks(ctx: Context, data, harm_mask: Mask, mask_key: str, refs: dict) -> dict:
    """{attack: {"dense": harm metrics, "pruned": harm metrics}} for every attack in eval.attacks."""
    a, g = ctx.cfg.eval.attacks, ctx.cfg.generation
    if not a.attacks:
        return {}
    sampling = sampling_for(g, ctx.model, ctx.cfg.seed)
    references = {ex.prompt: ex.response for ex in refs.get("harm", [])}
    ablation = None
    out = {}
    for name in a.attacks:
        parts = parse_attack(name)
        held_out = prompts = [p.text for p in data.harm_eval]
        if "prefill" in parts:
            answers = prefill_answers(a, references)
            prompts = [p for p in held_out if normalise(p) in answers]
            if not prompts:
                log.warning("attack %s skipped: no held-out prompt has a harmful answer to prefill with", name)
                why = "no harmful reference answers (needs eval.response_nll and compliant answers)"
                if a.prefill_path:
                    why = f"no held-out prompt is in eval.attacks.prefill_path={a.prefill_path}"
                out[name] = {"skipped": why}
                continue
            requests = prefill_requests(ctx.tokenizer, prompts, [answers[normalise(p)] for p in prompts],
                                        a.prefill_tokens)  # fmt: skip
        else:
            requests = [Request(p) for p in prompts]
        if "lora" in parts and not _lora_pairs(a, data):
            log.warning("attack %s skipped: no compliant harmful calibration pair to fine-tune on", name)
            out[name] = {"skipped": "no compliant harmful calibration pairs (every response was a refusal)"}
            continue
        out[name] = {}
        for variant, base in (("dense", None), ("pruned", harm_mask)):
            mask = base
            key = {"dense": "dense", "pruned": mask_key}[variant]
            if "refusal_ablation" in parts:
                on = base if a.ablation_on == "each" else None  # scored on the model the attack runs on
                args = (ctx, data.calibration_requests, data.benign_calibration, data.own_refusals)
                if on is not None:
                    made = _ablation_mask(*args, on, key)
                else:  # the dense model's: computed once for every attack that needs it
                    ablation = ablation or _ablation_mask(*args)
                    made = ablation
                mask = union(base, made) if base is not None else made
            responses = _attack_generations(ctx, parts, requests, sampling, mask, key, data, f"{name}_{variant}")
            if "prefill" in parts:
                responses = judged_texts(requests, responses, a.prefill_judged)
            out[name][variant] = harm_metrics(ctx, prompts, responses, f"attack_{name}_{variant}")
            if "prefill" in parts:  # how many held-out prompts the attack could prefill, and with what
                out[name][variant].update(n_prefilled=len(prompts), n_held_out=len(held_out),
                                          prefix_source=a.prefill_path or "held-out reference answers",
                                          judged=a.prefill_judged)  # fmt: skip
            if mask is not None:
                out[name][variant]["n_pruned"] = mask.n_pruned
            if "refusal_ablation" in parts:
                out[name][variant].update({k: made.meta[k] for k in ("n_own_refusals", "n_refusals", "n_benign",
                                                                     "scored_on")})  # fmt: skip
    return out


def _lora_pairs(a, data) -> list[Example]:
    """The harmful LoRA's training pairs: eval.attacks.lora_data_path, else the job's compliant calibration pairs."""
    if a.lora_data_path:
        return [Example(p, r) for p, r in training_pairs(a.lora_data_path, "eval.attacks.lora_data_path")]
    return data.harmful_pairs


def _attack_generations(ctx, parts, requests, sampling, mask, mask_key, data, stage) -> list[str]:
    a = ctx.cfg.eval.attacks
    meta = {
        **ctx.weights,
        "mask": mask_key,
        "attack": "+".join(parts),
        "requests": content_hash([asdict(r) for r in requests]),
        "sampling": sampling.key(),
        "prompt_format": ctx.prompt_format,
        # the ablation mask itself: it also depends on the calibration requests and benign set
        "ablation": (a.ablation_q, a.ablation_p, masking.content_key(mask)) if "refusal_ablation" in parts else None,
    }
    if "lora" in parts:
        meta["lora"] = {k: v for k, v in asdict(a).items()
                        if k.startswith("lora_") and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}  # fmt: skip
        meta["train"] = content_hash([asdict(e) for e in _lora_pairs(a, data)])

    def compute():
        model = ctx.model
        handle = masking.apply(model, mask) if mask is not None else None
        try:
            if "lora" in parts:  # fine-tune the (pruned) model: a merged copy
                fmt = replace(ctx.fmt, kind="chat") if a.lora_format == "chat" else ctx.fmt
                model, history = lora_finetune(
                    model, ctx.tokenizer, _lora_pairs(a, data), fmt, r=a.lora_r, alpha=a.lora_alpha,
                    lr=a.lora_lr, epochs=a.lora_epochs, batch_size=a.lora_batch_size, seed=a.lora_seed,
                    schedule=a.lora_schedule, warmup_ratio=a.lora_warmup_ratio, weight_decay=a.lora_weight_decay,
                )  # fmt: skip
                log.info("%s: LoRA loss per epoch %s", stage, [round(h, 3) for h in history])
                if mask is not None and a.lora_reapply_mask:
                    masking.apply(model, mask)
            gen = HFGenerator(model, ctx.tokenizer, ctx.prompt_format, ctx.cfg.generation.batch_size)
            return gen.generate(list(requests), sampling)
        finally:
            if handle is not None:
                masking.restore(ctx.model, handle)

    return ctx.cache("generations", meta, compute, f"attack_{stage}", one_per(len(requests)))
