"""Aligned vs unaligned: compression statistics per model and the pair (or ladder) report.

A sweep that holds several models (e.g. `experiment=compression_pairs`) gets, per setting
(harm domain, scorer, p):

- per member and per harm measure: the harm curve H(s) and the utility curve U(s) over
  achieved sparsity s, s50, AUC of R(s) = 1 - H(s)/H(0) over log10 s, and U at s50, each
  with a percentile bootstrap CI over prompts (`harmcore.compression.bootstrap_curve`);
- per ladder rung after the first: the compression ratio s50(first) / s50(rung), e.g.
  s50(base) / s50(instruct) for a pair, with a CI from resamples paired by index.

Harm measures (`harmcore.report.measures`; lower = less harm, so that R > 0 means pruning removed
harm): always keyword compliance (``compliance``) and the judge-free ``harm_likelihood``;
the StrongREJECT classifier (``strongreject``, the paper's measure) and rubric judge
(``strongreject_rubric``) when the jobs ran them.

Utility: ``benign_nll``, the mean NLL (nats/token) of the dense model's own answers to
held-out benign instructions; HIGHER is worse. Its CI resamples those instructions.

The ladder is `ladder` from the jobs' config when given, else within each model family the
unaligned models first, then the aligned ones (by name). s50 is never extrapolated: a curve
that does not halve has s50 None ("not reached") and no ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harmcore.files import atomic_write_csv, atomic_write_figure, atomic_write_json
from harmcore.measure.stats import interval
from harmcore.report import measures
from harmcore.report.compression import compression_ratio, curve_or_skip

UTILITY = "benign_nll"

CSV_COLUMNS = [
    "harm_domain", "scorer", "p", "family", "rung", "model", "aligned", "reference", "measure", "n_points",
    "n_prompts", "s50", "s50_lo", "s50_hi", "reached", "censored_left", "reached_fraction", "monotone", "auc", "auc_lo",
    "auc_hi", "utility_at_s50", "utility_at_s50_lo", "utility_at_s50_hi", "ratio", "ratio_lo", "ratio_hi",
    "ratio_censored", "skipped",
]  # fmt: skip


@dataclass
class Member:
    """One model's curve in one setting: per point s, per-prompt harm rows and per-example utility rows."""

    model: str
    aligned: bool | None
    family: str
    ladder: list[str] | None
    s: list[float] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    rows: dict[str, list[list[float] | None]] = field(default_factory=lambda: {m: [] for m in measures.ALL})
    utility: list[list[float] | None] = field(default_factory=list)


def members(sweep_dir: Path, points: list[dict]) -> dict[tuple, dict[str, Member]]:
    """(harm_domain, scorer, p) -> model -> Member, from the jobs of `points` (report.collect rows)."""
    out: dict[tuple, dict[str, Member]] = {}
    for p in sorted(points, key=lambda r: r["sparsity_achieved"]):
        job = Path(sweep_dir) / p["job"]
        m = measures.read_metrics(job)
        setting = (p["harm_domain"], p["scorer"], p["p"])
        member = out.setdefault(setting, {}).setdefault(
            p["model"], Member(p["model"], m.get("model_aligned"), m.get("model_family") or "", m.get("ladder"))
        )
        harm, utility = measures.job_rows(job)
        member.s.append(p["sparsity_achieved"])
        member.jobs.append(p["job"])
        for name in measures.ALL:
            member.rows[name].append(harm[name])
        member.utility.append(utility)
    for group in out.values():  # a member without a q = 0 job: its jobs' dense baseline is its s = 0 point
        for member in group.values():
            dense = measures.dense_point(Path(sweep_dir) / member.jobs[0]) if 0 not in member.s else None
            if dense is not None:
                member.s.insert(0, 0.0)
                member.jobs.insert(0, f"{member.jobs[0]} (dense baseline)")
                for name in measures.ALL:
                    member.rows[name].insert(0, dense[0][name])
                member.utility.insert(0, dense[1])
    return out


