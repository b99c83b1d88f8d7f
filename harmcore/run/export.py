"""A job's pruned model out of harmcore: a Hugging Face checkpoint with the job's mask applied.

    harmcore export JOB_DIR [--out DIR]

The model is loaded as the job loaded it (the job folder's own settings: model, revision, dtype),
the mask is checked against it (module names and shapes; the dense weights' fingerprint recorded
in the mask when the job ran), applied, and the model, tokenizer and generation config are written
under a hidden temporary name that is renamed into place at the end: a killed export leaves no
folder that looks finished (its leftovers are removed by the next export to the same place).

`harmcore.json` in the folder records what it is (source model, mask digest, q, p, scorer, domain,
the job's config hash) and the sha256 of every file, so that `harmcore serve` can check that the
folder still holds what was exported.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import OmegaConf

from harmcore import __version__
from harmcore.core import masking
from harmcore.core.weights import fingerprint, fingerprint_v1
from harmcore.errors import HarmcoreError
from harmcore.files import atomic_write_json, disk_errors, file_lock, follow_umask, job_settings_file, temp_path
from harmcore.inputs import digest
from harmcore.run.config import Config
from harmcore.run.context import cache_dir_of
from harmcore.run.hashing import config_hash
from harmcore.run.hydra_setup import to_run_config
from harmcore.run.session import load_model

log = logging.getLogger("harmcore.export")

RECORD = "harmcore.json"
CHECKPOINT = "checkpoint"  # where `harmcore serve JOB_DIR` exports to, inside the job folder
SHARD_SIZE = "5GB"


@dataclass(frozen=True)
class Job:
    """A finished pruning job read back from its folder."""

    folder: Path
    cfg: Config  # the job's own settings (one point of a multi-q job: its q)
    metrics: dict
    mask_path: Path
    mask_sha256: str

    @property
    def served_name(self) -> str:
        return f"{self.cfg.model.name}-pruned-{self.mask_sha256[:8]}"


def is_job_folder(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() or (folder / "mask.safetensors").is_file()


def read_job(folder: str | os.PathLike) -> Job:
    """The job in `folder`; one line when it is not a finished pruning job with a mask."""
    folder = Path(folder).expanduser()
    what = "give a job folder (it holds metrics.json and mask.safetensors, e.g. outputs/runs/.../q=0.001)"
    if not folder.is_dir():
        raise HarmcoreError(f"{folder} is not a folder: {what}")
    if (folder / "FAILED").is_file():
        raise HarmcoreError(f"{folder} holds a failed job (see its FAILED file): rerun the job, then export it")
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        raise HarmcoreError(f"{folder} is not a finished job (no metrics.json): {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise HarmcoreError(f"{folder}/metrics.json cannot be read ({err}): rerun the job") from None
    if "em_rate_dense_ft" in metrics or metrics.get("pipeline") == "em":
        raise HarmcoreError(f"{folder} is an emergent-misalignment job: export takes pruning jobs (harmcore run)")
    mask_path = folder / "mask.safetensors"
    if not mask_path.is_file() or not metrics.get("n_pruned"):
        raise HarmcoreError(
            f"{folder} has no pruned weights (q = {metrics.get('sparsity_requested', 0):g}: the dense model): "
            "serve or use the model itself"
        )
    cfg = _job_config(folder, metrics)
    return Job(folder, cfg, metrics, mask_path, digest(mask_path, "mask"))


def _job_config(folder: Path, metrics: dict) -> Config:
    """The job's settings from its .hydra/config.yaml (a point of a multi-q job: its parent's, at its q)."""
    path = job_settings_file(folder)
    if path is None:
        raise HarmcoreError(f"{folder} has no .hydra/config.yaml (nor has its parent): the job's settings are gone")
    try:
        cfg = to_run_config(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path)))
    except HarmcoreError as err:
        raise HarmcoreError(f"{path}: {err}") from None
    except Exception as err:  # a YAML or schema error in an edited file
        raise HarmcoreError(f"{path} cannot be read as harmcore settings ({str(err).splitlines()[0]})") from None
    if cfg.pipeline != "prune":
        raise HarmcoreError(f"{folder} is an emergent-misalignment job: export takes pruning jobs (harmcore run)")
    if cfg.sparsities:
        cfg = replace(cfg, sparsity=float(metrics.get("sparsity_requested", cfg.sparsity)), sparsities=None)
    if metrics.get("config_hash") not in (None, config_hash(cfg)):
        # e.g. a calibration file changed since: the model and mask are still the job's, checked below
        log.warning("%s: the settings read back hash to %s, the job recorded %s", folder, config_hash(cfg),
                    metrics.get("config_hash"))  # fmt: skip
    return cfg


def export(job: Job, out: str | os.PathLike | None = None) -> Path:
    """Write `job`'s pruned model to `out` (default: JOB_DIR/checkpoint) and return it.

    A folder that already holds this job's export (same mask, files as recorded) is kept as it is.
    """
    out = Path(out).expanduser() if out else job.folder / CHECKPOINT
    with disk_errors(out), file_lock(out.parent / f".{out.name}.lock"):
        if out.exists():
            record = verify(out)
            if record.get("mask_sha256") != job.mask_sha256:
                raise HarmcoreError(
                    f"{out} holds the export of another mask ({record.get('job')}): give another --out or remove it"
                )
            log.info("%s already holds this job's export", out)
            return out
        start = time.perf_counter()
        lm = load_model(job.cfg.model, cache_dir_of(job.cfg))
        mask = masking.load(job.mask_path)
        made_on = mask.meta.get("weights")
        if made_on and made_on != lm.fingerprint and made_on != fingerprint_v1(lm.model):  # v1: masks made before v2
            raise HarmcoreError(
                f"{job.mask_path} was made on other weights (fingerprint {made_on}) than {lm.model_id} "
                f"loads now ({lm.fingerprint}): the model changed since the job ran; rerun the job"
            )
        try:
            masking.apply(lm.model, mask)
        except HarmcoreError as err:
            raise HarmcoreError(f"{job.mask_path} does not fit {lm.model_id}: {err}") from None
        tmp = temp_path(out, clean=True)  # and remove what killed exports to `out` left
        try:
            lm.model.save_pretrained(tmp, max_shard_size=SHARD_SIZE)
            lm.tokenizer.save_pretrained(tmp)
            files = {f.name: digest(f, f.name) for f in sorted(tmp.iterdir()) if f.is_file()}
            atomic_write_json(tmp / RECORD, _record(job, lm, mask, fingerprint(lm.model), files))
            follow_umask(tmp)
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("exported %s (%d weights pruned) to %s in %.1fs", lm.model_id, mask.n_pruned, out,
             time.perf_counter() - start)  # fmt: skip
    return out


def _record(job: Job, lm, mask, pruned_fingerprint: str, files: dict[str, str]) -> dict:
    cfg, m = job.cfg, job.metrics
    return {
        "format": 1,
        "source_model": {
            "name": cfg.model.name,
            "path": cfg.model.path or None,
            "builder": cfg.model.builder,
            "revision": cfg.model.revision,
            "dtype": cfg.model.dtype,
            "id": lm.model_id,
            "fingerprint": lm.fingerprint,
        },  # fmt: skip
        "pruned_fingerprint": pruned_fingerprint,
        "mask_sha256": job.mask_sha256,
        "mask_key": masking.content_key(mask),
        "n_pruned": mask.n_pruned,
        "q": cfg.sparsity,
        "p": cfg.pruning.p,
        "ranking": cfg.pruning.ranking,
        "scorer": cfg.scorer.name,
        "harm_method": cfg.scorer.harm_method,
        "preserve_method": cfg.scorer.preserve_method,
        "harm_domain": cfg.harm_domain.name,
        "protocol": cfg.protocol,
        "config_hash": m.get("config_hash"),
        "job": str(job.folder.resolve()),
        "served_name": job.served_name,
        "prompt_format": cfg.model.prompt_format,
        "harmcore": __version__,
        "files": files,
    }


def verify(folder: str | os.PathLike) -> dict:
    """The record of an exported folder, after checking every recorded file's sha256; one line if not."""
    folder = Path(folder).expanduser()
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        files = record["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files recorded")
    except FileNotFoundError:
        raise HarmcoreError(f"{folder} exists and is not a harmcore export (no {RECORD}): give another --out") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise HarmcoreError(f"{folder}/{RECORD} cannot be read ({err}): remove {folder} and export again") from None
    for name, want in files.items():
        path = folder / name
        if not path.is_file() or digest(path, name) != want:
            raise HarmcoreError(f"{path} is not the file that was exported: remove {folder} and export again")
    return record
