"""report.html: one self-contained page per sweep (figures inlined), for those who keep W&B off.

Written by `aggregate` beside summary.json: the sweep's counts, one row per curve (headline
measure, s50, AUC and utility at s50 with their intervals, or why the curve has no numbers), the
pair report's compression ratios, every figure of the sweep folder, and the failed and missing jobs
with the last line of their error. Every text from a file is escaped; the page loads nothing.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

from harmcore.files import atomic_write_text
from harmcore.report.tracking import read_csv_rows

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.problem { color: #a00; }
"""


def _num(x, digits: int = 3) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _with_ci(value, ci) -> str:
    if value is None:
        return ""
    if not ci or ci[0] is None:
        return _num(value)
    return f"{_num(value)} [{_num(ci[0])}, {_num(ci[1])}]"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{html.escape(c)}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _curves(summary: dict) -> str:
    rows = []
    for c in summary.get("curves", []):
        rows.append([
            str(c.get("model")), str(c.get("harm_domain")), str(c.get("scorer")), _num(c.get("p")),
            str(c.get("measure", "")), str(c.get("n_points", "")),
            _with_ci(c.get("s50"), c.get("s50_ci")) + (" (left-censored)" if c.get("censored_left") else ""),
            _with_ci(c.get("auc"), c.get("auc_ci")), _with_ci(c.get("utility_at_s50"), c.get("utility_at_s50_ci")),
            str(c.get("skipped", "")),
        ])  # fmt: skip
    header = ["model", "domain", "scorer", "p", "measure", "points", "s50 [95 %]", "AUC [95 %]", "utility at s50",
              "no numbers because"]  # fmt: skip
    return _table(header, rows, numeric={3, 5, 6, 7, 8})


def _pairs(sweep_dir: Path) -> str:
    path = sweep_dir / "pairs.csv"
    if not path.exists():
        return ""
    rows = [r for r in read_csv_rows(path) if r.get("rung")]
    if not rows:
        return ""
    table = [
        [str(r["model"]), "aligned" if r.get("aligned") in (True, 1.0, "True") else "unaligned", str(r["reference"]),
         str(r["measure"]), _with_ci(r.get("ratio"), [r.get("ratio_lo"), r.get("ratio_hi")]),
         str(r.get("skipped") or ("" if r.get("ratio") is not None else "an s50 was not reached"))]
        for r in rows
    ]  # fmt: skip
    return "<h2>Compression ratios</h2>" + _table(
        ["model", "", "reference", "measure", "s50(reference) / s50(model) [95 %]", "no ratio because"], table, {4}
    )


def _figures(sweep_dir: Path) -> str:
    parts = []
    for png in sorted(sweep_dir.glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        name = html.escape(png.name)
        parts.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption>'
                     "</figure>")  # fmt: skip
    return "<h2>Figures</h2>" + "".join(parts) if parts else ""


def _problems(summary: dict) -> str:
    problems = summary.get("problems") or []
    if not problems:
        return "<p>No failed or missing jobs.</p>"
    rows = [[p["status"], p["job"], (p.get("error") or "").strip().splitlines()[-1][:300] if p.get("error") else ""]
            for p in problems]  # fmt: skip
    return '<h2 class="problem">Failed and missing jobs</h2>' + _table(["status", "job", "error"], rows)


def write(sweep_dir, summary: dict) -> Path:
    """Write `sweep_dir`/report.html from `summary` (aggregate's) and the sweep folder's files."""
    sweep_dir = Path(sweep_dir)
    name = html.escape(sweep_dir.name)
    counts = (f"{summary['n_points']} points, {summary['n_failed']} failed, {summary['n_missing']} missing; "
              f"written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")  # fmt: skip
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>harmcore sweep {name}</title>'
        f"<style>{STYLE}</style></head><body><h1>Sweep {name}</h1><p>{html.escape(counts)}</p>"
        f"<h2>Curves</h2>{_curves(summary)}{_pairs(sweep_dir)}{_figures(sweep_dir)}{_problems(summary)}"
        "<p>Intervals: Wilson for rates, percentile bootstrap over prompts for means and curve statistics "
        "(docs/method.md).</p></body></html>\n"
    )
    path = sweep_dir / "report.html"
    atomic_write_text(path, page)
    return path
