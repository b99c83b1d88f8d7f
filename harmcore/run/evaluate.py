"""Evaluating the model as it is now (dense or pruned): generations on the held-out harmful prompts,
refusal judges, reference losses with bootstrap CIs, QA accuracy for a control domain, and the
measurement suite (harmcore.measure.suite) where eval enables it.
"""

from __future__ import annotations

import math

from harmcore.data import qa
from harmcore.generation.base import sampling_for
from harmcore.measure import suite
from harmcore.measure.judges.refusal import RefusalKeywordJudge
from harmcore.measure.stats import bootstrap_ci, wilson_ci
from harmcore.run.context import JobContext
from harmcore.run.options import domain_config
from harmcore.run.prepare import JobData
from harmcore.run.scores import scores_cached
from harmcore.run.session import LoadedModel


def evaluate(ctx: JobContext, lm: LoadedModel, data: JobData, key: str, refs: dict, tag: str):
    """(metrics, per-prompt rows) of the model as it is now (`key`: dense or the mask's content hash):
    generations on the held-out harmful prompts judged for refusal, reference losses, the suite."""
    cfg = ctx.cfg
    g = cfg.generation
    sampling = sampling_for(g, lm.model, cfg.seed)
    responses = ctx.generate(lm, data.harm_eval, sampling, key, f"generate_{tag}")
    corrected_judge, wei_judge = RefusalKeywordJudge("corrected"), RefusalKeywordJudge("wei")
    corrected = [corrected_judge.is_refusal(r) for r in responses]
    wei = [wei_judge.is_refusal(r) for r in responses]
    headline = corrected if cfg.eval.refusal_mode == "corrected" else wei
    complied = [0.0 if refused else 1.0 for refused, _ in headline]
    metrics = {  # rates of 0/1 outcomes: Wilson intervals (not zero-wide at 0 and 1); means: bootstrap
        "compliance": sum(complied) / len(complied),  # keyword compliance; not the paper's harmfulness
        "compliance_ci": list(wilson_ci(complied)),
        "refusal_rate": sum(r for r, _ in corrected) / len(corrected),
        "refusal_rate_ci": list(wilson_ci([float(r) for r, _ in corrected])),
        "refusal_rate_wei": sum(r for r, _ in wei) / len(wei),
        "refusal_rate_wei_ci": list(wilson_ci([float(r) for r, _ in wei])),
        "rate_ci": "wilson",
    }
    if cfg.eval.response_nll and refs:
        for name, examples in refs.items():
            values = ctx.nll(lm, examples, key, f"nll_{name}_{tag}")
            lo, hi = bootstrap_ci(values, cfg.eval.bootstrap, seed=cfg.seed)
            metrics[f"{name}_nll"] = sum(values) / len(values) if values else None  # no reference left
            metrics[f"{name}_nll_ci"] = [lo, hi]
            if name == "harm":  # the judge-free harm measure of the curve reports (harmcore.report.measures)
                likelihood = [math.exp(-v) for v in values]
                metrics["harm_likelihood"] = sum(likelihood) / len(likelihood) if likelihood else None
                metrics["harm_likelihood_ci"] = list(bootstrap_ci(likelihood, cfg.eval.bootstrap, seed=cfg.seed))
    rows = [
        {"prompt": p.text, "category": p.category, "response": r, "complied": h, "refusal": c[0], "refusal_wei": w[0]}
        for p, r, h, c, w in zip(data.harm_eval, responses, complied, corrected, wei)
    ]
    target = domain_config(cfg.eval_domain) if cfg.eval_domain else cfg.harm_domain
    if target.source == "qa":  # control task: accuracy by alias match
        correct = qa.correct_flags(target.path, [p.text for p in data.harm_eval], responses)
        metrics["qa_accuracy"] = sum(correct) / len(correct)
        metrics["qa_accuracy_ci"] = list(wilson_ci([float(c) for c in correct]))
        for row, c in zip(rows, correct):
            row["correct"] = c
    # The measurement suite (harmcore.measure.suite): extra judges and utility, when eval enables them.
    sctx = suite_context(ctx, lm)
    extra, per_row = suite.extra_judges(sctx, [p.text for p in data.harm_eval], responses, tag)
    metrics.update(extra)
    metrics.update(suite.headline(metrics, cfg.eval.refusal_mode))
    for name, scores in per_row.items():
        for row, score in zip(rows, scores):
            row[name] = score
    if cfg.eval.utility.enabled:
        metrics["utility"] = suite.utility_metrics(sctx, key, tag, [p.text for p in data.benign_eval])
    if cfg.eval.recognition.enabled:
        metrics["recognition"] = suite.recognition_metrics(sctx, key, tag)
    if cfg.eval.collateral.path:
        metrics["collateral"] = suite.collateral_metrics(sctx, key, tag)
    return metrics, rows


def suite_context(ctx: JobContext, lm: LoadedModel) -> suite.Context:
    """What the measurement suite gets from the job: the live model, the job's cache and scores."""
    return suite.Context(
        model=lm.model,
        tokenizer=lm.tokenizer,
        prompt_format=lm.spec.prompt_format,
        cfg=ctx.cfg,
        weights=lm.identity(),
        cache=ctx.stages.cached,
        scores=lambda examples, method, stage, mask_key=None: scores_cached(
            ctx, lm, examples, method, stage, mask_key=mask_key
        ),
        cache_dir=ctx.cache_dir,
        fmt=ctx.fmt,
        store=ctx.session.measure,
    )
