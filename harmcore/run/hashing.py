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
from pathlib import Path

from harmcore.inputs import digest
from harmcore.measure.config import LATER_DEFAULTS
from harmcore.run.config import Config
from harmcore.run.options import domain_config


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


def user_files(cfg: Config) -> dict[str, str]:
    """The local files and folders the settings name (key -> path): their content is part of the
    settings. Hub names (trivia_qa, wikitext, a hub model id) are not files and stay names."""
    e, d = cfg.eval, cfg.data
    named = {
        "data.harm_path": d.harm_path,
        "data.benign_path": d.benign_path,
        "data.prefill_path": d.prefill_path,
        "eval_prompts_path": cfg.eval_prompts_path,
        "harm_domain.path": cfg.harm_domain.path,
    }
    for key in ("eval_domain", "intersect_domains"):
        for name in [getattr(cfg, key)] if key == "eval_domain" else getattr(cfg, key) or []:
            if name:
                named[f"{key}:{name}.path"] = domain_config(name).path
    named["eval.collateral.path"] = e.collateral.path
    if e.recognition.enabled:
        named["eval.recognition.path"] = e.recognition.path
        named["eval.recognition.explanation_judge_path"] = e.recognition.explanation_judge_path
    if e.utility.enabled:
        u = e.utility
        named.update({"eval.utility.perplexity_source": u.perplexity_source, "eval.utility.qa_source": u.qa_source,
                      "eval.utility.lm_eval_include_path": u.lm_eval_include_path})  # fmt: skip
    if e.strongreject.enabled:
        named["eval.strongreject.template_path"] = e.strongreject.template_path
    if any("lora" in a for a in e.attacks.attacks):
        named["eval.attacks.lora_data_path"] = e.attacks.lora_data_path
    if any("refusal_ablation" in a for a in e.attacks.attacks):
        named["eval.attacks.ablation_data_path"] = e.attacks.ablation_data_path
    if any("prefill" in a for a in e.attacks.attacks):
        named["eval.attacks.prefill_path"] = e.attacks.prefill_path
    if e.endpoint.enabled:
        named.update({f"eval.endpoint.templates.{k}": v for k, v in e.endpoint.templates.items()})
    return {k: v for k, v in named.items() if v and Path(v).expanduser().exists()}


def missing_user_files(cfg: Config) -> list[tuple[str, str]]:
    """(key, path) of each file the settings need that is not there (checked before any job runs)."""
    need = {"data.harm_path": cfg.data.harm_path, "data.prefill_path": cfg.data.prefill_path,
            "eval_prompts_path": cfg.eval_prompts_path,
            "eval.strongreject.template_path": None}  # fmt: skip
    if cfg.data.benign_source == "jsonl":
        need["data.benign_path"] = cfg.data.benign_path
    if cfg.harm_domain.source in ("hexphi", "jsonl"):
        need["harm_domain.path"] = cfg.harm_domain.path
    if cfg.eval.strongreject.enabled:
        need["eval.strongreject.template_path"] = cfg.eval.strongreject.template_path
    need["eval.collateral.path"] = cfg.eval.collateral.path
    if cfg.eval.recognition.enabled:
        need["eval.recognition.path"] = cfg.eval.recognition.path
        need["eval.recognition.explanation_judge_path"] = cfg.eval.recognition.explanation_judge_path
    if any("lora" in a for a in cfg.eval.attacks.attacks):
        need["eval.attacks.lora_data_path"] = cfg.eval.attacks.lora_data_path
    if any("refusal_ablation" in a for a in cfg.eval.attacks.attacks):
        need["eval.attacks.ablation_data_path"] = cfg.eval.attacks.ablation_data_path
    if any("prefill" in a for a in cfg.eval.attacks.attacks):
        need["eval.attacks.prefill_path"] = cfg.eval.attacks.prefill_path
    if cfg.eval.endpoint.enabled:
        need.update({f"eval.endpoint.templates.{k}": v for k, v in cfg.eval.endpoint.templates.items()})
    if cfg.eval.utility.enabled:
        u = cfg.eval.utility
        need["eval.utility.lm_eval_include_path"] = u.lm_eval_include_path
        for key, value in (
            ("eval.utility.qa_source", u.qa_source),
            ("eval.utility.perplexity_source", u.perplexity_source),
        ):
            if value and ("/" in value or Path(value).suffix):  # a file, not a hub dataset name
                need[key] = value
    if cfg.harm_domain.source in ("hexphi",) and not cfg.harm_domain.path:
        return [("harm_domain.path", "null")]
    return [(k, v) for k, v in need.items() if v and not Path(v).expanduser().exists()]


