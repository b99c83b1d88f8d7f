"""`harmcore serve PATH`: one model behind vLLM's OpenAI-compatible server, bound to loopback.

PATH is a job folder (its pruned model is exported first, to JOB_DIR/checkpoint or --out, once),
an exported folder (its files are checked against harmcore.json before serving), or any local
model folder (e.g. a judge model).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from harmcore.errors import HarmcoreError
from harmcore.generation.server import serve_until_stopped
from harmcore.run import export

log = logging.getLogger("harmcore.serve")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def target(path: str | os.PathLike, out: str | os.PathLike | None = None) -> tuple[Path, dict | None]:
    """The model folder to serve for `path` and its export record (None for a plain model folder)."""
    p = Path(path).expanduser()
    if (p / export.RECORD).is_file():
        return p, export.verify(p)
    if export.is_job_folder(p):
        folder = export.export(export.read_job(p), out)
        return folder, json.loads((folder / export.RECORD).read_text(encoding="utf-8"))
    if (p / "config.json").is_file():
        return p, None
    raise HarmcoreError(
        f"{path} is neither a job folder (metrics.json, mask.safetensors), an exported model ({export.RECORD}) "
        "nor a model folder (config.json): give one of those"
    )


def context_length(folder: Path, wanted: int) -> int:
    """`wanted`, lowered to the model's own maximum where its config.json gives a smaller one."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return wanted
    cfg = cfg.get("text_config") or cfg
    limit = cfg.get("max_position_embeddings")
    return min(wanted, int(limit)) if isinstance(limit, int) and limit > 0 else wanted


def serve(
    path: str,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    name: str | None = None,
    api_key: str | None = None,
    dtype: str | None = None,
    max_model_len: int = 2048,
    out: str | None = None,
) -> None:
    folder, record = target(path, out)
    if record is not None:
        log.info("serving the export of %s (q=%g, %d weights pruned, mask %s)", record["job"], record["q"],
                 record["n_pruned"], record["mask_sha256"][:16])  # fmt: skip
    if host not in LOOPBACK and not (api_key or os.environ.get("VLLM_API_KEY")):
        log.warning("serving on %s without an API key: anyone who reaches the port can query the model", host)
    serve_until_stopped(
        folder,
        host=host,
        port=port,
        served_name=name or (record or {}).get("served_name") or folder.name,
        dtype=dtype or ((record or {}).get("source_model") or {}).get("dtype") or "bfloat16",
        max_model_len=context_length(folder, max_model_len),
        api_key=api_key,
    )