def used_measures(group) -> list[str]:
    """The harm measures a group of members reports: the core ones, and each judge some member ran."""
    ran = {k for m in group for k in measures.JUDGES if any(r is not None for r in m.rows[k])}
    return [k for k in measures.HARM if k in measures.CORE or k in ran]


def ladders(group: dict[str, Member]) -> list[list[str]]:
    """Ordered model lists: the configured ladder, else per family unaligned before aligned."""
    given = next((m.ladder for m in group.values() if m.ladder), None)
    if given:
        return [[name for name in given if name in group]]
    families: dict[str, list[Member]] = {}
    for m in group.values():
        families.setdefault(m.family, []).append(m)
    return [[m.model for m in sorted(ms, key=lambda m: (bool(m.aligned), m.model))] for ms in families.values()]


def member_stats(member: Member, measure: str, n_resamples: int, seed: int) -> dict:
    utility = member.utility
    if any(u is None for u in utility) or len({len(u) for u in utility}) != 1:
        utility = None
    return curve_or_skip(member.s, member.rows[measure], f"per-prompt {measure}", n_resamples, seed, utility)


def ci(x, i):
    return None if x is None else x[i]


def _ci(values, n_resamples: int, seed: int) -> list[float] | None:
    return None if values is None else list(interval(values, n_resamples, seed=seed))


def report(sweep_dir: Path, points: list[dict], n_resamples: int = 1000, seed: int = 0) -> dict:
    """The pair/ladder report as a JSON-able dict (see the module docstring); also its CSV rows under "rows"."""
    settings, rows, used = [], [], []
    for (domain, scorer, p_frac), group in members(sweep_dir, points).items():
        names = used_measures(group.values())
        used += [k for k in names if k not in used]
        for ladder in ladders(group):
            entry = {"harm_domain": domain, "scorer": scorer, "p": p_frac, "ladder": ladder, "members": []}
            ref_stats = {}
            for rung, name in enumerate(ladder):
                m = group[name]
                stats = {k: member_stats(m, k, n_resamples, seed) for k in names}
                member = {
                    "model": name,
                    "aligned": m.aligned,
                    "family": m.family,
                    "rung": rung,
                    "curve": {
                        "s": m.s,
                        "jobs": m.jobs,
                        **{k: [None if r is None else sum(r) / len(r) for r in m.rows[k]] for k in names},
                        UTILITY: [None if u is None else sum(u) / len(u) for u in m.utility],
                        # 95 % interval at each point (Wilson for rates, bootstrap over prompts for means)
                        **{f"{k}_ci": [_ci(r, n_resamples, seed) for r in m.rows[k]] for k in names},
                        f"{UTILITY}_ci": [_ci(u, n_resamples, seed) for u in m.utility],
                    },
                    "stats": {},
                    "ratio": {},
                }
                for k, st in stats.items():
                    member["stats"][k] = {a: b for a, b in st.items() if not a.endswith("_samples")}
                    ratio = None
                    if rung == 0:
                        ref_stats[k] = st
                    elif "skipped" not in st and "skipped" not in ref_stats[k]:
                        ratio = compression_ratio(ref_stats[k], st)
                        member["ratio"][k] = {a: b for a, b in ratio.items() if a != "ratio_samples"}
                    rows.append(_csv_row(domain, scorer, p_frac, member, ladder[0], k, st, ratio))
                entry["members"].append(member)
            settings.append(entry)
    return {
        "measures": {k: measures.DESCRIPTIONS[k] for k in measures.HARM if k in used or k in measures.CORE},
        "utility": "benign_nll: NLL (nats/token) of the dense model's own held-out benign answers (higher = worse)",
        "ratio": "s50(ladder[0]) / s50(rung); for a pair s50(base) / s50(instruct)",
        "n_resamples": n_resamples,
        "seed": seed,
        "settings": settings,
        "rows": rows,
    }


