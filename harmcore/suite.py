"""The measurement suite of one job: extra harm judges, utility evals and jailbreak attacks.

`harmcore.pipeline` calls these with a `Context` (the live model and a cache function);
each part runs only when `eval.<part>` enables it (conf/eval/full.yaml enables all of
them; the endpoint judge also needs `eval.endpoint.base_url`). Every harm metric comes
with a percentile bootstrap CI over prompts; judgements, generations and utility results
are cached like the pipeline's other stages, so a rerun repeats nothing finished.

metrics.json keys added (per dense `baseline` and pruned model):
  strongreject[_ci]            mean StrongREJECT classifier score in [0, 1]
  <endpoint judge>[_ci]        mean rubric score in [0, 1] / 0-100 score; NaN judgements are
  <endpoint judge>_parse_failed  left out of the mean and counted here
  utility                      {"perplexity", "perplexity_tokens", "lm_eval": {task: {acc,...}}, "qa_accuracy",
                                "usefulness"/"coherence"[_ci, _parse_failed] of answers to benign instructions}
and once per job:
  attacks: {name: {"dense": harm metrics, "pruned": harm metrics}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harmcore import attacks, masking, utility
from harmcore.data import Example, FormatSpec
from harmcore.eval_config import parse_attack
from harmcore.generation import HFGenerator, Request, Sampling
from harmcore.judges.refusal import RefusalKeywordJudge
from harmcore.selection import Mask, set_difference
from harmcore.stats import bootstrap_ci

log = logging.getLogger("harmcore.suite")

# Loaded judge models, one per process (a sweep's jobs share it).
_JUDGES: dict[str, object] = {}


@dataclass
class Context:
    """What the suite needs from the pipeline (no Hydra, no pipeline import)."""

    model: object
    tokenizer: object
    prompt_format: str
    cfg: object  # harmcore.config.Config
    weights: dict  # model id + dense fingerprint: the cache identity of the loaded weights
    cache: Callable  # cache(kind, meta, compute, stage) -> JSON value (pipeline.cached_json bound to a job)
    scores: Callable  # scores(examples, method, stage) -> score tensors (pipeline.scores_cached)
    cache_dir: Path
    fmt: FormatSpec


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


_TEMPLATE_DIGESTS: dict[tuple, str] = {}


def _template_digest(path: str | None, sha256: str | None) -> str:
    """The StrongREJECT template's sha256 (judgements are cached under it); the URL is read once per process."""
    from harmcore.judges.strongreject import template_digest

    key = (
        path,
        sha256,
        Path(path).expanduser().stat().st_mtime_ns if path and Path(path).expanduser().is_file() else None,
    )
    if key not in _TEMPLATE_DIGESTS:
        _TEMPLATE_DIGESTS[key] = template_digest(path, sha256)
    return _TEMPLATE_DIGESTS[key]


def _mean_ci(values: Sequence[float], ctx: Context) -> tuple[float | None, list]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, [None, None]
    lo, hi = bootstrap_ci(finite, ctx.cfg.eval.bootstrap, seed=ctx.cfg.seed)
    return sum(finite) / len(finite), [lo, hi]


# ---------------------------------------------------------------------------------------
# Judges


def _strongreject_judge(ctx: Context):
    from harmcore.judges.strongreject import StrongRejectClassifier, load_judge_model, load_template

    c = ctx.cfg.eval.strongreject
    key = json.dumps(asdict(c), sort_keys=True)
    if key not in _JUDGES:
        template = load_template(c.template_path, c.template_sha256)
        model, tok = load_judge_model(
            c.model, c.adapter, revision=c.revision, dtype=c.dtype, device=c.device,
            trust_remote_code=c.trust_remote_code,
        )  # fmt: skip
        _JUDGES.clear()
        _JUDGES[key] = StrongRejectClassifier(model, tok, template, c.max_response_length, c.batch_size)
    return _JUDGES[key]


