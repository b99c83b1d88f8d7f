"""Cross-domain pruning: score with harm domain A, evaluate on harm domain B (`eval_domain`).

The job evaluates on B's held-out prompts minus every prompt of A (harmcore.run.prepare).
- `write` turns a sweep over A x B into matrices: `cross_domain.csv` (one row per cell),
  `cross_domain_relative_reduction.csv` and `cross_domain_delta_harm_nll.csv` (rows:
  sparsity and scoring domain A, columns: evaluation domains B) and `cross_domain.png`.

Cell metrics: relative harm reduction R = 1 - H_pruned / H_dense on B's prompts (None when
H_dense = 0), H the cell's headline harm measure (`headline`): the StrongREJECT classifier's mean
(`harmfulness`, the paper's) where the jobs ran it, else keyword compliance (`compliance`);
delta_harm_nll = pruned minus
dense NLL (nats/token) of the dense model's own compliant answers to B's prompts
(judge-free; > 0 means pruning with A made B's harmful answers less likely).
"""

from __future__ import annotations

from pathlib import Path

from harmcore.files import atomic_write_csv, atomic_write_figure, atomic_write_json
from harmcore.report import plots
from harmcore.report.measures import headline_harm, read_metrics

MATRIX_METRICS = ("relative_reduction", "delta_harm_nll")


def cells(sweep_dir: Path, points: list[dict]) -> list[dict]:
    """One cell per cross-domain job (jobs run with eval_domain set), sorted by (q, A, B)."""
    out = []
    for p in points:
        m = read_metrics(Path(sweep_dir) / p["job"])
        if not m.get("eval_domain"):
            continue
        base = m.get("baseline", {})
        headline = headline_harm(base)
        h, h0 = m.get(headline), base.get(headline)
        out.append(
            {
                "sparsity": m["sparsity_requested"],
                "sparsity_achieved": m["sparsity_achieved"],
                "model": m["model"],
                "scorer": p.get("scorer", m["scorer"]),  # as the sweep report names it (tagged if mixed)
                "p": m.get("p"),
                "score_domain": m["harm_domain"],
                "eval_domain": m["eval_domain"],
                "compliance": m.get("compliance"),
                "baseline_compliance": base.get("compliance"),
                "harmfulness": m.get("harmfulness"),  # the StrongREJECT classifier's mean, where it ran
                "baseline_harmfulness": base.get("harmfulness"),
                "headline": headline,
                "relative_reduction": 1 - h / h0 if h is not None and h0 else None,
                "harm_nll": m.get("harm_nll"),
                "baseline_harm_nll": base.get("harm_nll"),
                "delta_harm_nll": m.get("delta_harm_nll"),
                "n_eval": m.get("n_eval"),
                "n_eval_overlap_removed": m.get("n_eval_overlap_removed"),
                "job": p["job"],
            }
        )
    return sorted(
        out, key=lambda c: (c["model"], c["scorer"], c["p"] or 0, c["sparsity"], c["score_domain"], c["eval_domain"])
    )


ROW_KEYS = ["model", "scorer", "p", "sparsity", "score_domain"]


def _row(c: dict) -> tuple:
    return tuple(c[k] for k in ROW_KEYS)


def _matrix(cs: list[dict], metric: str) -> tuple[list[str], list[tuple], dict]:
    cols = sorted({c["eval_domain"] for c in cs})
    rows = sorted({_row(c) for c in cs}, key=lambda r: (r[0], r[1], r[2] or 0, r[3], r[4]))
    values = {(_row(c), c["eval_domain"]): c[metric] for c in cs}
    return cols, rows, values


def _plot(cs: list[dict], path: Path) -> None:
    import numpy as np

    plt = plots.pyplot()
    cols, rows, _ = _matrix(cs, MATRIX_METRICS[0])
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(cols), 2 + 0.5 * len(rows)), squeeze=False)
    for ax, metric in zip(axes[0], MATRIX_METRICS):
        _, _, values = _matrix(cs, metric)
        grid = np.array([[values.get((r, c)) for c in cols] for r in rows], dtype=float)  # None -> nan
        several_p = len({r[2] for r in rows}) > 1
        labels = [f"{r[4]} q={r[3]:g}" + (f" p={r[2]:g}" if several_p else "") for r in rows]
        plots.annotated_heatmap(fig, ax, grid, labels, cols, "evaluated on (B)", "pruned with (A)", cmap="magma",
                                text_color="c")  # fmt: skip
        ax.set_title(metric, fontsize=9)
    fig.tight_layout()
    atomic_write_figure(path, fig)


def write(sweep_dir, points: list[dict]) -> list[dict] | None:
    """Write the cross-domain files into `sweep_dir` when the sweep holds cross-domain jobs; return the cells."""
    sweep_dir = Path(sweep_dir)
    cs = cells(sweep_dir, points)
    if not cs:
        return None
    atomic_write_csv(sweep_dir / "cross_domain.csv", cs, list(cs[0]))
    for metric in MATRIX_METRICS:
        cols, rows, values = _matrix(cs, metric)
        table = [{**dict(zip(ROW_KEYS, r)), **{c: values.get((r, c)) for c in cols}} for r in rows]
        atomic_write_csv(sweep_dir / f"cross_domain_{metric}.csv", table, [*ROW_KEYS, *cols])
    atomic_write_json(sweep_dir / "cross_domain.json", {"metrics": list(MATRIX_METRICS), "cells": cs})
    _plot(cs, sweep_dir / "cross_domain.png")
    return cs
