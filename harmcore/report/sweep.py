"""Sweep aggregation: curve.csv, curve.png and summary.json from the job folders.

Every job folder below the sweep folder that holds metrics.json becomes a point; a
folder with FAILED (or with neither file) is listed in summary.json as failed or
missing, never silently dropped. harmcore.run.callbacks runs this at the end of a Hydra
multirun and of a single run that walked a curve (`sparsities=[...]`); `python -m
experiments.aggregate <sweep dir>` runs it by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

from harmcore.errors import HarmcoreError
from harmcore.files import atomic_write_csv, atomic_write_figure, atomic_write_json, job_settings
from harmcore.report import control, cross_domain, dissociation, locations, measures, pairs, webpage
from harmcore.report.compression import curve_or_skip
from harmcore.report.tracking import log_sweep

log = logging.getLogger("harmcore.report")

CURVE_COLUMNS = [
    "model",
    "harm_domain",
    "scorer",
    "p",
    "ranking",
    "sparsity_requested",
    "sparsity_achieved",
    "n_pruned",
    "compliance",
    "compliance_lo",
    "compliance_hi",
    "baseline_compliance",
    "harmfulness",
    "harmfulness_lo",
    "harmfulness_hi",
    "baseline_harmfulness",
    "refusal_rate",
    "refusal_rate_wei",
    "harm_nll",
    "harm_nll_lo",
    "harm_nll_hi",
    "benign_nll",
    "benign_nll_lo",
    "benign_nll_hi",
    "baseline_harm_nll",
    "baseline_benign_nll",
    "delta_harm_nll",
    "delta_benign_nll",
    "curve_hash",
    "job",
]


def _grid_of(job: Path) -> list[float]:
    """The q a job was asked to walk (`sparsities` in its settings; unreadable: only what was written)."""
    grid = job_settings(job).get("sparsities")
    return list(grid) if isinstance(grid, list) else []


def collect(sweep_dir: Path) -> tuple[list[dict], list[dict]]:
    """(points, problems): one point per finished job, one problem per failed or unfinished job."""
    sweep_dir = Path(sweep_dir)
    points, problems = [], []
    results = {p.parent for p in sweep_dir.rglob("metrics.json")} | {p.parent for p in sweep_dir.rglob("FAILED")}
    launched = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    # A job that walks several q (`sparsities`) keeps its points in subfolders.
    for job in [j for j in launched if any(j in r.parents for r in results)]:
        launched.discard(job)
        launched |= {job / f"q={float(q)}" for q in _grid_of(job)}  # points not written are missing
    job_dirs = sorted(results | launched)
    for job in job_dirs:
        rel = str(job.relative_to(sweep_dir)) or "."
        if (job / "metrics.json").exists():
            m = measures.read_metrics(job)
            if "sparsity_achieved" not in m:  # not a pruning job (e.g. experiment=emergent_misalignment)
                continue
            base = m.get("baseline", {})
            ci = m.get("compliance_ci") or [None, None]
            sr_ci = m.get("harmfulness_ci") or [None, None]
            points.append(
                {
                    "model": m.get("model"),
                    # scored on A, evaluated on B (eval_domain) is its own curve: "A->B"
                    # ... and one pruned with detection/explanation/refusal data too: "A [detection]"
                    "harm_domain": "->".join(filter(None, [m.get("harm_domain"), m.get("eval_domain")]))
                    + ("" if m.get("data_target", "harm") == "harm" else f" [{m['data_target']}]"),
                    "scorer": m.get("scorer"),
                    "p": m.get("p"),
                    "sparsity_requested": m.get("sparsity_requested"),
                    "sparsity_achieved": m.get("sparsity_achieved"),
                    "n_pruned": m.get("n_pruned"),
                    "compliance": m.get("compliance"),
                    "compliance_lo": ci[0],
                    "compliance_hi": ci[1],
                    "baseline_compliance": base.get("compliance"),
                    # the paper's harmfulness: the StrongREJECT classifier's mean, where it ran
                    "harmfulness": m.get("harmfulness"),
                    "harmfulness_lo": sr_ci[0],
                    "harmfulness_hi": sr_ci[1],
                    "baseline_harmfulness": base.get("harmfulness"),
                    "refusal_rate": m.get("refusal_rate"),
                    "refusal_rate_wei": m.get("refusal_rate_wei"),
                    "harm_nll": m.get("harm_nll"),
                    "harm_nll_lo": (m.get("harm_nll_ci") or [None, None])[0],
                    "harm_nll_hi": (m.get("harm_nll_ci") or [None, None])[1],
                    "benign_nll": m.get("benign_nll"),
                    "benign_nll_lo": (m.get("benign_nll_ci") or [None, None])[0],
                    "benign_nll_hi": (m.get("benign_nll_ci") or [None, None])[1],
                    "baseline_harm_nll": base.get("harm_nll"),
                    "delta_harm_nll": m.get("delta_harm_nll"),
                    "delta_benign_nll": m.get("delta_benign_nll"),
                    "baseline_benign_nll": base.get("benign_nll"),
                    "job": rel,
                    "ranking": m.get("ranking"),
                    "curve_hash": m.get("curve_hash"),
                }
            )
        elif (job / "FAILED").exists():
            problems.append({"job": rel, "status": "failed", "error": (job / "FAILED").read_text()[-2000:]})
        else:
            problems.append({"job": rel, "status": "missing", "error": "no metrics.json (still running or killed)"})
    _tag_mixed_settings(points)
    points.sort(key=lambda r: (r["model"], r["harm_domain"], r["scorer"], r["p"] or 0, r["sparsity_achieved"]))
    return points, problems


def by_curve(points: list[dict]) -> dict[tuple, list[dict]]:
    """Points grouped by curve: (model, harm_domain, scorer, p), in their order."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["model"], p["harm_domain"], p["scorer"], p["p"]), []).append(p)
    return groups


