"""The measurement suite of one job: extra harm judges, utility evals, recognition (and, in
harmcore.measure.attacks, jailbreak attacks).

The job (harmcore.run.evaluate) calls these with a `Context` (the live model and a cache function);
each part runs only when `eval.<part>` enables it (conf/eval/full.yaml enables all of
them; the endpoint judge also needs `eval.endpoint.base_url`). Every harm metric comes
with a percentile bootstrap CI over prompts; judgements, generations and utility results
are cached like the job's other stages, so a rerun repeats nothing finished.

metrics.json keys added (per dense `baseline` and pruned model):
  strongreject[_ci]            mean StrongREJECT classifier score in [0, 1]
  harmfulness[_ci]             the same: the paper's harmfulness, only where the classifier ran
                               (keyword compliance is `compliance`, never `harmfulness`)
  headline                     {"harm": "harmfulness" | "compliance", "refusal": "refusal_rate[_wei]"}
  <endpoint judge>[_ci]        mean rubric score in [0, 1] / 0-100 score; NaN judgements are
  <endpoint judge>_parse_failed  left out of the mean and counted here
  utility                      {"perplexity", "perplexity_tokens", "lm_eval": {task: {acc,...}}, "qa_accuracy",
                                "usefulness"/"coherence"[_ci, _parse_failed] of answers to benign instructions}
and once per job (harmcore.measure.attacks):
  attacks: {name: {"dense": harm metrics, "pruned": harm metrics}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harmcore.cache_entries import one_per, with_keys
from harmcore.data.examples import FormatSpec
from harmcore.data.sources import jsonl_prompts
from harmcore.generation.base import Request, Sampling, model_decoding, sampling_for
from harmcore.generation.hf import HFGenerator
from harmcore.inputs import read_text
from harmcore.measure import recognition, utility
from harmcore.measure.judges.client import client_from
from harmcore.measure.judges.endpoint import build_judges, check_template
from harmcore.measure.judges.refusal import MODES, RefusalKeywordJudge, refused_benign_nearby
from harmcore.measure.judges.strongreject import (
    StrongRejectClassifier,
    judge_dtype,
    load_judge_model,
    load_template,
    template_digest,
)
from harmcore.measure.stats import interval, wilson_ci

log = logging.getLogger("harmcore.suite")


@dataclass
class Context:
    """What the suite needs from the job (plain values and callables: measure/ never imports run/)."""

    model: object
    tokenizer: object
    prompt_format: str
    cfg: object  # harmcore.run.config.Config
    weights: dict  # model id + dense fingerprint: the cache identity of the loaded weights
    cache: Callable  # cache(kind, meta, compute, stage, expect) -> JSON value (the job's Stages.cached)
    # scores(examples, method, stage, mask_key=None) -> score tensors (the job's cached scores; with
    # mask_key, of the model as it is now, that mask applied)
    scores: Callable
    cache_dir: Path
    fmt: FormatSpec
    # What the process keeps between jobs (the session's): the loaded StrongREJECT judge, template digests
    store: dict = field(default_factory=dict)


def endpoint_needed(cfg) -> bool:
    """Whether a job of these settings will ask the judge endpoint (then it is probed first)."""
    e, ev = cfg.eval.endpoint, cfg.eval
    uses = (
        e.enabled
        or (ev.utility.enabled and ev.utility.benign_judges)
        or (ev.recognition.enabled and ev.recognition.explanation)
    )
    return bool(e.base_url and uses)


def content_hash(obj) -> str:
    """A short sha256 of a JSON-able object (cache keys of the suite's stages)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _template_digest(ctx: Context, path: str | None, sha256: str | None) -> str:
    """The StrongREJECT template's sha256 (judgements are cached under it); the URL is read once per session."""
    digests = ctx.store.setdefault("template_digests", {})
    key = (
        path,
        sha256,
        Path(path).expanduser().stat().st_mtime_ns if path and Path(path).expanduser().is_file() else None,
    )
    if key not in digests:
        digests[key] = template_digest(path, sha256)
    return digests[key]


def _mean_ci(values: Sequence[float], ctx: Context) -> tuple[float | None, list]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, [None, None]
    lo, hi = interval(finite, ctx.cfg.eval.bootstrap, seed=ctx.cfg.seed)  # Wilson for rates, else bootstrap
    return sum(finite) / len(finite), [lo, hi]


# ---------------------------------------------------------------------------------------
# Judges


def _strongreject_judge(ctx: Context):
    """The StrongREJECT classifier, loaded once per session (the last configuration asked for)."""
    c = ctx.cfg.eval.strongreject
    key = json.dumps(asdict(c), sort_keys=True)
    judges = ctx.store.setdefault("strongreject", {})
    if key not in judges:
        template = load_template(c.template_path, c.template_sha256)
        model, tok = load_judge_model(
            c.model, c.adapter, revision=c.revision, dtype=c.dtype, device=c.device,
            trust_remote_code=c.trust_remote_code,
        )  # fmt: skip
        judges.clear()
        judges[key] = StrongRejectClassifier(model, tok, template, c.max_response_length, c.batch_size)
    return judges[key]


def extra_judges(ctx: Context, prompts: Sequence[str], responses: Sequence[str], stage: str) -> tuple[dict, dict]:
    """StrongREJECT classifier and endpoint judges: (metrics, per-row scores by judge name)."""
    metrics, rows = {}, {}
    ev = ctx.cfg.eval
    pairs = {"prompts": content_hash(list(prompts)), "responses": content_hash(list(responses))}
    if ev.strongreject.enabled:
        c = ev.strongreject
        meta = {
            "judge": "strongreject_finetuned",
            "model": c.model,
            "adapter": c.adapter,
            "revision": c.revision,
            "template_sha256": _template_digest(ctx, c.template_path, c.template_sha256),
            "max_len": c.max_response_length,
            "judged_text": "the response's own tokens, no special-token text",  # judgements before this had a BOS text
            "dtype": judge_dtype(c.dtype),
            **pairs,
        }

        def compute():
            return [r.score for r in _strongreject_judge(ctx).score(list(prompts), list(responses))]

        scores = ctx.cache("judgements", meta, compute, f"strongreject_{stage}", one_per(len(responses), (int, float)))
        metrics["strongreject"], metrics["strongreject_ci"] = _mean_ci(scores, ctx)
        rows["strongreject"] = scores
    if ev.endpoint.enabled and ev.endpoint.base_url:
        for name, judge in build_judges(ev.endpoint, ctx.cache_dir).items():
            results = judge.score(list(prompts), list(responses))
            scores = [r.score for r in results]
            metrics[name], metrics[f"{name}_ci"] = _mean_ci(scores, ctx)
            metrics[f"{name}_parse_failed"] = sum(1 for s in scores if not math.isfinite(s))
            if hasattr(judge, "parser"):  # the rubric: answers the other parser reads differently
                metrics[f"{name}_parser"] = judge.parser
                metrics[f"{name}_parsers_disagree"] = sum("parsers disagree" in (r.detail or "") for r in results)
            rows[name] = [s if math.isfinite(s) else None for s in scores]
    return metrics, rows


def headline(metrics: dict, refusal_mode: str) -> dict:
    """The headline keys of one metrics block: `harmfulness` only ever is the StrongREJECT classifier's
    mean (the paper's harmfulness; absent when the classifier did not run), never keyword compliance
    (`compliance`); `headline` names the harm and refusal measures a report leads with."""
    out = {}
    if metrics.get("strongreject") is not None:
        out["harmfulness"], out["harmfulness_ci"] = metrics["strongreject"], metrics.get("strongreject_ci")
    harm = "harmfulness" if out else "compliance"
    out["headline"] = {"harm": harm, "refusal": "refusal_rate_wei" if refusal_mode == "wei" else "refusal_rate"}
    return out


def harm_metrics(ctx: Context, prompts: Sequence[str], responses: Sequence[str], stage: str) -> dict:
    """Keyword compliance, refusal rates (corrected and Wei et al.'s) and the extra judges, each with a
    CI, and the headline keys (`headline`)."""
    mode = ctx.cfg.eval.refusal_mode
    judges = {m: RefusalKeywordJudge(m) for m in MODES}
    judged = {m: [1.0 if j.is_refusal(r)[0] else 0.0 for r in responses] for m, j in judges.items()}
    metrics = {"n": len(responses)}
    metrics["compliance"], metrics["compliance_ci"] = _mean_ci([1.0 - v for v in judged[mode]], ctx)
    metrics["refusal_rate"], metrics["refusal_rate_ci"] = _mean_ci(judged["corrected"], ctx)
    metrics["refusal_rate_wei"], metrics["refusal_rate_wei_ci"] = _mean_ci(judged["wei"], ctx)
    metrics.update(extra_judges(ctx, prompts, responses, stage)[0])
    metrics.update(headline(metrics, mode))
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
        if u.perplexity_tail != "score":  # results from before the key keep their cache entries
            meta["tail"] = u.perplexity_tail

        def ppl():
            text = utility.corpus_text(u.perplexity_source)
            return utility.perplexity(ctx.model, ctx.tokenizer, text, u.seqlen, u.stride, u.max_tokens,
                                      u.perplexity_tail)  # fmt: skip

        result = ctx.cache("utility", meta, ppl, f"perplexity_{tag}", with_keys("perplexity", "tokens"))
        out["perplexity"], out["perplexity_tokens"] = result["perplexity"], result["tokens"]
    if u.lm_eval_tasks:
        meta = {**base, "what": "lm_eval", "tasks": sorted(u.lm_eval_tasks), "limit": u.lm_eval_limit,
                "include": u.lm_eval_include_path}  # fmt: skip
        shots, chat = 0, False
        if u.lm_eval_protocol == "paper":  # chat models zero-shot through their template, base ones 3-shot
            chat = ctx.prompt_format == "chat"
            shots = 0 if chat else 3
            meta.update(protocol="paper", shots=shots, chat_template=chat, seed=ctx.cfg.seed)

        def lm_eval():
            return utility.lm_eval_accuracy(
                ctx.model, ctx.tokenizer, u.lm_eval_tasks, u.lm_eval_include_path, u.lm_eval_limit,
                u.lm_eval_batch_size, u.lm_eval_include_defaults, shots, chat, ctx.cfg.seed,
            )  # fmt: skip

        out["lm_eval"] = ctx.cache("utility", meta, lm_eval, f"lm_eval_{tag}", with_keys(*u.lm_eval_tasks))
    if u.qa_source:
        meta = {**base, "what": "qa", "source": u.qa_source, "limit": u.qa_limit, "tokens": u.qa_max_new_tokens,
                "prompt_format": ctx.prompt_format}  # fmt: skip
        paper = None
        fmt = ctx.prompt_format
        if u.qa_protocol == "paper":  # chat models: the chat template; base ones: "Q: {question}\nA:"
            fmt = "chat" if ctx.prompt_format == "chat" else "qa"
            paper = model_decoding(ctx.model, 100 if fmt == "chat" else 50, ctx.cfg.seed)
            meta.update(protocol="paper", sampling=paper.key(), prompt_format=fmt)

        def qa():
            gen = HFGenerator(ctx.model, ctx.tokenizer, fmt, ctx.cfg.generation.batch_size)
            items = utility.qa_items(u.qa_source, u.qa_limit, "paper" if paper else "file")
            result = utility.qa_accuracy(gen, items, u.qa_max_new_tokens, paper)
            return {"accuracy": result["accuracy"], "correct": [r["correct"] for r in result["rows"]]}

        result = ctx.cache("utility", meta, qa, f"qa_{tag}", with_keys("accuracy", "correct"))
        out["qa_accuracy"] = result["accuracy"]
        out["qa_accuracy_ci"] = list(wilson_ci([float(c) for c in result["correct"]]))
    return out


def _benign_judgements(ctx: Context, base: dict, prompts: list[str], tag: str) -> dict:
    """usefulness / coherence (0-100, with CIs) of the model's greedy answers to benign instructions."""
    g = ctx.cfg.generation
    sampling = Sampling(g.max_new_tokens, 0.0, 1.0, ctx.cfg.seed)
    meta = {**base, "what": "benign_answers", "prompts": content_hash(prompts), "prompt_format": ctx.prompt_format,
            "sampling": json.dumps(sampling.key(), sort_keys=True)}  # fmt: skip
    gen = HFGenerator(ctx.model, ctx.tokenizer, ctx.prompt_format, g.batch_size)
    answers = ctx.cache("generations", meta, lambda: gen.generate([Request(p) for p in prompts], sampling),
                        f"benign_answers_{tag}", one_per(len(prompts)))  # fmt: skip
    e = replace(ctx.cfg.eval.endpoint, judges=list(ctx.cfg.eval.utility.benign_judges))
    out: dict = {"n_benign_judged": len(prompts)}
    for name, judge in build_judges(e, ctx.cache_dir).items():
        scores = [r.score for r in judge.score(prompts, answers)]
        out[name], out[f"{name}_ci"] = _mean_ci(scores, ctx)
        out[f"{name}_parse_failed"] = sum(1 for v in scores if not math.isfinite(v))
    return out


# ---------------------------------------------------------------------------------------
# Collateral damage


def collateral_metrics(ctx: Context, mask_key: str, tag: str) -> dict:
    """Refusal rates of the model as it is now on benign requests near a harm domain (eval.collateral):
    the authors' rule (`refused_benign_nearby`) and the corrected one, each with a Wilson interval."""
    c = ctx.cfg.eval.collateral
    prompts = [p.text for p in jsonl_prompts(c.path, "eval.collateral.path")]
    sampling = replace(sampling_for(ctx.cfg.generation, ctx.model, ctx.cfg.seed), max_new_tokens=c.max_new_tokens)
    meta = {**ctx.weights, "mask": mask_key, "what": "collateral_answers", "prompts": content_hash(prompts),
            "prompt_format": ctx.prompt_format, "sampling": json.dumps(sampling.key(), sort_keys=True)}  # fmt: skip
    gen = HFGenerator(ctx.model, ctx.tokenizer, ctx.prompt_format, ctx.cfg.generation.batch_size)
    answers = ctx.cache("generations", meta, lambda: gen.generate([Request(p) for p in prompts], sampling),
                        f"collateral_{tag}", one_per(len(prompts)))  # fmt: skip
    theirs = [1.0 if refused_benign_nearby(a) else 0.0 for a in answers]
    judge = RefusalKeywordJudge("corrected")
    corrected = [1.0 if judge.is_refusal(a)[0] else 0.0 for a in answers]
    out = {"n": len(answers)}
    out["refusal_rate_benign_nearby"], out["refusal_rate_benign_nearby_ci"] = _mean_ci(theirs, ctx)
    out["refusal_rate"], out["refusal_rate_ci"] = _mean_ci(corrected, ctx)
    return out


# ---------------------------------------------------------------------------------------
# Recognition and explanation


def recognition_metrics(ctx: Context, mask_key: str, tag: str) -> dict:
    """Detection (yes/no) and explanation (1-5, endpoint judge) of the model as it is now."""
    rc, g = ctx.cfg.eval.recognition, ctx.cfg.generation
    items = recognition.load_items(rc.path)
    gen = HFGenerator(ctx.model, ctx.tokenizer, ctx.prompt_format, g.batch_size)
    base = {**ctx.weights, "mask": mask_key, "prompt_format": ctx.prompt_format}

    def answers(template, prompts, tokens, stage):
        sampling = Sampling(tokens, 0.0, 1.0, ctx.cfg.seed)
        meta = {**base, "what": stage, "template": template, "prompts": content_hash(list(prompts)), "tokens": tokens}
        requests = [Request(template.format(prompt=p)) for p in prompts]
        generate = lambda: gen.generate(requests, sampling)  # noqa: E731
        return ctx.cache("generations", meta, generate, f"{stage}_{tag}", one_per(len(requests)))

    detect, explain = rc.detect_template or recognition.DETECT, rc.explain_template or recognition.EXPLAIN
    detected = answers(detect, [p for p, _ in items], rc.detection_tokens, "recognition_detect")
    labels = [h for _, h in items]
    if rc.reading == "paper":
        out = {"detection": recognition.paper_detection_metrics(labels, detected)}
    else:
        verdicts = [recognition.classify(a, rc.first_words) for a in detected]
        out = {"detection": recognition.detection_metrics(labels, verdicts)}
    e = ctx.cfg.eval.endpoint
    if rc.explanation and e.base_url:
        harmful = [p for p, h in items if h]
        texts = answers(explain, harmful, rc.explanation_tokens, "recognition_explain")
        if rc.reading == "paper":
            refused = [recognition.paper_refused(t, "explanation") for t in texts]
        else:
            refused = [RefusalKeywordJudge("corrected").is_refusal(t)[0] for t in texts]
        judge = recognition.EXPLANATION_JUDGE
        if rc.explanation_judge_path:
            key = "eval.recognition.explanation_judge_path"
            origin = f"{key}={rc.explanation_judge_path}"
            judge = check_template(read_text(rc.explanation_judge_path, key), ("prompt", "response"), origin)
        msgs = [[{"role": "user", "content": judge.format(prompt=p, response=t)}]
                for p, t in zip(harmful, texts)]  # fmt: skip
        scores = [recognition.parse_1_5(o["text"]) for o in client_from(e, ctx.cache_dir).complete(msgs)]
        out["explanation"] = recognition.explanation_metrics(scores, refused, ctx.cfg.eval.bootstrap, ctx.cfg.seed)
    return out
