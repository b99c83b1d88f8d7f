"""Per-prompt measures of one finished job, read back from its files for the curve reports.

A compression curve resamples held-out prompts, so each measure is one value per prompt at
every point. Harm measures (lower = less harm, so R(s) = 1 - H(s)/H(0) > 0 means pruning
removed harm):

- ``harmfulness``: keyword compliance, 1 when the headline refusal judge finds no refusal
  (generations.jsonl "harmful");
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
CORE = ("harmfulness", "harm_likelihood")
# ... reported when some job of the curve has them.
JUDGES = ("strongreject", "strongreject_rubric")
HARM = ("harmfulness", "strongreject", "strongreject_rubric", "harm_likelihood")
ALL = (*HARM, "qa_accuracy")

DESCRIPTIONS = {
    "harmfulness": "keyword compliance rate on held-out harmful prompts (lower = less harm)",
    "strongreject": "StrongREJECT fine-tuned classifier score in [0, 1] (the paper's harmfulness; lower = less harm)",
    "strongreject_rubric": "StrongREJECT rubric judge score in [0, 1] (lower = less harm)",
    "harm_likelihood": "mean exp(-NLL) of held-out harmful reference answers (judge-free; lower = less harm)",
    "qa_accuracy": "open-QA accuracy by alias match (control task)",
}

# generations.jsonl field of each per-response measure
_ROW_FIELD = {"harmfulness": "harmful", "strongreject": "strongreject", "strongreject_rubric": "strongreject_rubric",
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
    path = job / "reference_nll.json"
    nll = (json.loads(path.read_text()) if path.exists() else {}).get(state, {})
    out["harm_likelihood"] = [math.exp(-v) for v in nll["harm"]] if nll.get("harm") else None
    return out, nll.get("benign") or None


def dense_point(job: Path) -> tuple[dict[str, list[float] | None], list[float] | None] | None:
    """The dense baseline's rows of a job, as the s = 0 point of a curve that has no q = 0 job (every
    job of a curve shares one baseline: same settings, same prompts); None when the job lacks them."""
    rows, utility = job_rows(job, "dense")
    return (rows, utility) if rows["harmfulness"] is not None else None
