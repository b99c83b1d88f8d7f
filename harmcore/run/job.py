"""One pruning job, stage by stage, every stage cached.

    prompts -> calibration responses -> harm/preserve scores -> set-difference mask
            -> dense and pruned generations -> judges and response losses -> metrics.json

    prepare.py   the job's data            scores.py     scores and the mask
    evaluate.py  generations and judges    context.py    the cached model calls
    session.py   what a process keeps between jobs (models, scores, selectors, engines)

A killed job rerun repeats no finished stage (each is in the content-addressed cache), and a
job whose metrics.json holds its config hash is skipped whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from harmcore.core import masking
from harmcore.data import calibration_files
from harmcore.errors import HarmcoreError
from harmcore.files import atomic_write_json, atomic_write_text, file_lock
from harmcore.measure import attacks, suite
from harmcore.measure.judges.client import client_from
from harmcore.report import locations
from harmcore.report.tracking import WandbMirror, sparsity_fields, tags
from harmcore.run.config import Config
from harmcore.run.context import JobContext
from harmcore.run.evaluate import evaluate, suite_context
from harmcore.run.failures import write_failed
from harmcore.run.hashing import config_hash, curve_hash
from harmcore.run.prepare import JobData, prepare_data, reference_sets, references_writer
from harmcore.run.provenance import provenance
from harmcore.run.scores import mask_key, score_slots, scores_cached, select, shared_mask
from harmcore.run.session import Session
from harmcore.run.stages import Stages

log = logging.getLogger("harmcore.job")


def run_job(
    cfg: Config, job_dir: Path, resolved: dict | None = None, session: Session | None = None, q_max: float | None = None
) -> dict:
    """Run one (model, domain, scorer, sparsity) job into `job_dir`; return its metrics.

    With `cfg.sparsities` set, walk every q in this process (model and scores loaded once)
    into `job_dir/q=<q>/` and return {"points": [metrics, ...]}. `session` holds what jobs share
    (a new one, closed at the end, when None); `q_max` is the largest q of the curve the job is
    a point of (its selection then shares sorted candidates with the other points).
    """
    if session is None:
        with Session() as own:
            return run_job(cfg, job_dir, resolved, own, q_max)
    if cfg.sparsities:
        top = max(cfg.sparsities)
        points = []
        for q in cfg.sparsities:
            point = dataclasses.replace(cfg, sparsity=float(q), sparsities=None)
            sub = dict(resolved or {}, sparsity=float(q), sparsities=None)
            points.append(run_job(point, Path(job_dir) / f"q={float(q)}", sub, session, top))
        return {"points": points}
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    # One job per folder at a time: a second one with the same settings waits here, then finds the
    # finished metrics.json (or resumes a killed run from the cache).
    with file_lock(job_dir / ".lock"):
        return _run_in(cfg, job_dir, resolved, session, q_max)


def _read_metrics(path: Path) -> dict | None:
    """A finished job's metrics.json, or None (none yet, or unreadable: the job runs again)."""
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(done, dict):
            return done
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    log.warning("%s cannot be read: running the job again", path)
    return None


class FolderTaken(HarmcoreError):
    """The folder holds the finished results of other settings (nothing is written to it)."""

    marks_job_dir = False


def _run_in(cfg: Config, job_dir: Path, resolved: dict | None, session: Session, q_max: float | None) -> dict:
    chash = config_hash(cfg)
    metrics_path = job_dir / "metrics.json"
    done = _read_metrics(metrics_path)
    if done is not None:
        if done.get("config_hash") == chash:
            log.info("%s is already finished (config %s): nothing to do", job_dir, chash)
            return done
        raise FolderTaken(
            f"{job_dir} holds the results of other settings (config {done.get('config_hash')}, this job {chash}): "
            "give this job its own folder (hydra.run.dir=...) or delete that one"
        )
    (job_dir / "FAILED").unlink(missing_ok=True)
    log.info("job folder: %s", job_dir)
    mirror = None
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        atomic_write_json(job_dir / "provenance.json", provenance(cfg))
        experiment = (resolved or {}).get("experiment")
        mirror = WandbMirror(
            cfg.logger,
            _wandb_dir(cfg, job_dir),
            run_name=f"{cfg.model.name}/{cfg.harm_domain.name}/{cfg.scorer.name}/q={cfg.sparsity:g}",
            group=cfg.name,  # the sweep's name: every run of a sweep in one group
            config={**(resolved or asdict(cfg)), **sparsity_fields(cfg.sparsity)},
            # A requeued job continues its W&B run instead of starting another one.
            run_id=hashlib.sha256(f"{job_dir.resolve()}:{chash}".encode()).hexdigest()[:16],
            tags=tags(
                model=cfg.model.name,
                scorer=cfg.scorer.name,
                domain=cfg.harm_domain.name,
                protocol=cfg.protocol,
                family=cfg.model.family,
                aligned=cfg.model.aligned,
                experiment=experiment,
            ),
        )
        metrics, rows = _run_stages(JobContext.create(cfg, session), job_dir, chash, q_max)
        mirror.log_final({**metrics, **sparsity_fields(cfg.sparsity, metrics.get("sparsity_achieved"))}, rows)
        log.info("finished: %s", job_dir / "metrics.json")
        return metrics
    except BaseException as err:
        write_failed(job_dir, err)
        raise
    finally:
        if mirror is not None:
            mirror.finish()


