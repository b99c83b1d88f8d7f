"""The hashes that tie results to the settings that made them.

`config_hash` covers every setting that changes a job's numbers (not paths, names, logging,
batch sizes or engine settings); a job folder whose metrics.json holds the same hash is
finished. `curve_hash` drops the sparsity and the model, so the points of one curve, and
the members of a pair, share it. `folder_hash` names a job folder's settings in its path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from harmcore.run.config import Config


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


def folder_hash(cfg: Config) -> str:
    """The settings a job folder's path does not name: the config hash without the sparsity.

    Folders are `.../<model>/<domain>/<scorer>/[p=<p>/]settings=<folder hash>/q=<q>`: jobs that
    differ in any setting that changes numbers (a seed, data sizes, a judge) never share a folder,
    and an identical rerun finds its own. 8 hex digits: a clash needs ~65k settings in one place.
    """
    d = _settings(cfg)
    for k in ("sparsity", "sparsities"):
        d.pop(k, None)
    return _hash_settings(d)[:8]


def _hash_settings(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _settings(cfg: Config) -> dict:
    d = asdict(cfg)
    for k in ("logger", "output_root", "cache_dir", "threads", "name", "datagen", "em", "pipeline"):
        d.pop(k, None)
    d["generation"].pop("vllm", None)  # how the engine is built, not what it computes
    d["scorer"].pop("cache", None)  # where scores are kept, not what they are
    if d["data"]["target"] == "harm":  # jobs from before data.target keep their hash
        d["data"].pop("target")
    if not d["eval"]["recognition"]["enabled"]:  # jobs from before the recognition eval keep their hash
        d["eval"].pop("recognition")
    return d
