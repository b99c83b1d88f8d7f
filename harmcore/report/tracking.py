"""Local metrics first, W&B as a mirror.

Every job writes metrics.json itself; `WandbMirror` copies the config and the final
metrics into a W&B run (offline by default) grouped by model/domain/scorer. Keys that
look like secrets never reach W&B, and raw generations are uploaded only when
`upload_generations` is set.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

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
            for measure in ("harmfulness", "harm_nll", "benign_nll"):
                data = [[r["model"], math.log10(r["sparsity_achieved"]), r[measure]] for r in points]
                data = [d for d in data if isinstance(d[2], float)]
                if data:
                    table = wandb.Table(columns=["model", "log10_sparsity", measure], data=data)
                    chart = wandb.plot.line(table, "log10_sparsity", measure, stroke="model", title=f"{fam}: {measure}")
                    self.run.log({f"pairs/{fam}/{measure}": chart})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def read_wandb_file(path) -> dict:
    """Read an offline run file (run-<id>.wandb) without syncing it.

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then
    32 KiB blocks of records, each with a 7-byte header (crc32, length, type) and a
    protobuf `Record` payload, split across blocks as FIRST/MIDDLE/LAST pieces.
    Returns {"history": {key: last value}, "summary": {...}, "config": {...}, "group": str}.
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
    out = {"history": {}, "summary": {}, "config": {}, "group": None}
    for payload in payloads:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(payload)
        which = rec.WhichOneof("record_type")
        if which == "history":
            for item in rec.history.item:
                out["history"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif which == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif which == "run":
            out["group"] = rec.run.run_group
            for item in rec.run.config.update:
                out["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif which == "config":
            for item in rec.config.update:
                out["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