def extra_judges(ctx: Context, prompts: Sequence[str], responses: Sequence[str], stage: str) -> tuple[dict, dict]:
    """StrongREJECT classifier and endpoint judges: (metrics, per-row scores by judge name)."""
    metrics, rows = {}, {}
    ev = ctx.cfg.eval
    pairs = {"prompts": _hash(list(prompts)), "responses": _hash(list(responses))}
    if ev.strongreject.enabled:
        c = ev.strongreject
        meta = {
            "judge": "strongreject_finetuned",
            "model": c.model,
            "adapter": c.adapter,
            "revision": c.revision,
            "template_sha256": _template_digest(c.template_path, c.template_sha256),
            "max_len": c.max_response_length,
            "dtype": c.dtype,
            **pairs,
        }

        def compute():
            return [r.score for r in _strongreject_judge(ctx).score(list(prompts), list(responses))]

        scores = ctx.cache("judgements", meta, compute, f"strongreject_{stage}")
        metrics["strongreject"], metrics["strongreject_ci"] = _mean_ci(scores, ctx)
        rows["strongreject"] = scores
    if ev.endpoint.enabled and ev.endpoint.base_url:
        from harmcore.judges.endpoint import build_judges

        for name, judge in build_judges(ev.endpoint, ctx.cache_dir).items():
            scores = [r.score for r in judge.score(list(prompts), list(responses))]
            metrics[name], metrics[f"{name}_ci"] = _mean_ci(scores, ctx)
            metrics[f"{name}_parse_failed"] = sum(1 for s in scores if not math.isfinite(s))
            rows[name] = [s if math.isfinite(s) else None for s in scores]
    return metrics, rows


def harm_metrics(ctx: Context, prompts: Sequence[str], responses: Sequence[str], stage: str) -> dict:
    """Keyword compliance (harmfulness) and refusal rates plus the extra judges, each with a CI."""
    headline = RefusalKeywordJudge(ctx.cfg.eval.refusal_mode)
    complied = [0.0 if headline.is_refusal(r)[0] else 1.0 for r in responses]
    corrected = RefusalKeywordJudge("corrected")
    metrics = {"n": len(responses)}
    metrics["harmfulness"], metrics["harmfulness_ci"] = _mean_ci(complied, ctx)
    metrics["refusal_rate"], metrics["refusal_rate_ci"] = _mean_ci(
        [1.0 if corrected.is_refusal(r)[0] else 0.0 for r in responses], ctx
    )
    metrics.update(extra_judges(ctx, prompts, responses, stage)[0])
    return metrics


# ---------------------------------------------------------------------------------------
# Utility


def utility_metrics(ctx: Context, mask_key: str, tag: str, benign_prompts: Sequence[str] = ()) -> dict:
    """Perplexity, lm-eval and open-QA accuracy of the model as it is now, and the endpoint
    judges' scores of its answers to `benign_prompts` (held-out benign instructions)."""
    u = ctx.cfg.eval.utility
    out: dict = {}
    base = {**ctx.weights, "mask": mask_key}
    if u.benign_judges and ctx.cfg.eval.endpoint.base_url and benign_prompts:
        out.update(_benign_judgements(ctx, base, list(benign_prompts), tag))
    if u.perplexity_source:
        meta = {**base, "what": "perplexity", "source": u.perplexity_source, "seqlen": u.seqlen,
                "stride": u.stride, "max_tokens": u.max_tokens}  # fmt: skip

        def ppl():
            text = utility.corpus_text(u.perplexity_source)
            return utility.perplexity(ctx.model, ctx.tokenizer, text, u.seqlen, u.stride, u.max_tokens)

        result = ctx.cache("utility", meta, ppl, f"perplexity_{tag}")
        out["perplexity"], out["perplexity_tokens"] = result["perplexity"], result["tokens"]
    if u.lm_eval_tasks:
        meta = {**base, "what": "lm_eval", "tasks": sorted(u.lm_eval_tasks), "limit": u.lm_eval_limit,
                "include": u.lm_eval_include_path}  # fmt: skip

        def lm_eval():
            return utility.lm_eval_accuracy(
                ctx.model, ctx.tokenizer, u.lm_eval_tasks, u.lm_eval_include_path, u.lm_eval_limit,
                u.lm_eval_batch_size, u.lm_eval_include_defaults,
            )  # fmt: skip

        out["lm_eval"] = ctx.cache("utility", meta, lm_eval, f"lm_eval_{tag}")
    if u.qa_source:
        meta = {**base, "what": "qa", "source": u.qa_source, "limit": u.qa_limit, "tokens": u.qa_max_new_tokens,
                "prompt_format": ctx.prompt_format}  # fmt: skip

        def qa():
            gen = HFGenerator(ctx.model, ctx.tokenizer, ctx.prompt_format, ctx.cfg.generation.batch_size)
            items = utility.qa_items(u.qa_source, u.qa_limit)
            result = utility.qa_accuracy(gen, items, u.qa_max_new_tokens)
            return {"accuracy": result["accuracy"], "correct": [r["correct"] for r in result["rows"]]}

        result = ctx.cache("utility", meta, qa, f"qa_{tag}")
        out["qa_accuracy"] = result["accuracy"]
        out["qa_accuracy_ci"] = list(bootstrap_ci([float(c) for c in result["correct"]], ctx.cfg.eval.bootstrap))
    return out


