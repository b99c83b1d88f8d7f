"""Selection speed: per-matrix, per-row and exact global top-k vs a concatenate-and-sort baseline.

Scores are random tensors shaped like a model's prunable matrices (SmolLM2-135M by default:
210 matrices, 106M weights). `*_s` columns time a whole set difference (harm top-q minus
preserve top-p, p = 5e-5, with input checks). The global top-k alone is compared with a
baseline that concatenates every score and runs one topk (which needs a full copy of the
scores; harmcore's exact search does not). `sweep` times the masks of a 10-point grid made
one set difference at a time vs through one shared `SetDifference` (as a grouped job does).

    python -m benchmarks.selection [--layers N] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit
from harmcore.core.selection import SetDifference, _global_topk, set_difference

SMOLLM2_BLOCK = {  # (out, in) of one decoder block's linears
    "q_proj": (576, 576),
    "k_proj": (192, 576),
    "v_proj": (192, 576),
    "o_proj": (576, 576),
    "gate_proj": (1536, 576),
    "up_proj": (1536, 576),
    "down_proj": (576, 1536),
}


def fake_scores(layers: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        f"model.layers.{i}.{name}": torch.randn(shape, generator=gen)
        for i in range(layers)
        for name, shape in SMOLLM2_BLOCK.items()
    }


def baseline_global(scores: dict[str, torch.Tensor], q: float) -> int:
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = int(q * flat.numel())
    return int(torch.topk(flat, k, sorted=False).indices.numel()) if k else 0


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    harm, keep = fake_scores(args.layers, 0), fake_scores(args.layers, 1)
    n = sum(s.numel() for s in harm.values())
    rows = []
    for q in (1e-5, 1e-4, 1e-3, 1e-2):
        row = {"q": q}
        for ranking in ("per_matrix", "per_row", "global"):
            row[f"{ranking}_s"] = round(timed(lambda r=ranking, q=q: set_difference(harm, keep, q, 5e-5, r)), 3)
        k = int(q * n)
        row["global_topk_only_s"] = round(timed(lambda k=k: _global_topk(harm, k)), 3)
        row["baseline_global_concat_topk_s"] = round(timed(lambda q=q: baseline_global(harm, q)), 3)
        row["global_topk_vs_baseline"] = round(row["global_topk_only_s"] / row["baseline_global_concat_topk_s"], 2)
        rows.append(row)
    # A 10-point sweep: one set difference per q vs one shared selector (checks and preserve top-p
    # once, sorted top-q_max per matrix, each q a prefix); the masks are checked equal.
    grid = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2]
    independent, shared = [], []
    per_q_s = timed(lambda: independent.extend(set_difference(harm, keep, q, 5e-5) for q in grid))

    def sweep():
        sel = SetDifference(harm, keep, 5e-5)
        sel.prepare(max(grid))
        shared.extend(sel.mask(q) for q in grid)

    shared_s = timed(sweep)
    same = all(a.indices.keys() == b.indices.keys() and all(torch.equal(a.indices[k], b.indices[k]) for k in a.indices)
               for a, b in zip(independent, shared))  # fmt: skip
    sweep_row = {"points": len(grid), "per_q_set_difference_s": round(per_q_s, 3), "shared_selector_s":
                 round(shared_s, 3), "speedup": round(per_q_s / shared_s, 2), "masks_equal": same}  # fmt: skip
    emit({"matrices": len(harm), "weights": n, "rows": rows, "sweep": sweep_row}, args.json)


if __name__ == "__main__":
    main()
