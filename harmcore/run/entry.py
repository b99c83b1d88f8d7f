"""The commands behind `harmcore <command>` and `python -m experiments.<command>`.

Each takes the words typed after the command. The config-driven ones check what was typed
(options, keys, every job of a sweep) before anything runs, then hand over to Hydra (run) or
compose the config themselves (generate-data, finetune-em).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harmcore.errors import HarmcoreError
from harmcore.models.loading import check_reachable
from harmcore.report.sweep import aggregate as aggregate_sweep
from harmcore.run import argv as argv_
from harmcore.run import export as export_
from harmcore.run import serving
from harmcore.run.cli import compose_run_config, report_job_error
from harmcore.run.config import LoggerConfig
from harmcore.run.datagen import generate
from harmcore.run.em import run_em
from harmcore.run.hashing import missing_user_files
from harmcore.run.hydra_setup import register_schemas, to_run_config
from harmcore.run.job import run_job
from harmcore.run.overrides import check_jobs, check_keys
from harmcore.run.session import Session

log = logging.getLogger("harmcore.run")

# The jobs of a sweep run in this process (Hydra's basic launcher): they share one session.
SESSION = Session()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _hydra_job(cfg: DictConfig) -> dict | None:
    job_dir = HydraConfig.get().runtime.output_dir
    try:
        run_cfg = to_run_config(cfg)
        if run_cfg.pipeline == "em":
            result = run_em(run_cfg, job_dir, SESSION)
        else:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            resolved["experiment"] = HydraConfig.get().runtime.choices.get("experiment")  # for W&B: config, tags
            result = run_job(run_cfg, job_dir, resolved, SESSION)
    except Exception as err:  # HarmcoreError and anything else: see report_job_error
        report_job_error(err, job_dir)
        return None
    return result


def check(words: list[str]) -> list[str]:
    """The words in Hydra's order, checked: options, keys and (with -m) every job of the sweep."""
    words = argv_.hydra_order(words)
    argv_.check_options(words)
    dirs = argv_.conf_dirs(words)
    check_keys(argv_.split(words)[1], argv_.groups(dirs))
    configs = check_jobs(words, dirs)
    for cfg in configs:
        for key, path in missing_user_files(cfg):
            raise HarmcoreError(f"{key}={path} does not exist: fix the path")
    models = {json.dumps(asdict(m), sort_keys=True): m for c in configs for m in (c.model, c.data.responses_from) if m}
    for model in models.values():  # offline, every model must be at hand before the first job starts
        check_reachable(model)
    argv_.check_writable(words)
    if argv_.is_multirun(words):
        print(f"checked the {len(configs)} job(s) of the sweep", file=sys.stderr, flush=True)
        cover = sweep_store_q(configs)
        if cover is not None:  # every job keeps (and finds) the top scores the sweep's largest q reads
            words = [*words, f"scorer.store_q={cover!r}"]
            print(f"scorer.store=top: each job keeps the top {cover:g} of the harm scores, the sweep's largest q "
                  f"(scorer.store_q={cover:g})", file=sys.stderr, flush=True)  # fmt: skip
    return words


def sweep_store_q(configs: list) -> float | None:
    """The q the compact score store must serve for a sweep whose jobs keep the top scores
    (scorer.store=top) and do not say how many (scorer.store_q): its largest, so that no job computes
    the scores again because an earlier one kept too few. None when there is nothing to set."""
    if any(c.scorer.store_q is not None for c in configs):
        return None
    qs = {q for c in configs if c.scorer.store == "top" for q in (c.sparsity, *(c.sparsities or ()))}
    return max(qs) if len(qs) > 1 else None


def run(words: list[str]) -> None:
    """`harmcore run [overrides]`: one job, or a sweep with -m (anywhere on the line)."""
    register_schemas()
    words = check(words)
    sys.argv = [sys.argv[0], *words]
    _hydra_job()


def generate_data(words: list[str]) -> None:
    """`harmcore generate-data [overrides]`: calibration data files for a model and harm domain."""
    _log_to_console()
    cfg = compose_run_config(*_checked_overrides(words))
    prov = generate(cfg, SESSION)
    print(f"{prov['n_examples']} harmful and {prov['n_benign']} benign examples -> {prov['out_dir']}")