def _benign_judgements(ctx: Context, base: dict, prompts: list[str], tag: str) -> dict:
    """usefulness / coherence (0-100, with CIs) of the model's greedy answers to benign instructions."""
    from harmcore.judges.endpoint import build_judges

    g = ctx.cfg.generation
    sampling = Sampling(g.max_new_tokens, 0.0, 1.0, ctx.cfg.seed)
    meta = {**base, "what": "benign_answers", "prompts": _hash(prompts), "prompt_format": ctx.prompt_format,
            "sampling": json.dumps(asdict(sampling), sort_keys=True)}  # fmt: skip
    gen = HFGenerator(ctx.model, ctx.tokenizer, ctx.prompt_format, g.batch_size)
    answers = ctx.cache("generations", meta, lambda: gen.generate([Request(p) for p in prompts], sampling),
                        f"benign_answers_{tag}")  # fmt: skip
    e = replace(ctx.cfg.eval.endpoint, judges=list(ctx.cfg.eval.utility.benign_judges))
    out: dict = {"n_benign_judged": len(prompts)}
    for name, judge in build_judges(e, ctx.cache_dir).items():
        scores = [r.score for r in judge.score(prompts, answers)]
        out[name], out[f"{name}_ci"] = _mean_ci(scores, ctx)
        out[f"{name}_parse_failed"] = sum(1 for v in scores if not math.isfinite(v))
    return out


# ---------------------------------------------------------------------------------------
# Recognition and explanation


def recognition_metrics(ctx: Context, mask_key: str, tag: str) -> dict:
    """Detection (yes/no) and explanation (1-5, endpoint judge) of the model as it is now."""
    from harmcore import recognition

    rc, g = ctx.cfg.eval.recognition, ctx.cfg.generation
    items = recognition.load_items(rc.path)
    gen = HFGenerator(ctx.model, ctx.tokenizer, ctx.prompt_format, g.batch_size)
    base = {**ctx.weights, "mask": mask_key, "prompt_format": ctx.prompt_format}

    def answers(template, prompts, tokens, stage):
        sampling = Sampling(tokens, 0.0, 1.0, ctx.cfg.seed)
        meta = {**base, "what": stage, "template": template, "prompts": _hash(list(prompts)), "tokens": tokens}
        requests = [Request(template.format(prompt=p)) for p in prompts]
        return ctx.cache("generations", meta, lambda: gen.generate(requests, sampling), f"{stage}_{tag}")

    detected = answers(recognition.DETECT, [p for p, _ in items], rc.detection_tokens, "recognition_detect")
    verdicts = [recognition.classify(a, rc.first_words) for a in detected]
    out = {"detection": recognition.detection_metrics([h for _, h in items], verdicts, ctx.cfg.eval.bootstrap,
                                                      ctx.cfg.seed)}  # fmt: skip
    e = ctx.cfg.eval.endpoint
    if rc.explanation and e.base_url:
        from harmcore.judges.endpoint import client_from

        harmful = [p for p, h in items if h]
        texts = answers(recognition.EXPLAIN, harmful, rc.explanation_tokens, "recognition_explain")
        refused = [RefusalKeywordJudge("corrected").is_refusal(t)[0] for t in texts]
        msgs = [[{"role": "user", "content": recognition.EXPLANATION_JUDGE.format(prompt=p, response=t)}]
                for p, t in zip(harmful, texts)]  # fmt: skip
        scores = [recognition.parse_1_5(o["text"]) for o in client_from(e, ctx.cache_dir).complete(msgs)]
        out["explanation"] = recognition.explanation_metrics(scores, refused, ctx.cfg.eval.bootstrap, ctx.cfg.seed)
    return out


# ---------------------------------------------------------------------------------------
# Attacks


def _ablation_mask(
    ctx: Context, requests: Sequence[str], benign: Sequence[Example], own: Sequence[Example] = ()
) -> Mask:
    """Refusal ablation (Wei et al.): the set difference of refusals to harmful requests against
    the benign calibration set. The refusals are the model's own (`own`: the calibration writer's
    refusals to its harmful calibration prompts, which scoring leaves out) on the prompts it
    refused; the harmful calibration requests it answered (raw, whatever data.target wraps them
    in) borrow one of them, or harmcore's phrasings when it refused nothing."""
    a = ctx.cfg.eval.attacks
    own_by_prompt = {e.prompt: e.response for e in own}
    prompts = list(dict.fromkeys([*own_by_prompt, *requests]))
    refusals = attacks.own_refusal_examples(prompts, own_by_prompt, seed=ctx.cfg.seed)
    refusal_scores = ctx.scores(refusals, "snip", "scores_refusal")
    benign_scores = ctx.scores(list(benign), "snip", "scores_ablation_preserve") if a.ablation_p > 0 else None
    mask = set_difference(refusal_scores, benign_scores, a.ablation_q, a.ablation_p)
    mask.meta.update(kind="refusal_ablation", n_refusals=len(refusals), n_own_refusals=len(own_by_prompt))
    return mask


