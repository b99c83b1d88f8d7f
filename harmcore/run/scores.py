"""A job's scores and mask: scores from the session, the cache or computed; the set-difference mask.

Scores do not depend on the sparsity, so the jobs of a sweep score once: the first job writes
them to the content-addressed cache and the others read them (in one session they also share
the in-memory scores and the selector that keeps the sorted candidates of the largest q).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from dataclasses import asdict

import harmcore
from harmcore.core import scoring
from harmcore.core.masking import content_key
from harmcore.core.memory import plan
from harmcore.core.offload import input_device
from harmcore.core.score_store import (
    StaleScores,
    load_scores,
    load_top,
    save_scores,
    save_top,
    score_path,
    top_fraction,
)
from harmcore.core.selection import Mask, SetDifference, set_difference
from harmcore.core.weights import prunable_linears
from harmcore.data.examples import data_hash, tokenize
from harmcore.files import file_lock
from harmcore.run.config import Config
from harmcore.run.context import JobContext
from harmcore.run.options import domain_config
from harmcore.run.prepare import prepare_data
from harmcore.run.session import MAX_SCORE_SETS, MAX_SELECTORS, LoadedModel, remember
from harmcore.run.stages import Stages

log = logging.getLogger("harmcore.job")

SIGN_CONVENTION = "larger = more important to the data's behaviour; stored un-negated"
PREPARE_MAX_Q = 0.05  # above this, sorted candidates cost more memory than the passes they save


def score_slots(cfg: Config) -> int:
    """Score sets a job keeps in memory: its harm and preserve sets and one per intersected domain."""
    return MAX_SCORE_SETS + len(cfg.intersect_domains or [])


def score_meta(ctx: JobContext, lm: LoadedModel, examples, method: str, mask_key: str | None = None) -> dict:
    """What defines a score set: its file name is the hash of this, and the file holds it. `mask_key`:
    the scores were taken on the model with that mask applied (not the dense weights)."""
    scorer = scoring.get(method)
    data_free = not scorer.needs_data
    masked = {"mask": mask_key} if mask_key and mask_key != "dense" else {}
    return {
        **masked,
        "method": method,
        "formula": scorer.formula,
        "sign": SIGN_CONVENTION,
        "model": lm.model_id,
        "weights": lm.fingerprint,
        "data": "none" if data_free else data_hash(examples),
        "format": "none" if data_free else json.dumps(asdict(ctx.fmt), sort_keys=True),
        "n_examples": 0 if data_free else len(examples),
        "seed": ctx.cfg.scorer.seed if method == "random" else 0,
        "code": harmcore.__version__,
        **({} if data_free else lm.prompt_lead()),
    }


def scores_cached(
    ctx: JobContext, lm: LoadedModel, examples, method: str, stage: str, keep: int = MAX_SCORE_SETS,
    mask_key: str | None = None, top: float | None = None,
):  # fmt: skip
    """Scores of `method` on `examples`, from the session, from the cache, or computed and cached;
    the last `keep` sets used stay in the session. With `mask_key`, the caller has applied that mask
    to the model: the scores are the masked model's and are cached under it. With `top` and
    scorer.store=top, only what a selection of at most that fraction (pruning.ranking) reads is
    cached (`score_store.save_top`); a later job that needs more computes the full scores again."""
    meta = score_meta(ctx, lm, examples, method, mask_key)
    path = score_path(ctx.cache_dir, meta)
    compact = top is not None and ctx.cfg.scorer.store == "top"
    start = time.perf_counter()
    held = ctx.session.scores
    for key in [str(path), *([f"{path}@top{f}" for f in _held_fractions(held, path, top)] if compact else [])]:
        if key in held:
            ctx.stages.record(stage, "memory", time.perf_counter() - start)
            held[key] = scores = held.pop(key)  # most recently used last
            return scores
    with file_lock(path.with_suffix(".lock")):
        if compact and not path.exists():
            scores, served = _load_or_compute_top(ctx, lm, examples, method, meta, stage, start, top)
            remember(held, f"{path}@top{served}" if served is not None else str(path), scores, keep)
            return scores
        scores = _load_or_compute(ctx, lm, examples, method, path, meta, stage, start)
    remember(held, str(path), scores, keep)
    return scores


def _held_fractions(held: dict, path, top: float) -> list[float]:
    """The fractions of the compact reconstructions of `path` in the session that serve `top`."""
    prefix = f"{path}@top"
    return [float(k[len(prefix) :]) for k in held if k.startswith(prefix) and float(k[len(prefix) :]) >= top]


def _load_or_compute_top(ctx: JobContext, lm, examples, method, meta, stage, start, top: float):
    """(scores, the fraction they serve, None for full scores): a compact file's reconstruction, or the
    full scores computed now (and their top written, for at least `top`)."""
    ranking = ctx.cfg.pruning.ranking
    path = score_path(ctx.cache_dir, {**meta, "store": "top"})
    shapes = {n: tuple(m.weight.shape) for n, m in prunable_linears(lm.model).items()}
    if path.exists():
        try:
            scores = load_top(path, meta, shapes, top, ranking)
        except StaleScores as err:
            log.info("%s: %s: computing the full scores", stage, err)
        else:
            ctx.stages.record(stage, "cached", time.perf_counter() - start)
            served = top_fraction(path)[0]
            log.info("%s: %s top scores (q <= %s) read from %s", stage, method, served, path)
            return scores, served
    scores = _load_or_compute(dataclasses.replace(ctx, cfg=_no_full_cache(ctx.cfg)), lm, examples, method,
                              score_path(ctx.cache_dir, meta), meta, stage, start)  # fmt: skip
    save_top(scores, path, meta, top, ranking)
    log.info("%s: the top %s of the %s scores (%s ranking) -> %s", stage, top, method, ranking, path)
    return scores, None


def _no_full_cache(cfg: Config) -> Config:
    return dataclasses.replace(cfg, scorer=dataclasses.replace(cfg.scorer, cache=False))


def _load_or_compute(ctx: JobContext, lm, examples, method, path, meta, stage, start):
    cfg = ctx.cfg
    if path.exists():
        shapes = {n: tuple(m.weight.shape) for n, m in prunable_linears(lm.model).items()}
        try:
            scores = load_scores(path, meta, shapes=shapes)
        except StaleScores as err:
            log.warning("%s: %s: computing the scores again", stage, err)
        else:
            ctx.stages.record(stage, "cached", time.perf_counter() - start)
            log.info("%s: %s scores read from %s", stage, method, path)
            return scores
    batch_size, layers_per_pass = scoring_plan(ctx, lm, examples, method)
    scores = scoring.compute(
        lm.model,
        examples,
        method,
        tokenizer=lm.tokenizer,
        fmt=ctx.fmt,
        batch_size=batch_size,
        layers_per_pass=layers_per_pass,
        seed=cfg.scorer.seed,
        progress=True,
    )
    scores = {k: v.to("cpu") for k, v in scores.items()}
    scoring.check_finite(scores, f"{method} scores")
    if cfg.scorer.cache:
        save_scores(scores, path, meta)
    ctx.stages.record(stage, "computed", time.perf_counter() - start)
    where = path if cfg.scorer.cache else "memory only (scorer.cache=false)"
    log.info("%s: %s scores computed in %.1fs -> %s", stage, method, time.perf_counter() - start, where)
    return scores


def scoring_plan(ctx: JobContext, lm: LoadedModel, examples, method: str) -> tuple[int, int | None]:
    """(batch size, layers per pass) of a scoring run: the configured ones, or with `auto` the largest
    that fit (harmcore.core.memory). The plan is made, logged and checked (one line when it cannot fit)
    when a value is `auto` or the model is on a GPU, before any work."""
    s = ctx.cfg.scorer
    batch_size, per_pass = s.batch_size, s.layers_per_pass
    on_gpu = input_device(lm.model).type == "cuda"
    if not scoring.get(method).needs_data or not examples or not ("auto" in (batch_size, per_pass) or on_gpu):
        return (4 if batch_size == "auto" else batch_size), (None if per_pass == "auto" else per_pass)
    toks = tokenize(lm.tokenizer, examples, ctx.fmt)
    n_tokens = max(len(t.prompt_ids) + len(t.response_ids) for t in toks)
    made = plan(lm.model, n_tokens, len(toks), method, batch_size, per_pass)
    log.info("%s", made.table())
    return made.batch_size, made.layers_per_pass


def select(ctx: JobContext, harm, preserve, q_max: float | None = None) -> Mask:
    """The job's set-difference mask, through the selector its session shares. `q_max`: the largest
    q of the curve this job belongs to, whose sorted candidates serve every smaller q."""
    cfg = ctx.cfg
    key = (id(harm), id(preserve), cfg.pruning.p, cfg.pruning.ranking)
    sel = ctx.session.selectors.get(key)
    if sel is None or sel.harm is not harm or sel.preserve is not preserve:
        sel = SetDifference(harm, preserve, cfg.pruning.p, cfg.pruning.ranking)
    remember(ctx.session.selectors, key, sel, MAX_SELECTORS)  # most recently used last
    if q_max is not None and cfg.sparsity <= q_max <= PREPARE_MAX_Q:
        sel.prepare(q_max)
    mask = sel.mask(cfg.sparsity)
    if cfg.sparsity > 0 and mask.n_pruned == 0:
        _warn_nothing_pruned(harm, cfg)
    return mask


def _warn_nothing_pruned(harm: dict, cfg: Config) -> None:
    ranking = cfg.pruning.ranking
    if ranking == "per_row":  # floor(q * row length) per row
        unit, size = "row", max(s.reshape(s.shape[0], -1).shape[1] for s in harm.values())
    elif ranking == "per_matrix":
        unit, size = "matrix", max(s.numel() for s in harm.values())
    else:
        unit, size = "model", sum(s.numel() for s in harm.values())
    log.warning(
        "sparsity=%g prunes no weight with pruning.ranking=%s: it takes floor(q x %s size) and the largest %s "
        "has %d weights, so q >= %.3g is needed (or the preserve set covers all of the top q: lower pruning.p)",
        cfg.sparsity,
        ranking,
        unit,
        unit,
        size,
        1 / size,
    )


def shared_mask(ctx: JobContext, lm: LoadedModel, preserve) -> tuple[Mask, list[int], list[str]]:
    """The weights pruned by the set-difference mask of EVERY domain in `cfg.intersect_domains`.

    Each domain is scored on its own calibration examples with the job's q, p, ranking and
    preserve scores. Returns the intersection, each domain's own mask size (weights), and
    the calibration prompts used (to keep them out of the evaluation).
    """
    cfg = ctx.cfg
    masks, used = [], []
    for name in cfg.intersect_domains:
        sub = dataclasses.replace(cfg, harm_domain=domain_config(name), eval_domain=None, intersect_domains=None)
        data = prepare_data(dataclasses.replace(ctx, cfg=sub, stages=Stages(ctx.cache_dir)), lm)
        sub_ctx = dataclasses.replace(ctx, cfg=sub)
        harm = scores_cached(
            sub_ctx, lm, data.harm_calibration, cfg.scorer.harm_method, f"scores_harm_{name}", score_slots(cfg)
        )
        masks.append(set_difference(harm, preserve, cfg.sparsity, cfg.pruning.p, cfg.pruning.ranking))
        used += data.calibration_requests
    shared = functools.reduce(Mask.intersect, masks)
    shared.meta.update(masks[0].meta, op="intersection", domains=",".join(cfg.intersect_domains))
    return shared, [m.n_pruned for m in masks], used


def mask_key(mask: Mask) -> str:
    """The cache identity of masked weights: the content hash of the mask ("dense" when it prunes nothing)."""
    return content_key(mask)