def finetune_em(words: list[str]) -> None:
    """`harmcore finetune-em [overrides] [out_dir=DIR]`: the emergent-misalignment recipe into one folder."""
    _log_to_console()
    out = [w.split("=", 1)[1] for w in words if w.startswith("out_dir=")]
    cfg = compose_run_config(*_checked_overrides([w for w in words if not w.startswith("out_dir=")]))
    job_dir = Path(out[0]) if out else Path(cfg.output_root) / "em" / cfg.model.name / cfg.em.name
    m = run_em(cfg, job_dir, SESSION)
    print(f"EM rate: dense fine-tune {m['em_rate_dense_ft']}, pruned fine-tune {m['em_rate_pruned_ft']} -> {job_dir}")


def aggregate(words: list[str]) -> None:
    """`harmcore aggregate DIR [--wandb ...]`: rebuild a sweep's reports from its job folders."""
    parser = argparse.ArgumentParser(prog="harmcore aggregate")
    parser.add_argument("sweep_dir", help="a sweep folder, e.g. outputs/sweeps/<name>")
    parser.add_argument("--wandb", action="store_true", help="log the reports to a W&B run")
    parser.add_argument("--project", default="harmcore")
    parser.add_argument("--entity", default=None)
    parser.add_argument("--mode", default="offline", help="offline (sync later with `wandb sync`) or online")
    args = parser.parse_args(words)
    logger = LoggerConfig("wandb", args.project, args.entity, args.mode) if args.wandb else None
    summary = aggregate_sweep(args.sweep_dir, logger)
    print(f"{summary['n_points']} points, {summary['n_failed']} failed, {summary['n_missing']} missing")


def export(words: list[str]) -> None:
    """`harmcore export JOB_DIR [--out DIR]`: a job's pruned model as a Hugging Face checkpoint."""
    parser = argparse.ArgumentParser(prog="harmcore export")
    parser.add_argument("job_dir", help="a finished job's folder (metrics.json, mask.safetensors)")
    parser.add_argument("--out", help="the checkpoint folder to write (default: JOB_DIR/checkpoint)")
    args = parser.parse_args(words)
    _log_to_console()
    job = export_.read_job(args.job_dir)
    out = export_.export(job, args.out)
    print(f"{job.cfg.model.name} with {job.metrics['n_pruned']} weights pruned (q={job.cfg.sparsity:g}) -> {out}")


def serve(words: list[str]) -> None:
    """`harmcore serve PATH [PORT] [--port ...]`: vLLM's OpenAI-compatible server for a job's pruned
    model, an exported one, or any model folder."""
    parser = argparse.ArgumentParser(prog="harmcore serve")
    parser.add_argument("path", help="a job folder, an exported folder (harmcore.json) or a model folder")
    parser.add_argument("port_word", nargs="?", type=int, metavar="PORT", help="as --port")
    parser.add_argument("--port", type=int, help="default: a free port")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    parser.add_argument("--name", help="the model name requests use (default: <model>-pruned-<mask digest>)")
    parser.add_argument("--api-key", help="the key requests must send (better: the environment's VLLM_API_KEY)")
    parser.add_argument("--dtype", help="default: the dtype the job loaded the model in")
    parser.add_argument("--max-model-len", type=int, default=2048, help="context length (at most the model's)")
    parser.add_argument("--out", help="where a job folder's model is exported (default: JOB_DIR/checkpoint)")
    args = parser.parse_args(words)
    _log_to_console()
    serving.serve(
        args.path, port=args.port or args.port_word, host=args.host, name=args.name,
        api_key=args.api_key or os.environ.get("HARMCORE_API_KEY"), dtype=args.dtype,
        max_model_len=args.max_model_len, out=args.out,
    )  # fmt: skip


COMMANDS = {
    "run": run,
    "generate-data": generate_data,
    "finetune-em": finetune_em,
    "aggregate": aggregate,
    "export": export,
    "serve": serve,
}


def _checked_overrides(words: list[str]) -> tuple[list[str], list[Path]]:
    """(the overrides, the user's config folders), checked."""
    dirs = argv_.conf_dirs(words)
    argv_.check_options(words)
    check_keys(argv_.split(words)[1], argv_.groups(dirs))
    argv_.check_writable(words)
    return argv_.split(words)[1], dirs[:-1]


def _log_to_console() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