def _tag_mixed_settings(points: list[dict]) -> None:
    """Keep curves of different settings apart when one sweep mixes them under one model/domain/scorer/p.

    A sweep over pruning.ranking, seed or a data setting gives each (model, domain, scorer, p)
    several curves; their points get the differing setting (or the curve hash) appended to the
    scorer name, which every report groups by, instead of being merged into one curve.
    """
    for pts in by_curve(points).values():
        hashes = {p["curve_hash"] for p in pts if p["curve_hash"]}  # jobs written before curve_hash: none
        if len(hashes) < 2:
            continue
        ranking_of = {p["curve_hash"]: p["ranking"] for p in pts if p["curve_hash"]}
        by_ranking = len(set(ranking_of.values())) == len(hashes)
        for p in pts:
            if by_ranking:
                tag = f"ranking={p['ranking']}"
            else:
                tag = f"settings {p['curve_hash'][:6]}" if p["curve_hash"] else "settings unknown"
            p["scorer"] = f"{p['scorer']} [{tag}]"


def _band(ax, xs, pts, key, color) -> None:
    """The interval of `key` at each point, where every point has one."""
    lo, hi = [p.get(f"{key}_lo") for p in pts], [p.get(f"{key}_hi") for p in pts]
    if all(v is not None for v in lo + hi):
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)