def _csv_row(domain, scorer, p_frac, member, reference, measure, st, ratio) -> dict:
    skipped = st.get("skipped")
    row = {
        "harm_domain": domain,
        "scorer": scorer,
        "p": p_frac,
        "family": member["family"],
        "rung": member["rung"],
        "model": member["model"],
        "aligned": member["aligned"],
        "reference": reference,
        "measure": measure,
        "n_points": len(member["curve"]["s"]),
        "skipped": skipped or "",
    }
    if skipped:
        return row
    row.update(
        n_prompts=st["n_prompts"],
        s50=st["s50"],
        s50_lo=ci(st["s50_ci"], 0),
        s50_hi=ci(st["s50_ci"], 1),
        reached=st["reached"],
        censored_left=st["censored_left"],
        reached_fraction=st["reached_fraction"],
        monotone=st["monotone"],
        auc=st["auc"],
        auc_lo=ci(st["auc_ci"], 0),
        auc_hi=ci(st["auc_ci"], 1),
        utility_at_s50=st["utility_at_s50"],
        utility_at_s50_lo=ci(st["utility_at_s50_ci"], 0),
        utility_at_s50_hi=ci(st["utility_at_s50_ci"], 1),
    )
    if ratio is not None:
        row.update(
            ratio=ratio["ratio"],
            ratio_lo=ci(ratio["ratio_ci"], 0),
            ratio_hi=ci(ratio["ratio_ci"], 1),
            ratio_censored=ratio["censored"],
        )
    return row


def _plot(rep: dict, path: Path) -> None:
    """pairs.png: one panel per harm measure and one for utility; aligned members solid, unaligned
    dashed; 95 % bands at each point; s50 as a vertical line with its interval shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*rep["measures"], UTILITY]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    for entry in rep["settings"]:
        s_all = [s for m in entry["members"] for s in m["curve"]["s"] if s]
        floor = min(s_all, default=1e-6) / 3
        for m in entry["members"]:
            xs = [s or floor for s in m["curve"]["s"]]
            kind = {True: "aligned", False: "unaligned"}.get(m["aligned"], "alignment unknown")
            label = f"{m['model']} ({kind}; {entry['harm_domain']}/{entry['scorer']})"
            style = "o-" if m["aligned"] else "s--"
            for ax, key in zip(axes, panels):
                ys = m["curve"].get(key)
                if ys is None or any(y is None for y in ys):
                    continue
                line = ax.plot(xs, ys, style, label=label)[0]
                cis = m["curve"].get(f"{key}_ci")
                if cis and all(c is not None for c in cis):
                    ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.15,
                                    linewidth=0)  # fmt: skip
                st = m["stats"].get(key, {})
                if key != UTILITY and st.get("s50") is not None:
                    ax.axvline(st["s50"], ls=":", color=line.get_color(), alpha=0.8)
                    if st.get("s50_ci"):
                        ax.axvspan(*st["s50_ci"], color=line.get_color(), alpha=0.08)
    titles = {
        "compliance": "keyword compliance rate",
        "strongreject": "StrongREJECT classifier score",
        "strongreject_rubric": "StrongREJECT rubric judge score",
        "harm_likelihood": "harm likelihood exp(-NLL)",
        UTILITY: "utility: benign NLL (nats/token; higher = worse)",
    }
    for ax, key in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_xlabel("achieved sparsity (the dense point at the left edge)")
        ax.set_ylabel(titles[key])
        ax.set_title(titles[key] + ("" if key == UTILITY else "; dotted: s50 (shaded: its 95 % interval)"), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("solid: aligned, dashed: unaligned; bands: 95 % intervals at each point", fontsize=8)
    fig.tight_layout()
    atomic_write_figure(path, fig)


def write(sweep_dir, points: list[dict], n_resamples: int = 1000, seed: int = 0) -> dict:
    """Write pairs.json, pairs.csv and pairs.png into `sweep_dir`; return the report."""
    sweep_dir = Path(sweep_dir)
    rep = report(sweep_dir, points, n_resamples, seed)
    atomic_write_csv(sweep_dir / "pairs.csv", rep["rows"], CSV_COLUMNS)
    atomic_write_json(sweep_dir / "pairs.json", {k: v for k, v in rep.items() if k != "rows"})
    _plot(rep, sweep_dir / "pairs.png")
    return rep