def _settings(cfg: Config) -> dict:
    d = asdict(cfg)
    for spec in (d["model"], d["data"]["responses_from"]):  # where layers go, not what they compute
        if spec is not None:
            spec.pop("device_map", None)
            spec.pop("offload", None)
    files = user_files(cfg)
    if files:  # by content: a changed file is another job (jobs without user files keep their hash)
        d["inputs"] = {key: digest(path, key) for key, path in sorted(files.items())}
    for k in ("logger", "output_root", "cache_dir", "threads", "name", "datagen", "em", "pipeline", "protocol"):
        d.pop(k, None)
    d["generation"].pop("vllm", None)  # how the engine is built, not what it computes
    # jobs from before these keys keep their hash
    for key, default in (("decoding", "explicit"), ("base_prompt", "qa")):
        if d["generation"][key] == default:
            d["generation"].pop(key)
    for key in ("cache", "store", "store_q"):  # where and how scores are kept, not what they are
        d["scorer"].pop(key, None)
    for key in ("alpha", "layers"):  # jobs from before these keys keep their hash
        if d["pruning"][key] is None:
            d["pruning"].pop(key)
    if d["data"]["add_bos"] is None:  # jobs from before data.add_bos keep their hash
        d["data"].pop("add_bos")
    if d["data"]["target"] == "harm":  # jobs from before data.target keep their hash
        d["data"].pop("target")
    for key, default in (("pair_text", "shared"), ("prefill_tokens", 10)):  # nor these
        if d["data"][key] == default:
            d["data"].pop(key)
    for key in ("prefill_path", "n_preserve", "near_duplicate_ratio"):
        if d["data"][key] is None:
            d["data"].pop(key)
    if d["eval_prompts_path"] is None:
        d.pop("eval_prompts_path")
    endpoint = d["eval"]["endpoint"]
    for key, default in (("rubric_parser", "strict"), ("template_scales", {}), ("skip_refusals", [])):
        if endpoint[key] == default:  # jobs from before these keys keep their hash
            endpoint.pop(key)
    for key, default in LATER_DEFAULTS.items():  # jobs from before these keys keep their hash
        if d["eval"]["attacks"][key] == default:
            d["eval"]["attacks"].pop(key)
    for key, default in (("perplexity_tail", "score"), ("qa_protocol", "harmcore"), ("lm_eval_protocol", "harmcore")):
        if d["eval"]["utility"][key] == default:
            d["eval"]["utility"].pop(key)
    if d["eval"]["collateral"]["path"] is None:  # jobs from before the collateral eval keep their hash
        d["eval"].pop("collateral")
    rec, later = d["eval"]["recognition"], ("detect_template", "explain_template", "reading", "explanation_judge_path")
    for key, default in zip(later, (None, None, "harmcore", None)):  # jobs from before these keys keep their hash
        if rec[key] == default:
            rec.pop(key)
    # jobs from before the recognition eval keep their hash; its wording also makes reverse-target data
    if not rec["enabled"] and not (d["data"].get("target", "harm") != "harm" and any(k in rec for k in later)):
        d["eval"].pop("recognition")
    return d