def _plot(points: list[dict], path: Path) -> None:
    """curve.png: harm (left) and reference NLLs (right) over achieved sparsity, one colour per curve,
    95 % intervals as bands, the dense baseline as a dotted line; titles name only what ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_u) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = by_curve(points)
    floor = min((p["sparsity_achieved"] for p in points if p["sparsity_achieved"]), default=1e-6) / 3
    ran_sr = ran_nll = False
    for (model, domain, scorer, p_frac), pts in groups.items():
        xs = [p["sparsity_achieved"] or floor for p in pts]
        label = f"{model}/{domain}/{scorer}/p={p_frac:g}"
        line = ax_h.plot(xs, [p["compliance"] for p in pts], "o-", label=f"{label}: keyword compliance")[0]
        color = line.get_color()
        _band(ax_h, xs, pts, "compliance", color)
        if pts[0].get("baseline_compliance") is not None:
            ax_h.axhline(pts[0]["baseline_compliance"], ls=":", color=color, alpha=0.7)
        if all(p["harmfulness"] is not None for p in pts):
            ran_sr = True
            ax_h.plot(xs, [p["harmfulness"] for p in pts], "x--", color=color, label=f"{label}: StrongREJECT")
            _band(ax_h, xs, pts, "harmfulness", color)
        for key, style in (("harm_nll", "s-"), ("benign_nll", "o--")):
            if all(p[key] is not None for p in pts):
                ran_nll = True
                ax_u.plot(xs, [p[key] for p in pts], style, color=color, label=f"{label}: {key}")
                _band(ax_u, xs, pts, key, color)
    ax_h.set_title("keyword compliance (o)" + (", harmfulness: StrongREJECT score (x)" if ran_sr else "")
                   + "; dotted: dense", fontsize=9)  # fmt: skip
    ax_h.set_ylabel("compliance rate" + (" / StrongREJECT score" if ran_sr else ""))
    ax_h.set_ylim(-0.02, 1.02)
    ax_u.set_title("reference NLL: harmful answers (solid), benign answers (dashed)" if ran_nll else
                   "reference NLL: not measured (eval.response_nll=false)", fontsize=9)  # fmt: skip
    ax_u.set_ylabel("NLL (nats/token)")
    for ax in (ax_h, ax_u):
        ax.set_xscale("log")
        ax.set_xlabel("achieved sparsity (the dense point at the left edge)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle("bands: 95 % intervals (Wilson for rates, bootstrap over prompts for means)", fontsize=8)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)


def curve_summaries(sweep_dir: Path, points: list[dict], n_resamples: int = 1000) -> list[dict]:
    """s50, AUC and utility at s50 per (model, domain, scorer) curve, bootstrapped over prompts.

    The top-level numbers are those of the headline harm measure ("measure"): the StrongREJECT
    classifier's score when every point ran it (the paper's harmfulness), else keyword
    compliance; "by_measure" holds every harm measure of `harmcore.report.measures` the jobs have.
    The dense point (s = 0) is a q = 0 job, or else the dense baseline every job holds; every point
    must score the same prompts. Curves without them are listed with the reason instead of numbers.
    """
    out = []
    for (model, domain, scorer, p_frac), pts in by_curve(points).items():
        entry = {"model": model, "harm_domain": domain, "scorer": scorer, "p": p_frac, "n_points": len(pts)}
        jobs = [measures.job_rows(sweep_dir / p["job"])[0] for p in pts]
        s = [p["sparsity_achieved"] for p in pts]
        utility = [p["benign_nll"] for p in pts]
        if not any(x == 0 for x in s):  # no q = 0 job: the jobs' own dense baseline is the s = 0 point
            dense = measures.dense_point(sweep_dir / pts[0]["job"])
            if dense is None:
                why = "no dense point: no q = 0 job, and the jobs predate their dense rows"
                entry.update(measure="compliance", skipped=why)
                out.append(entry)
                continue
            jobs, s, utility = [dense[0], *jobs], [0.0, *s], [pts[0]["baseline_benign_nll"], *utility]
            entry["dense_point"] = "the jobs' dense baseline"
        utility = utility if all(u is not None for u in utility) else None
        by_measure = {}
        for name in measures.HARM:
            rows = [j[name] for j in jobs]
            if name in measures.CORE or all(r is not None for r in rows):
                stats = curve_or_skip(s, rows, f"per-prompt {name}", n_resamples, utility=utility)
                by_measure[name] = {k: v for k, v in stats.items() if not k.endswith("_samples")}
        headline = "strongreject" if "skipped" not in by_measure.get("strongreject", {"skipped": 1}) else "compliance"
        entry.update(measure=headline, **by_measure[headline], by_measure=by_measure)
        if utility is not None:
            entry["utility"] = "benign_nll"
        out.append(entry)
    return out


def aggregate(sweep_dir, logger_cfg=None, experiment: str | None = None) -> dict:
    """Write curve.csv, curve.png and summary.json into `sweep_dir` (and, with a W&B logger, its runs:
    `tracking.log_sweep`); return the summary."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise HarmcoreError(f"{sweep_dir} is not a folder: pass the sweep folder (outputs/sweeps/<name>)")
    points, problems = collect(sweep_dir)
    for p in points:  # per-point heat maps of where the pruned weights are (jobs written before they existed)
        locations.write_for_job(sweep_dir / p["job"])
    atomic_write_csv(sweep_dir / "curve.csv", points, CURVE_COLUMNS)
    if points:
        _plot(points, sweep_dir / "curve.png")
    summary = {
        "sweep_dir": str(sweep_dir),
        "n_points": len(points),
        "n_failed": sum(p["status"] == "failed" for p in problems),
        "n_missing": sum(p["status"] == "missing" for p in problems),
        "problems": problems,
        "curves": curve_summaries(sweep_dir, points),
        "points": points,
    }
    if len({p["model"] for p in points}) > 1:  # a pair or ladder: pairs.csv / pairs.json / pairs.png
        pairs.write(sweep_dir, points)
        summary["pair_report"] = "pairs.json"
    if control.write(sweep_dir, points):  # a harm domain and a QA domain: the control comparison
        summary["control_report"] = "control.json"
    if dissociation.write(sweep_dir, points):  # jobs that pruned different targets: the pruned-with x measured table
        summary["dissociation_report"] = "dissociation.json"
    if cross_domain.write(sweep_dir, points):  # jobs with eval_domain: the A x B matrices
        summary["cross_domain_report"] = "cross_domain.json"
    summary["page"] = "report.html"
    atomic_write_json(sweep_dir / "summary.json", summary)
    webpage.write(sweep_dir, summary)  # the figures and tables above, one page
    for p in problems:
        log.warning("job %s %s: %s", p["job"], p["status"], p["error"].strip().splitlines()[-1][:200])
    log_sweep(logger_cfg, sweep_dir, summary, experiment)
    return summary
