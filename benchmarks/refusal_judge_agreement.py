"""Agreement of the refusal keyword judge modes with hand labels.

Scores every response in the labelled fixture with ``RefusalKeywordJudge`` in
"wei" and "corrected" mode and prints accuracy, precision and recall, with
refusal as the positive class. The fixture deliberately over-samples the cases
where the two modes disagree, so the numbers compare the rules; they are not
an estimate of either rule's accuracy on real model outputs.

Run from the repository root:

    python -m benchmarks.refusal_judge_agreement [--errors]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURE = REPO_ROOT / "tests" / "unit" / "fixtures" / "refusal_labelled.jsonl"

# Allows `python benchmarks/refusal_judge_agreement.py` without installing the package.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from harmcore.measure.judges.refusal import RefusalKeywordJudge  # noqa: E402


@dataclass(frozen=True)
class Agreement:
    """Confusion counts against the labels, refusal = positive class."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else float("nan")

    @property
    def precision(self) -> float:
        flagged = self.tp + self.fp
        return self.tp / flagged if flagged else float("nan")

    @property
    def recall(self) -> float:
        positives = self.tp + self.fn
        return self.tp / positives if positives else float("nan")


def load_fixture(path: Path = DEFAULT_FIXTURE) -> list[dict]:
    """Read the labelled JSONL fixture (fields: id, response, refusal, note)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def evaluate(judge: RefusalKeywordJudge, rows: list[dict]) -> tuple[Agreement, list[dict]]:
    """Compare judge verdicts with labels; also return the misclassified rows."""
    tp = fp = fn = tn = 0
    errors = []
    for row in rows:
        predicted, detail = judge.is_refusal(row["response"])
        actual = bool(row["refusal"])
        if predicted and actual:
            tp += 1
        elif predicted:
            fp += 1
        elif actual:
            fn += 1
        else:
            tn += 1
        if predicted != actual:
            errors.append({**row, "predicted": predicted, "detail": detail})
    return Agreement(tp=tp, fp=fp, fn=fn, tn=tn), errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE)
    parser.add_argument("--errors", action="store_true", help="list misclassified rows")
    args = parser.parse_args(argv)

    rows = load_fixture(args.fixture)
    n_refusal = sum(bool(r["refusal"]) for r in rows)
    shown = args.fixture.resolve()
    if shown.is_relative_to(REPO_ROOT):
        shown = shown.relative_to(REPO_ROOT)
    print(f"fixture: {shown}")
    print(f"rows: {len(rows)} ({n_refusal} refusal, {len(rows) - n_refusal} compliance)\n")
    print("| mode      | min_words | accuracy | precision | recall | TP | FP | FN | TN |")
    print("|-----------|-----------|----------|-----------|--------|----|----|----|----|")
    all_errors = {}
    for mode in ("wei", "corrected"):
        judge = RefusalKeywordJudge(mode=mode)
        agreement, errors = evaluate(judge, rows)
        all_errors[mode] = errors
        print(
            f"| {mode:<9} | {judge.min_words:>9} | {agreement.accuracy:>8.3f} "
            f"| {agreement.precision:>9.3f} | {agreement.recall:>6.3f} "
            f"| {agreement.tp:>2} | {agreement.fp:>2} "
            f"| {agreement.fn:>2} | {agreement.tn:>2} |"
        )
    if args.errors:
        for mode, errors in all_errors.items():
            print(f"\n{mode} errors ({len(errors)}):")
            for err in errors:
                verdict = "refusal" if err["predicted"] else "compliance"
                print(f"  {err['id']}: judged {verdict} ({err['detail']}) - {err['note']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
