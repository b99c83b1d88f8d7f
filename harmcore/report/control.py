"""Harm compression vs the compression of an ordinary capability (the control task).

A sweep that prunes one model with a harm domain AND with a QA domain (`experiment=control_task`)
gets `control.csv`, `control.json` and `control.png`: for each domain the compression
statistics of its curve (see `harmcore.report.compression`), and per (harm domain, QA domain)
the ratio s50(QA) / s50(harm): how many times more sparsity it takes to halve the
ordinary capability than to halve harm (> 1: harm is more compact).

Two measure kinds are compared like with like:

- ``judge``: keyword compliance rate on the harm domain, QA accuracy (alias
  match) on the QA domain;
- ``classifier``: the StrongREJECT classifier's score on the harm domain (when the jobs ran
  it), QA accuracy on the QA domain;
- ``likelihood``: mean exp(-NLL) of the dense model's own held-out answers, on either domain
  (judge-free).

Lower is "less of the behaviour" for both, so R(s) = 1 - M(s)/M(0) is read the same way.
"""

from __future__ import annotations

from pathlib import Path

from harmcore.files import atomic_write_csv, atomic_write_figure, atomic_write_json
from harmcore.report import measures, pairs
from harmcore.report.compression import compression_ratio

KINDS = {
    "judge": {"harm": "compliance", "control": "qa_accuracy"},
    "classifier": {"harm": "strongreject", "control": "qa_accuracy"},  # only when the classifier ran
    "likelihood": {"harm": "harm_likelihood", "control": "harm_likelihood"},
}
COLUMNS = [
    "model", "scorer", "p", "kind", "harm_domain", "control_domain", "harm_measure", "control_measure",
    "s50_harm", "s50_harm_lo", "s50_harm_hi", "s50_control", "s50_control_lo", "s50_control_hi",
    "auc_harm", "auc_harm_lo", "auc_harm_hi", "auc_control", "auc_control_lo", "auc_control_hi",
    "utility_at_s50_harm", "utility_at_s50_control", "ratio", "ratio_lo", "ratio_hi", "ratio_censored", "skipped",
]  # fmt: skip


def _is_control(member: pairs.Member) -> bool:
    return bool(member.rows["qa_accuracy"]) and all(r is not None for r in member.rows["qa_accuracy"])


def report(sweep_dir: Path, points: list[dict], n_resamples: int = 1000, seed: int = 0) -> dict | None:
    """Rows comparing every harm domain with every QA domain per (model, scorer, p); None without both."""
    by_model: dict[tuple, dict[str, pairs.Member]] = {}
    for (domain, scorer, p_frac), group in pairs.members(sweep_dir, points).items():
        for model, member in group.items():
            by_model.setdefault((model, scorer, p_frac), {})[domain] = member
    rows, curves = [], []
    for (model, scorer, p_frac), domains in by_model.items():
        controls = {d: m for d, m in domains.items() if _is_control(m)}
        harms = {d: m for d, m in domains.items() if d not in controls}
        for d, m in domains.items():
            role = "control" if d in controls else "harm"
            curve = {k: [None if r is None else sum(r) / len(r) for r in m.rows[k]] for k in measures.ALL}
            curves.append({"model": model, "scorer": scorer, "p": p_frac, "domain": d, "role": role, "s": m.s, **curve})
        ran = pairs.used_measures(harms.values())
        for kind, names in KINDS.items():
            if names["harm"] not in ran:
                continue
            for hd, hm in harms.items():
                h = pairs.member_stats(hm, names["harm"], n_resamples, seed)
                for cd, cm in controls.items():
                    c = pairs.member_stats(cm, names["control"], n_resamples, seed)
                    rows.append(_row(model, scorer, p_frac, kind, hd, cd, names, h, c))
    if not rows:
        return None
    ratio = "s50(control) / s50(harm); > 1 means harm halves at lower sparsity"
    return {"ratio": ratio, "rows": rows, "curves": curves}


def _row(model, scorer, p_frac, kind, hd, cd, names, h, c) -> dict:
    row = {
        "model": model,
        "scorer": scorer,
        "p": p_frac,
        "kind": kind,
        "harm_domain": hd,
        "control_domain": cd,
        "harm_measure": names["harm"],
        "control_measure": names["control"],
    }
    skipped = h.get("skipped") or c.get("skipped")
    if skipped:
        return {**row, "skipped": skipped}
    for tag, st in (("harm", h), ("control", c)):
        row.update(
            {
                f"s50_{tag}": st["s50"],
                f"s50_{tag}_lo": pairs.ci(st["s50_ci"], 0),
                f"s50_{tag}_hi": pairs.ci(st["s50_ci"], 1),
                f"auc_{tag}": st["auc"],
                f"auc_{tag}_lo": pairs.ci(st["auc_ci"], 0),
                f"auc_{tag}_hi": pairs.ci(st["auc_ci"], 1),
                f"utility_at_s50_{tag}": st["utility_at_s50"],
            }
        )
    ratio = compression_ratio(c, h)  # s50(control) / s50(harm): the first argument is the numerator
    row.update(
        ratio=ratio["ratio"],
        ratio_lo=pairs.ci(ratio["ratio_ci"], 0),
        ratio_hi=pairs.ci(ratio["ratio_ci"], 1),
        ratio_censored=ratio["censored"],
    )
    return row


def _plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    floor = min((s for c in rep["curves"] for s in c["s"] if s), default=1e-6) / 3
    for c in rep["curves"]:
        xs = [s or floor for s in c["s"]]
        judge = "qa_accuracy" if c["role"] == "control" else "compliance"
        label = f"{c['model']} {c['domain']} ({c['role']})"
        style = "s--" if c["role"] == "control" else "o-"
        for ax, key in ((axes[0], judge), (axes[1], "harm_likelihood")):
            if all(v is not None for v in c[key]):
                ax.plot(xs, c[key], style, label=label)
    axes[0].set_title("judge: keyword compliance (harm), QA accuracy (control, dashed)", fontsize=9)
    axes[1].set_title("likelihood of own held-out answers exp(-NLL)", fontsize=9)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("achieved sparsity (0 at the left edge)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write_figure(path, fig)


def write(sweep_dir, points: list[dict], n_resamples: int = 1000, seed: int = 0) -> dict | None:
    """Write control.csv, control.json and control.png when the sweep holds a harm and a QA domain."""
    sweep_dir = Path(sweep_dir)
    rep = report(sweep_dir, points, n_resamples, seed)
    if rep is None:
        return None
    atomic_write_csv(sweep_dir / "control.csv", rep["rows"], COLUMNS)
    atomic_write_json(sweep_dir / "control.json", rep)
    _plot(rep, sweep_dir / "control.png")
    return rep
