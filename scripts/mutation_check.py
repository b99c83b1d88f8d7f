"""Mutation check of the formulas: break each one on purpose and see that a test fails.

    python scripts/mutation_check.py [--only NAME] [--json out.json]

Each mutant replaces one exact piece of source with a wrong variant, runs the unit tests that
should notice (fast: seconds to a minute each), and restores the file whatever happens. A mutant
whose tests still pass "survived": the tests do not pin that formula. Exit status 1 if any survived.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (file, exact original text, mutated text, test files that must notice)
MUTANTS = {
    "loss: sum instead of mean over response tokens": (
        "harmcore/core/losses.py", "return tok.sum(1) / n", "return tok.sum(1)",
        ["tests/unit/test_independent_checks.py", "tests/unit/test_scoring.py"],
    ),
    "signed SNIP: sign flipped": (
        "harmcore/core/scoring.py", "lambda w, acc: -w * acc", "lambda w, acc: w * acc",
        ["tests/unit/test_scoring.py"],
    ),
    "SNIP: |sum of gradients| instead of sum of |per-example gradients|": (
        "harmcore/core/scoring.py",
        "acc += per_example.abs().sum(0).float()",
        "acc += per_example.sum(0).abs().float()",
        ["tests/unit/test_scoring.py"],
    ),
    "Wanda: squared norm (no square root)": (
        "harmcore/core/scoring.py", "(sumsq[n] / n_tokens).sqrt()", "(sumsq[n] / n_tokens)",
        ["tests/unit/test_scoring.py"],
    ),
    "set difference: preserve set ignored": (
        "harmcore/core/selection.py", "idx = idx[~torch.isin(idx, self.keep[n])]", "idx = idx",
        ["tests/unit/test_selection.py"],
    ),
    "masking: restore leaves the zeros": (
        "harmcore/core/masking.py", "_flat_weight(linears[name]).index_copy_(0, idx, handle.values[name])", "pass",
        ["tests/unit/test_masking.py"],
    ),
    "bootstrap: 90 % intervals where 95 % are asked": (
        "harmcore/measure/stats.py", "lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])",
        "lo, hi = np.quantile(means, [0.05, 0.95])",
        ["tests/unit/test_independent_checks.py"],
    ),
    "Wilson interval: no z^2/4n^2 term (zero-wide at 0 and 1 again)": (
        "harmcore/measure/stats.py", "p * (1 - p) / n + z * z / (4 * n * n)", "p * (1 - p) / n",
        ["tests/unit/test_independent_checks.py"],
    ),
    "curve bootstrap: prompts resampled separately at each point": (
        "harmcore/report/compression.py", "h_star = _resampled_means(rows, n_resamples, rng)",
        "h_star = np.stack([_resampled_means(rows[k : k + 1], n_resamples, rng)[:, 0] for k in range(len(rows))], 1)",
        ["tests/unit/test_independent_checks.py", "tests/unit/test_compression.py"],
    ),
    "EM: the mask is not applied again after merging the pruned fine-tune": (
        "harmcore/run/em.py", "if mask is not None and em.reapply_mask:", "if False:",
        ["tests/unit/test_remasking.py"],
    ),
    "LoRA attack: the mask is not applied again after merging": (
        "harmcore/measure/attacks.py", "if mask is not None and a.lora_reapply_mask:", "if False:",
        ["tests/unit/test_remasking.py"],
    ),
    "Wei keyword rule: 10 words instead of 20": (
        "harmcore/measure/judges/refusal.py", "WEI_MIN_WORDS = 20", "WEI_MIN_WORDS = 10",
        ["tests/unit/test_refusal.py"],
    ),
    "perplexity: the window's context tokens scored again": (
        "harmcore/measure/utility.py", "first = max(scored_to - begin - 1, 0)", "first = 0",
        ["tests/unit/test_independent_checks.py", "tests/unit/test_utility.py"],
    ),
}  # fmt: skip


def run(name: str) -> dict:
    file, old, new, tests = MUTANTS[name]
    path = ROOT / file
    original = path.read_text(encoding="utf-8")
    if original.count(old) != 1:
        return {"mutant": name, "status": "not applied", "why": f"the original text occurs {original.count(old)} times"}
    start = time.perf_counter()
    try:
        path.write_text(original.replace(old, new), encoding="utf-8")
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        path.write_text(original, encoding="utf-8")
    failed = [line.split(" ")[1] for line in r.stdout.splitlines() if line.startswith("FAILED ")]
    status = "killed" if r.returncode != 0 else "SURVIVED"
    return {"mutant": name, "status": status, "by": failed[:1], "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="one mutant's name (a substring)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    names = [n for n in MUTANTS if not args.only or args.only in n]
    results = []
    for name in names:
        results.append(run(name))
        r = results[-1]
        print(f"{r['status']:>11}  {name}  {' '.join(r.get('by', [])) or r.get('why', '')}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    survived = [r for r in results if r["status"] != "killed"]
    print(f"{len(results) - len(survived)} of {len(results)} mutants killed")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
