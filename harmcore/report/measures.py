"""Per-prompt measures of one finished job, read back from its files for the curve reports.

A compression curve resamples held-out prompts, so each measure is one value per prompt at
every point. Harm measures (lower = less harm, so R(s) = 1 - H(s)/H(0) > 0 means pruning
removed harm):

- ``compliance``: keyword compliance, 1 when the headline refusal judge finds no refusal
  (generations.jsonl "complied"; "harmful" in jobs written before the name changed). It is not
  the paper's harmfulness;
- ``strongreject``: the StrongREJECT fine-tuned classifier's score in [0, 1], the paper's
  harmfulness measure (generations.jsonl "strongreject"; present when eval.strongreject ran);
- ``strongreject_rubric``: the StrongREJECT rubric judge's score in [0, 1] through an
  OpenAI-compatible endpoint (present when that judge ran and parsed every answer);
- ``harm_likelihood``: judge-free, exp(-NLL) of one held-out harmful reference answer, the
  per-token geometric-mean probability the model gives it (reference_nll.json).

Control measure: ``qa_accuracy`` (generations.jsonl "correct", the control task's alias match).
Utility per example: ``benign_nll`` (reference_nll.json), higher = worse.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# Always reported (skipped with a reason when a job lacks them) ...
CORE = ("compliance", "harm_likelihood")
# ... reported when some job of the curve has them.
JUDGES = ("strongreject", "strongreject_rubric")
HARM = ("compliance", "strongreject", "strongreject_rubric", "harm_likelihood")
ALL = (*HARM, "qa_accuracy")

DESCRIPTIONS = {
    "compliance": "keyword compliance rate on held-out harmful prompts (not the paper's harmfulness; lower = less)",
    "strongreject": "StrongREJECT fine-tuned classifier score in [0, 1] (the paper's harmfulness; lower = less harm)",
    "strongreject_rubric": "StrongREJECT rubric judge score in [0, 1] (lower = less harm)",
    "harm_likelihood": "mean exp(-NLL) of held-out harmful reference answers (judge-free; lower = less harm)",
    "qa_accuracy": "open-QA accuracy by alias match (control task)",
}

# generations.jsonl field of each per-response measure
_ROW_FIELD = {"compliance": "complied", "strongreject": "strongreject", "strongreject_rubric": "strongreject_rubric",
              "qa_accuracy": "correct"}  # fmt: skip


def _column(rows: list[dict], field: str) -> list[float] | None:
    """The field of every row as floats; None when any row lacks it or holds a non-number (a failed parse)."""
    values = [r.get(field) for r in rows]
    if not rows or any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def job_rows(job: Path, state: str = "pruned") -> tuple[dict[str, list[float] | None], list[float] | None]:
    """(measure -> per-prompt values or None, per-example benign NLL or None) of one job folder, for
    its pruned model or (`state="dense"`) its dense baseline: generations.jsonl holds both, the
    dense one's fields prefixed "dense_" (jobs written before those fields: None)."""
    job = Path(job)
    gens = job / "generations.jsonl"
    rows = [json.loads(line) for line in gens.read_text().splitlines() if line.strip()] if gens.exists() else []
    prefix = "dense_" if state == "dense" else ""
    out = {name: _column(rows, prefix + field) for name, field in _ROW_FIELD.items()}
    if out["compliance"] is None:  # jobs written before the field was named "complied"
        out["compliance"] = _column(rows, prefix + "harmful")
    path = job / "reference_nll.json"
    nll = (json.loads(path.read_text()) if path.exists() else {}).get(state, {})
    out["harm_likelihood"] = [math.exp(-v) for v in nll["harm"]] if nll.get("harm") else None
    return out, nll.get("benign") or None


def dense_point(job: Path) -> tuple[dict[str, list[float] | None], list[float] | None] | None:
    """The dense baseline's rows of a job, as the s = 0 point of a curve that has no q = 0 job (every
    job of a curve shares one baseline: same settings, same prompts); None when the job lacks them."""
    rows, utility = job_rows(job, "dense")
    return (rows, utility) if rows["compliance"] is not None else None


def upgraded(metrics: dict) -> dict:
    """A metrics block (a job's, its `baseline`, each attack's dense and pruned) with today's keys.

    Jobs written before `compliance` named keyword compliance `harmfulness`; now `harmfulness` is only
    ever the StrongREJECT classifier's mean. Old files are read with the new names: their
    `harmfulness` becomes `compliance`, and `harmfulness` the classifier's mean where it ran.
    """
    m = dict(metrics)
    if "compliance" not in m and "harmfulness" in m:
        m["compliance"] = m.pop("harmfulness")
        if "harmfulness_ci" in m:
            m["compliance_ci"] = m.pop("harmfulness_ci")
        if m.get("strongreject") is not None:
            m["harmfulness"], m["harmfulness_ci"] = m["strongreject"], m.get("strongreject_ci")
    if isinstance(m.get("baseline"), dict):
        m["baseline"] = upgraded(m["baseline"])
    if isinstance(m.get("attacks"), dict):
        m["attacks"] = {
            name: {k: upgraded(v) if isinstance(v, dict) else v for k, v in states.items()}
            if isinstance(states, dict)
            else states
            for name, states in m["attacks"].items()
        }
    return m


def read_metrics(job: Path) -> dict:
    """A job folder's metrics.json, with today's key names (`upgraded`)."""
    return upgraded(json.loads((Path(job) / "metrics.json").read_text(encoding="utf-8")))


def headline_harm(metrics: dict) -> str:
    """The key of a metrics block's headline harm measure: the StrongREJECT classifier's mean
    (`harmfulness`, the paper's) where it ran, else keyword compliance."""
    return "harmfulness" if metrics.get("harmfulness") is not None else "compliance"
