"""Local metrics first, W&B as a mirror.

Every job writes metrics.json itself; `WandbMirror` copies the config and the final metrics into a
W&B run (offline by default). The runs of a sweep share one group (the sweep's name) and one W&B
folder (`<sweep dir>/wandb`, so that one `wandb sync` uploads them), carry tags (experiment, model,
family, aligned/unaligned, scorer, domain, protocol) and the sparsity in their config and summary,
so W&B's own charts can draw a compression curve over runs. `log_sweep` adds one run per curve
(sparsity as the step of every measure, s50 / AUC / compression ratio as summary numbers) and one
run with the sweep's report tables and figures. Keys that look like secrets never reach W&B, and
raw generations are uploaded only when `upload_generations` is set.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from pathlib import Path

from harmcore.files import job_settings

log = logging.getLogger("harmcore.tracking")

# A key names a secret when its last word is one of these: api_key, hf_token, client_secret, password;
# not max_new_tokens, response_tokens or api_key_env (the NAME of the variable that holds a key).
SECRET_WORDS = ("key", "apikey", "token", "secret", "password", "passwd", "credentials")


def is_secret_key(key) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", str(key).lower()) if w]
    return bool(words) and words[-1] in SECRET_WORDS


def strip_secrets(obj):
    """Drop dict entries whose key names a secret (api_key, hf_token, ...)."""
    if isinstance(obj, dict):
        return {k: strip_secrets(v) for k, v in obj.items() if not is_secret_key(k)}
    if isinstance(obj, list):
        return [strip_secrets(v) for v in obj]
    return obj


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float, bool, str)) or v is None:
            out[key] = v
    return out


def read_csv_rows(path) -> list[dict]:
    """A report CSV back as dicts, numbers as floats and empty cells as None."""

    def value(v: str):
        if v == "":
            return None
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


class WandbMirror:
    """One W&B run per job; a no-op when the logger is `none` or mode is `disabled`."""

    def __init__(
        self,
        logger_cfg,
        job_dir: Path,
        run_name: str,
        group: str,
        config: dict,
        job_type: str = "prune",
        run_id: str | None = None,
        tags: list[str] | None = None,
    ):
        self.cfg = logger_cfg
        self.run = None
        if logger_cfg.name != "wandb" or logger_cfg.mode == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            mode=logger_cfg.mode,
            dir=str(job_dir),
            name=run_name,
            group=group,
            job_type=job_type,
            tags=tags,
            config=strip_secrets(config),
            reinit="finish_previous",
            id=run_id,
            resume="allow" if run_id else None,
        )

    def log_final(self, metrics: dict, generations: list[dict] | None = None) -> None:
        if self.run is None:
            return
        flat = flatten(metrics)
        for k, v in flat.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.run.summary[k] = v
        self.run.log({k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if generations and self.cfg.upload_generations:
            import wandb

            cols = ["prompt", "response", "refusal"]
            table = wandb.Table(columns=cols, data=[[g.get(c) for c in cols] for g in generations])
            self.run.log({"generations": table})

    def log_reports(self, sweep_dir) -> None:
        """Every report of a sweep folder: each CSV as a W&B Table, each PNG as an image, and
        per model family one line plot per harm measure over log10 sparsity, one line per model."""
        if self.run is None:
            return
        import wandb

        sweep_dir = Path(sweep_dir)
        tables = {}
        for csv_path in sorted(sweep_dir.glob("*.csv")):
            rows = read_csv_rows(csv_path)
            if rows:
                tables[csv_path.stem] = rows
                cols = list(rows[0])
                self.run.log({csv_path.stem: wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])})
        for png in sorted(sweep_dir.glob("*.png")):
            self.run.log({f"{png.stem}_png": wandb.Image(str(png))})
        family = {r["model"]: r["family"] or "models" for r in tables.get("pairs", [])}
        for fam in sorted(set(family.values())):
            points = [
                r
                for r in tables.get("curve", [])
                if family.get(r["model"]) == fam and (r["sparsity_achieved"] or 0) > 0
            ]
            for measure in ("compliance", "harmfulness", "harm_nll", "benign_nll"):
                data = [[r["model"], math.log10(r["sparsity_achieved"]), r[measure]] for r in points]
                data = [d for d in data if isinstance(d[2], float)]
                if data:
                    table = wandb.Table(columns=["model", "log10_sparsity", measure], data=data)
                    chart = wandb.plot.line(table, "log10_sparsity", measure, stroke="model", title=f"{fam}: {measure}")
                    self.run.log({f"pairs/{fam}/{measure}": chart})

    def finish(self, hint: bool = True) -> None:
        """End the run; offline, say (with `hint`) where its files are and how to upload them."""
        if self.run is not None:
            folder = Path(self.run.settings.wandb_dir)
            self.run.finish()
            self.run = None
            if hint and self.cfg.mode == "offline":
                log.info(sync_hint(folder))


def tags(*, model: str, scorer: str, domain: str, protocol: str = "harmcore", family: str | None = None,
         aligned: bool | None = None, experiment: str | None = None) -> list[str]:  # fmt: skip
    """The tags of a job's or a curve's W&B run (W&B allows 64 characters per tag)."""
    out = [f"experiment:{experiment or 'none'}", f"model:{model}", f"scorer:{scorer}", f"domain:{domain}",
           f"protocol:{protocol}"]  # fmt: skip
    if family:
        out.append(f"family:{family}")
    if aligned is not None:
        out.append("aligned" if aligned else "unaligned")
    return [t[:64] for t in out]


def sparsity_fields(q: float, achieved: float | None = None) -> dict:
    """The sparsity of a point as W&B charts want it: q asked, achieved, and log10 of the achieved one."""
    s = q if achieved is None else achieved
    return {"sparsity": s, "log10_sparsity": math.log10(s) if s and s > 0 else None, "q": q}


def sync_hint(wandb_dir: Path) -> str:
    return f"W&B offline runs are in {wandb_dir}; upload them with: wandb sync {wandb_dir}/offline-run-*"


CURVE_MEASURES = (
    "compliance", "compliance_lo", "compliance_hi", "harmfulness", "harmfulness_lo", "harmfulness_hi",
    "refusal_rate", "refusal_rate_wei", "harm_nll", "benign_nll", "n_pruned",
)  # fmt: skip
CURVE_SUMMARY = ("measure", "n_points", "s50", "auc", "utility_at_s50", "reached", "monotone")
CURVE_KEY = ("model", "harm_domain", "scorer", "p")


def _curve_rows(sweep_dir: Path, points: list[dict]) -> list[dict]:
    """One row per point of a curve, sparsity first (the dense point too), with each job's utility numbers."""
    rows = []
    if points[0]["sparsity_achieved"] > 0:  # no q = 0 job: the dense baseline every job holds
        p0 = points[0]
        rows.append({"sparsity": 0.0, "compliance": p0["baseline_compliance"], "n_pruned": 0,
                     "harmfulness": p0["baseline_harmfulness"], "harm_nll": p0["baseline_harm_nll"],
                     "benign_nll": p0["baseline_benign_nll"]})  # fmt: skip
    for p in points:
        row = {**sparsity_fields(p["sparsity_requested"], p["sparsity_achieved"]), **{k: p[k] for k in CURVE_MEASURES}}
        try:
            metrics = json.loads((sweep_dir / p["job"] / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metrics = {}
        row.update(flatten(metrics.get("utility") or {}, "utility/"))
        rows.append(row)
    return [{k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} for r in rows]


def _curve_numbers(curve: dict, pair_rows: list[dict]) -> dict:
    """s50, AUC and utility at s50 with their intervals, and the compression ratio where a pair report has it."""
    numbers = {k: curve.get(k) for k in CURVE_SUMMARY}
    for name in ("s50", "auc", "utility_at_s50"):
        numbers[f"{name}_lo"], numbers[f"{name}_hi"] = curve.get(f"{name}_ci") or (None, None)
    for r in pair_rows:
        same = all(r.get(k) == curve.get(k) for k in ("model", "harm_domain", "scorer", "measure"))
        if same and r.get("ratio") is not None:
            numbers.update(ratio=r["ratio"], ratio_lo=r.get("ratio_lo"), ratio_hi=r.get("ratio_hi"),
                           ratio_reference=r.get("reference"))  # fmt: skip
    return {k: v for k, v in numbers.items() if v is not None}


def log_sweep(logger_cfg, sweep_dir, summary: dict, experiment: str | None = None) -> None:
    """One W&B run per curve of `summary` (aggregate's) and one with the sweep's reports, in one group."""
    if logger_cfg is None or logger_cfg.name != "wandb" or logger_cfg.mode == "disabled":
        return
    sweep_dir = Path(sweep_dir)
    group = sweep_dir.name
    pair_rows = read_csv_rows(sweep_dir / "pairs.csv") if (sweep_dir / "pairs.csv").exists() else []
    for curve in summary.get("curves", []):
        key = tuple(curve[k] for k in CURVE_KEY)
        points = [p for p in summary["points"] if tuple(p[k] for k in CURVE_KEY) == key]
        if not points:
            continue
        points.sort(key=lambda p: p["sparsity_achieved"])
        config = job_settings(sweep_dir / points[0]["job"])
        model = config.get("model") or {}
        run_tags = tags(model=curve["model"], scorer=curve["scorer"], domain=curve["harm_domain"],
                        protocol=config.get("protocol", "harmcore"), family=model.get("family"),
                        aligned=model.get("aligned"), experiment=experiment)  # fmt: skip
        settings = {k: v for k, v in config.items() if k not in ("sparsity", "sparsities")}
        settings.update(sweep=group, curve=dict(zip(CURVE_KEY, key)))
        name = "curve/" + "/".join(str(k) for k in key[:3])
        mirror = WandbMirror(logger_cfg, sweep_dir, name, group, settings, job_type="curve", tags=[*run_tags, "curve"])
        mirror.run.define_metric("sparsity")
        mirror.run.define_metric("*", step_metric="sparsity")
        for row in _curve_rows(sweep_dir, points):
            mirror.run.log(row)
        for k, v in _curve_numbers(curve, pair_rows).items():
            mirror.run.summary[k] = v
        mirror.finish(hint=False)
    config = {"sweep": group, "n_points": summary["n_points"], "n_failed": summary["n_failed"]}
    mirror = WandbMirror(logger_cfg, sweep_dir, f"sweep/{group}", group, config, job_type="sweep",
                         tags=[f"experiment:{experiment or 'none'}", "sweep"])  # fmt: skip
    mirror.log_reports(sweep_dir)
    mirror.log_final({"n_points": summary["n_points"], "n_failed": summary["n_failed"]})
    mirror.finish()


def read_wandb_file(path) -> dict:
    """Read an offline run file (run-<id>.wandb) without syncing it.

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then
    32 KiB blocks of records, each with a 7-byte header (crc32, length, type) and a
    protobuf `Record` payload, split across blocks as FIRST/MIDDLE/LAST pieces.
    Returns {"history": {key: last value}, "steps": [one dict per logged row], "summary": {...},
    "config": {...}, "group": str, "tags": [...], "name": str, "step_metrics": {metric: its step metric}}.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    block, pos, pieces, payloads = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a header: the block is padded
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            pieces = chunk
        elif kind == 3:
            pieces += chunk
        elif kind == 4:
            payloads.append(pieces + chunk)
        elif kind == 0 and length == 0:
            pos += block - pos % block if pos % block else 0
    out = {"history": {}, "steps": [], "summary": {}, "config": {}, "group": None, "tags": [], "name": None,
           "step_metrics": {}}  # fmt: skip
    for payload in payloads:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(payload)
        which = rec.WhichOneof("record_type")
        if which == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
            out["history"].update(row)
            out["steps"].append(row)
        elif which == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif which == "metric":
            out["step_metrics"][rec.metric.name or rec.metric.glob_name] = rec.metric.step_metric
        elif which == "run":
            out["group"] = rec.run.run_group
            out["tags"] = list(rec.run.tags)
            out["name"] = rec.run.display_name
            for item in rec.run.config.update:
                out["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif which == "config":
            for item in rec.config.update:
                out["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
