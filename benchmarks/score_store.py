"""Score storage: the compact store (`scorer.store=top`) against the full scores, bytes and seconds.

Random score tensors shaped like a model's prunable matrices (the values do not change the sizes):
SmolLM2-135M (30 decoder blocks, 106M weights) and a Llama-3.1-8B-shaped slice of `--layers8b`
decoder blocks (218M weights each; an 8B model has 32, so its full scores take 28 GB), each stored
full (`save_scores`) and compact for q_max = 1e-3 and p = 5e-5 (`save_top`, per-matrix ranking:
the harm file and the preserve file a job writes), then read back. The 8B columns scale the slice
by 32 / layers (stores and reads are linear in the number of matrices).

    python -m benchmarks.score_store [--layers8b 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit
from benchmarks.selection import SMOLLM2_BLOCK
from harmcore.core.score_store import load_scores, load_top, save_scores, save_top

LLAMA8B_BLOCK = {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096), "o_proj": (4096, 4096),
                 "gate_proj": (14336, 4096), "up_proj": (14336, 4096), "down_proj": (4096, 14336)}  # fmt: skip


def scores(block: dict, layers: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"model.layers.{i}.{n}": torch.randn(s, generator=gen) for i in range(layers) for n, s in block.items()}


def measure(block: dict, layers: int, folder: Path, q_max: float = 1e-3, p: float = 5e-5) -> dict:
    harm, preserve = scores(block, layers, 0), scores(block, layers, 1)
    shapes = {n: tuple(t.shape) for n, t in harm.items()}
    meta = {"method": "bench"}
    out = {}
    t = time.perf_counter()
    save_scores(harm, folder / "harm_full.safetensors", meta)
    save_scores(preserve, folder / "preserve_full.safetensors", meta)
    out["full_write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    load_scores(folder / "harm_full.safetensors", meta, shapes=shapes)
    load_scores(folder / "preserve_full.safetensors", meta, shapes=shapes)
    out["full_read_s"] = time.perf_counter() - t
    out["full_bytes"] = sum((folder / f"{k}_full.safetensors").stat().st_size for k in ("harm", "preserve"))
    for k in ("harm", "preserve"):
        (folder / f"{k}_full.safetensors").unlink()
    t = time.perf_counter()
    save_top(harm, folder / "harm_top.safetensors", meta, q_max, "per_matrix")
    save_top(preserve, folder / "preserve_top.safetensors", meta, p, "per_matrix")
    out["top_write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    load_top(folder / "harm_top.safetensors", meta, shapes, q_max, "per_matrix")
    load_top(folder / "preserve_top.safetensors", meta, shapes, p, "per_matrix")
    out["top_read_s"] = time.perf_counter() - t
    out["top_bytes"] = sum((folder / f"{k}_top.safetensors").stat().st_size for k in ("harm", "preserve"))
    out["bytes_ratio"] = out["full_bytes"] / out["top_bytes"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers8b", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, v in measure(SMOLLM2_BLOCK, 30, Path(tmp)).items():
            result[f"smollm2_{k}"] = v
        scale = 32 / args.layers8b
        for k, v in measure(LLAMA8B_BLOCK, args.layers8b, Path(tmp)).items():
            result[f"llama8b_{k}"] = v if k == "bytes_ratio" else v * scale
    result["llama8b_scaled_from_layers"] = args.layers8b
    emit(result, args.json, digits=3)


if __name__ == "__main__":
    main()