def _wandb_dir(cfg: Config, job_dir: Path) -> Path:
    """Where a job's W&B run is written: its sweep's folder (outputs/sweeps/<name>, so that the sweep's
    runs sync with one command) when the job lies inside it, else the job's own folder."""
    sweep = Path(cfg.output_root) / "sweeps" / cfg.name
    try:
        job_dir.resolve().relative_to(sweep.resolve())
    except ValueError:
        return job_dir
    return sweep


def _run_stages(ctx: JobContext, job_dir: Path, chash: str, q_max: float | None) -> tuple[dict, list[dict]]:
    cfg, stages = ctx.cfg, ctx.stages
    start = time.perf_counter()
    lm = ctx.model()
    ctx.generator(lm)  # a vLLM engine that cannot start fails the job here, not half-way
    if suite.endpoint_needed(cfg):  # so does a judge endpoint that does not answer
        client_from(cfg.eval.endpoint, ctx.cache_dir).probe()
    data = prepare_data(ctx, lm)
    keep = score_slots(cfg)
    q_cover = cfg.scorer.store_q or max(q_max or 0.0, cfg.sparsity)  # the largest q the stored top must serve
    harm = scores_cached(ctx, lm, data.harm_calibration, cfg.scorer.harm_method, "scores_harm", keep, top=q_cover)
    preserve = None
    if cfg.scorer.preserve_method and cfg.pruning.p > 0:
        preserve = scores_cached(ctx, lm, data.benign_calibration, cfg.scorer.preserve_method, "scores_preserve", keep,
                                 top=cfg.pruning.p)  # fmt: skip
    t = time.perf_counter()
    shared_sizes = None
    if not cfg.intersect_domains:
        mask = select(ctx, harm, preserve, q_max)
    else:
        mask, shared_sizes, used = shared_mask(ctx, lm, preserve)
        banned = {calibration_files.normalise(t) for t in used}  # never evaluate on any domain's calibration prompt
        data.harm_eval = [p for p in data.harm_eval if calibration_files.normalise(p.text) not in banned]
    mask = masking.with_options(mask, cfg.pruning.alpha, cfg.pruning.layers)
    masking.save(mask, job_dir / "mask.safetensors", lm.made_on())
    drawn = locations.write_in_background(mask, job_dir, f"{cfg.model.name} q={cfg.sparsity:g}: {mask.n_pruned} pruned")
    stages.record("select", "computed", time.perf_counter() - t)
    refs = reference_sets(ctx, lm, data)
    baseline, base_rows = evaluate(ctx, lm, data, "dense", refs, "dense")
    handle = masking.apply(lm.model, mask)
    changed = [f"{name}.weight" for name, idx in mask.indices.items() if idx.numel()]
    ctx.session.weights_changed(lm, changed)
    try:
        pruned, rows = evaluate(ctx, lm, data, mask_key(mask), refs, "pruned")
    finally:
        masking.restore(lm.model, handle)
        ctx.session.weights_changed(lm, changed, restored=True)
    for row, base in zip(rows, base_rows):  # the dense baseline's answer and judgements beside each row
        row.update({f"dense_{k}": v for k, v in base.items() if k not in ("prompt", "category")})
    attack_metrics = attacks.run_attacks(suite_context(ctx, lm), data, mask, mask_key(mask), refs)
    atomic_write_text(job_dir / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if refs:  # per-example reference losses (nats/token, from the cache) for bootstrap CIs in sweep reports
        keys = {"dense": "dense", "pruned": mask_key(mask)}
        quiet = dataclasses.replace(ctx, stages=Stages(ctx.cache_dir))  # read back, not a stage of the job
        nll = {t: {n: quiet.nll(lm, x, k, "") for n, x in refs.items()} for t, k in keys.items()}
        atomic_write_json(job_dir / "reference_nll.json", nll)
    metrics = {
        "config_hash": chash,
        "curve_hash": curve_hash(cfg),
        **_settings_of(cfg, data, mask, shared_sizes),
        "references_from": references_writer(ctx, lm).spec.name if refs else None,
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
    atomic_write_json(job_dir / "metrics.json", metrics)
    harm, refusal = baseline["headline"]["harm"], baseline["headline"]["refusal"]
    log.info(
        "q=%g achieved %.2e: %s %.3f -> %.3f, %s %.3f -> %.3f",
        cfg.sparsity,
        mask.sparsity,
        harm,
        baseline[harm],
        pruned[harm],
        refusal,
        baseline[refusal],
        pruned[refusal],
    )
    return metrics, rows


def _settings_of(cfg: Config, data: JobData, mask, shared_sizes) -> dict:
    """The settings and data provenance metrics.json records beside the numbers."""
    return {
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
        "data_target": cfg.data.target,
        # cross-domain from a file: its stem names the evaluation domain in the reports
        "eval_domain": cfg.eval_domain or (Path(cfg.eval_prompts_path).stem if cfg.eval_prompts_path else None),
        "eval_prompts_path": cfg.eval_prompts_path,
        "n_eval_overlap_removed": data.n_eval_overlap_removed,
        "n_eval_near_duplicates_removed": data.n_eval_near_duplicates_removed,
        "intersect_domains": cfg.intersect_domains,
        "intersect_domain_sizes": shared_sizes,
    }
