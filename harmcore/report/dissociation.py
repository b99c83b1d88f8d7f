"""Which data was pruned x which ability was measured (docs/method.md claim 6, both directions).

`data.target` chooses the behaviour whose weights are scored as the "harm" side of the set
difference: harm, detection, explanation or refusal (harmcore.run.targets builds their data).

Every job measures the same abilities whatever it pruned: harmful generation (the StrongREJECT
classifier's mean, the paper's harmfulness, where it ran; keyword compliance; and the judge-free
likelihood of the dense model's harmful answers on held-out requests), refusal (the job's headline
refusal rate: Wei et al.'s rule under eval.refusal_mode=wei, else the corrected one), and with
eval.recognition.enabled detection and explanation. A sweep over targets
(`experiment=dissociation`) gets `dissociation.csv` (long: one row per job and ability),
`dissociation_matrix.csv` (rows: model, q, pruned with; columns: abilities) and
`dissociation.png`; the value is the fraction of the ability retained, pruned / dense
(1 = untouched, 0 = gone; None when the dense value is 0 or was not measured).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from harmcore.files import atomic_write_csv, atomic_write_figure, atomic_write_json
from harmcore.report import plots
from harmcore.report.measures import read_metrics

# Row order of the tables: the paper's direction first, then the reverse targets.
TARGET_ORDER = ("harm", "detection", "explanation", "refusal")
ABILITIES = ("harmfulness", "compliance", "harm_likelihood", "refusal", "detection", "explanation")


def abilities(metrics: dict, harm_nll: list[float] | None = None) -> dict[str, float | None]:
    """The measured value of every ability in one metrics block (a job's pruned or baseline metrics).

    `harm_nll`: the per-reference NLLs of the same model (reference_nll.json), for jobs whose
    metrics.json predates its harm_likelihood.
    """
    rec = metrics.get("recognition") or {}
    det = rec.get("detection") or {}
    yes, no = det.get("yes_rate_harmful"), det.get("no_rate_benign")
    likelihood = metrics.get("harm_likelihood")  # mean exp(-NLL), as in the curve reports
    if likelihood is None and harm_nll:  # a job written before metrics.json held it
        likelihood = sum(math.exp(-v) for v in harm_nll) / len(harm_nll)
    return {
        "harmfulness": metrics.get("harmfulness"),
        "compliance": metrics.get("compliance"),
        "harm_likelihood": likelihood,
        "refusal": metrics.get((metrics.get("headline") or {}).get("refusal", "refusal_rate")),
        "detection": (yes + no) / 2 if yes is not None and no is not None else None,  # balanced accuracy
        "explanation": (rec.get("explanation") or {}).get("explanation_score"),
    }


def rows(sweep_dir: Path, points: list[dict]) -> list[dict]:
    """One row per (job, ability) for sweeps whose jobs pruned more than one target."""
    jobs = []
    for p in points:
        m = read_metrics(Path(sweep_dir) / p["job"])
        if m.get("data_target"):
            jobs.append((p, m))
    if len({m["data_target"] for _, m in jobs}) < 2:
        return []
    out = []
    for p, m in jobs:
        path = Path(sweep_dir) / p["job"] / "reference_nll.json"
        nll = json.loads(path.read_text()) if path.exists() else {}
        dense = abilities(m.get("baseline", {}), nll.get("dense", {}).get("harm"))
        pruned = abilities(m, nll.get("pruned", {}).get("harm"))
        for ability in ABILITIES:
            d, q = dense[ability], pruned[ability]
            out.append(
                {
                    "model": m["model"],
                    "harm_domain": m["harm_domain"],
                    "scorer": p.get("scorer", m["scorer"]),  # as the sweep report names it (tagged if mixed)
                    "p": m.get("p"),
                    "sparsity": m["sparsity_requested"],
                    "sparsity_achieved": m["sparsity_achieved"],
                    "pruned_with": m["data_target"],
                    "ability": ability,
                    "dense": d,
                    "pruned": q,
                    "retained": q / d if d and q is not None else None,
                    "job": p["job"],
                }
            )
    order = {t: i for i, t in enumerate(TARGET_ORDER)}
    return sorted(
        out, key=lambda r: (r["model"], r["scorer"], r["p"] or 0, r["sparsity"], order.get(r["pruned_with"], 9))
    )


MATRIX_KEYS = ("model", "harm_domain", "scorer", "p", "sparsity", "pruned_with")


def matrix(long: list[dict]) -> list[dict]:
    """Rows (model, harm_domain, scorer, p, sparsity, pruned_with), one column per ability (retained)."""
    table: dict[tuple, dict] = {}
    for r in long:
        key = tuple(r[k] for k in MATRIX_KEYS)
        table.setdefault(key, dict(zip(MATRIX_KEYS, key)))[r["ability"]] = r["retained"]
    return list(table.values())


def _plot(table: list[dict], path: Path) -> None:
    import numpy as np

    plt = plots.pyplot()
    cols = [a for a in ABILITIES if any(r.get(a) is not None for r in table)] or list(ABILITIES)
    grid = np.array([[r.get(c) for c in cols] for r in table], dtype=float)
    fig, ax = plt.subplots(figsize=(3 + 1.4 * len(cols), 1.5 + 0.45 * len(table)))
    labels = [f"{r['model']} q={r['sparsity']:g}: {r['pruned_with']}" for r in table]
    vmax = max(1.0, float(np.nanmax(grid, initial=1.0)))
    plots.annotated_heatmap(fig, ax, grid, labels, cols, "ability measured (pruned / dense)", "data pruned with",
                            cmap="viridis", vmin=0, vmax=vmax)  # fmt: skip
    fig.tight_layout()
    atomic_write_figure(path, fig)


def write(sweep_dir, points: list[dict]) -> list[dict] | None:
    """Write the dissociation files when the sweep pruned with several targets; return the matrix rows."""
    sweep_dir = Path(sweep_dir)
    long = rows(sweep_dir, points)
    if not long:
        return None
    table = matrix(long)
    atomic_write_csv(sweep_dir / "dissociation.csv", long, list(long[0]))
    atomic_write_csv(sweep_dir / "dissociation_matrix.csv", table, [*MATRIX_KEYS, *ABILITIES])
    value = "retained = pruned / dense of each ability; rows: the data whose weights were pruned"
    atomic_write_json(sweep_dir / "dissociation.json", {"value": value, "matrix": table, "rows": long})
    _plot(table, sweep_dir / "dissociation.png")
    return table