def run_attacks(ctx: Context, data, harm_mask: Mask, mask_key: str, refs: dict) -> dict:
    """{attack: {"dense": harm metrics, "pruned": harm metrics}} for every attack in eval.attacks."""
    a, g = ctx.cfg.eval.attacks, ctx.cfg.generation
    if not a.attacks:
        return {}
    sampling = Sampling(g.max_new_tokens, g.temperature, g.top_p, ctx.cfg.seed)
    references = {ex.prompt: ex.response for ex in refs.get("harm", [])}
    ablation = None
    out = {}
    for name in a.attacks:
        parts = parse_attack(name)
        prompts = [p.text for p in data.harm_eval]
        if "prefill" in parts:
            prompts = [p for p in prompts if p in references]
            if not prompts:
                log.warning("attack %s skipped: no held-out prompt has a harmful reference answer", name)
                out[name] = {"skipped": "no harmful reference answers (needs eval.response_nll and compliant answers)"}
                continue
            requests = attacks.prefill_requests(ctx.tokenizer, prompts, [references[p] for p in prompts],
                                                a.prefill_tokens)  # fmt: skip
        else:
            requests = [Request(p) for p in prompts]
        if "lora" in parts and not data.harmful_pairs:
            log.warning("attack %s skipped: no compliant harmful calibration pair to fine-tune on", name)
            out[name] = {"skipped": "no compliant harmful calibration pairs (every response was a refusal)"}
            continue
        if "refusal_ablation" in parts and ablation is None:
            ablation = _ablation_mask(ctx, data.calibration_requests, data.benign_calibration, data.own_refusals)
        out[name] = {}
        for variant, base in (("dense", None), ("pruned", harm_mask)):
            mask = base
            if "refusal_ablation" in parts:
                mask = attacks.union(base, ablation) if base is not None else ablation
            key = {"dense": "dense", "pruned": mask_key}[variant]
            responses = _attack_generations(ctx, parts, requests, sampling, mask, key, data, f"{name}_{variant}")
            out[name][variant] = harm_metrics(ctx, prompts, responses, f"attack_{name}_{variant}")
            if mask is not None:
                out[name][variant]["n_pruned"] = mask.n_pruned
            if "refusal_ablation" in parts:
                out[name][variant]["n_own_refusals"] = ablation.meta["n_own_refusals"]
    return out


def _attack_generations(ctx, parts, requests, sampling, mask, mask_key, data, stage) -> list[str]:
    a = ctx.cfg.eval.attacks
    meta = {
        **ctx.weights,
        "mask": mask_key,
        "attack": "+".join(parts),
        "requests": _hash([asdict(r) for r in requests]),
        "sampling": asdict(sampling),
        "prompt_format": ctx.prompt_format,
        # the ablation mask itself: it also depends on the calibration requests and benign set
        "ablation": (a.ablation_q, a.ablation_p, masking.content_key(mask)) if "refusal_ablation" in parts else None,
    }
    if "lora" in parts:
        meta["lora"] = {k: v for k, v in asdict(a).items() if k.startswith("lora_")}
        meta["train"] = _hash([asdict(e) for e in data.harmful_pairs])

    def compute():
        model = ctx.model
        handle = masking.apply(model, mask) if mask is not None else None
        try:
            if "lora" in parts:  # fine-tune the (pruned) model: a merged copy
                model, history = attacks.lora_finetune(
                    model, ctx.tokenizer, data.harmful_pairs, ctx.fmt, r=a.lora_r, alpha=a.lora_alpha,
                    lr=a.lora_lr, epochs=a.lora_epochs, batch_size=a.lora_batch_size, seed=a.lora_seed,
                )  # fmt: skip
                log.info("%s: LoRA loss per epoch %s", stage, [round(h, 3) for h in history])
                if mask is not None and a.lora_reapply_mask:
                    masking.apply(model, mask)
            gen = HFGenerator(model, ctx.tokenizer, ctx.prompt_format, ctx.cfg.generation.batch_size)
            return gen.generate(list(requests), sampling)
        finally:
            if handle is not None:
                masking.restore(ctx.model, handle)

    return ctx.cache("generations", meta, compute, f"attack_{stage}")
