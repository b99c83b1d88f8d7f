"""Run every CPU benchmark, print one table, write benchmarks/results.json.

    python -m benchmarks.run [--model smollm2_embedded|tiny_random] [--examples N] [--grouping]

Each figure is a ratio to a baseline measured in the same run (these machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(module: str, *args: str) -> dict:
    out = HERE / f".{module}.json"
    subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args, "--json", str(out)], check=True, stdout=subprocess.DEVNULL
    )
    data = json.loads(out.read_text())
    out.unlink()
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2_embedded")
    ap.add_argument("--examples", default="16")
    ap.add_argument("--grouping", action="store_true", help="also time sweep granularity (a few minutes)")
    args = ap.parse_args()
    scoring = run("scoring", "--model", args.model, "--examples", args.examples, "--memory")
    selection = run("selection")
    generation = run("generation", "--model", args.model)
    conf_model = {"smollm2_embedded": "smollm2_135m_instruct"}.get(args.model, args.model)
    overhead = run("sweep_overhead", "--model", conf_model, "--points", "6")
    results = {"scoring": scoring, "selection": selection, "generation": generation, "sweep_overhead": overhead}
    if args.grouping:
        results["sweep_grouping"] = run("sweep_grouping")
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"scoring: {scoring['model']}, {scoring['examples']} examples, {scoring['tokens']} tokens, "
        f"{scoring['layers']} layers, {scoring['threads']} threads"
    )
    print("| what | seconds | x bare fwd+bwd | extra peak RSS GB (fresh process) |")
    print("|---|---|---|---|")
    rss = scoring.get("peak_rss_gb", {})
    print(f"| bare forward+backward | {scoring['bare_fwd_bwd_s']:.2f} | 1.00 | {rss.get('bare_fwd_bwd', '')} |")
    names = {
        "signed_snip": ("signed SNIP, one pass", "signed_snip"),
        "snip_abs": ("abs SNIP (per example), one pass", "snip_abs"),
        "signed_snip_per_example": ("signed SNIP, batch 1", None),
        "signed_snip_chunked4": ("signed SNIP, 4 layers per pass", None),
        "wanda": ("Wanda (forward only)", None),
        "reference_layerwise_signed": ("reference: one layer per pass", None),
    }
    for key, (label, mem) in names.items():
        if f"{key}_s" in scoring:
            ratio = scoring["ratios_vs_bare_fwd_bwd"][key]
            print(f"| {label} | {scoring[key + '_s']:.2f} | {ratio:.2f} | {rss.get(mem, '') if mem else ''} |")
    if "signed_snip_layers_per_pass_1" in rss:
        print(f"| signed SNIP, 1 layer per pass (memory only) | | | {rss['signed_snip_layers_per_pass_1']} |")
    if "speedup_one_pass_vs_reference" in scoring:
        print(
            f"one pass vs reference loop: {scoring['speedup_one_pass_vs_reference']}x faster, "
            f"max relative difference {scoring['reference_max_rel_diff']:.1e}"
        )
    print(f"\nselection: {selection['matrices']} matrices, {selection['weights']} weights, p = 5e-5")
    print("| q | set difference per_matrix s | per_row s | global s | global top-k s | concat+topk s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in selection["rows"]:
        print(
            f"| {r['q']:g} | {r['per_matrix_s']} | {r['per_row_s']} | {r['global_s']} | {r['global_topk_only_s']} | "
            f"{r['baseline_global_concat_topk_s']} | {r['global_topk_vs_baseline']} |"
        )

    g = generation
    print(f"\ngeneration: {g['model']} on {g['device']}, {g['prompts']} prompts x {g['new_tokens']} new tokens, greedy")
    print("| HF tok/s | vLLM tok/s | vLLM / HF | engine start s | checkpoint write s | mask swap s | swap / start |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {g['hf_tok_s']:.0f} | {g['vllm_tok_s']:.0f} | {g['vllm_vs_hf']:.2f} | {g['engine_start_s']:.2f} | "
        f"{g['checkpoint_write_s']:.2f} | {g['swap_s']:.3f} | {g['swap_vs_engine_start']:.3f} |"
    )

    o = overhead
    print(f"\none grouped job on {o['model']}: {o['points']} points, {o['examples']} examples, ", end="")
    print(f"{o['new_tokens']} new tokens")
    print("| wall s | scoring s | generation s | reference NLL s | model load s | overhead s | overhead / wall "
          "| of which selection | peak RSS GB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {o['wall_s']:.1f} | {o['scoring_s']:.1f} | {o['generation_s']:.1f} | {o['nll_s']:.1f} | "
        f"{o['load_model_s']:.1f} | {o['overhead_s']:.1f} | {o['overhead_fraction']:.3f} | "
        f"{o['select_fraction']:.3f} | {o['peak_rss_gb']:.2f} |"
    )

    if args.grouping:
        g = results["sweep_grouping"]
        print(f"\nsweep of {len(g['points'])} points on {g['model']} (wall seconds, ratio to one grouped job)")
        print("| one process per point (submitit_local) | basic launcher (one process) | grouped sparsities=[...] |")
        print("|---|---|---|")
        r = g["ratio_vs_grouped"]
        print(
            f"| {g['per_job_processes_s']} ({r['per_job_processes']}x) | {g['basic_launcher_s']} "
            f"({r['basic_launcher']}x) | {g['grouped_s']} (1.0x) |"
        )


if __name__ == "__main__":
    main()
