"""Scoring speed: one-pass harmcore vs the reference per-layer loop vs a bare forward+backward.

All three see the same model and tokens in the same process; figures are ratios to the
bare forward+backward measured in this run, so machine noise cancels out. The reference
scores are checked equal to the one-pass scores.

    python -m benchmarks.scoring [--model tiny_random|smollm2_embedded] [--examples N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import torch

from harmcore.core.losses import response_losses
from harmcore.core.scoring import compute
from harmcore.core.scoring_reference import layerwise_snip
from harmcore.core.weights import decoder_layers
from harmcore.data.examples import Example, batches, tokenize
from harmcore.data.sources import benign_builtin
from harmcore.models.config import ModelConfig
from harmcore.models.loading import load


def examples(n: int) -> list[Example]:
    prompts = benign_builtin()[:n]
    # Responses of ~80 words so that each example is ~100-150 tokens.
    filler = "This answer walks through the idea step by step with a short example and a summary. "
    return [Example(p.text, filler * 6) for p in prompts]


def bare_forward_backward(model, toks, batch_size) -> None:
    for batch in batches(toks, batch_size):
        model.zero_grad(set_to_none=True)
        response_losses(model, batch.input_ids, batch.attention_mask, batch.labels).sum().backward()
    model.zero_grad(set_to_none=True)


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


MODES = {
    "bare_fwd_bwd": lambda m, t, bs: bare_forward_backward(m, t, bs),
    "signed_snip": lambda m, t, bs: compute(m, t, "signed_snip", batch_size=bs),
    "signed_snip_layers_per_pass_1": lambda m, t, bs: compute(m, t, "signed_snip", batch_size=bs, layers_per_pass=1),
    "snip_abs": lambda m, t, bs: compute(m, t, "snip", batch_size=bs),
}


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def peak_extra_rss(fn) -> float:
    """Peak resident memory (GB) above the level before `fn`, sampled every 2 ms."""
    start, peak, done = rss_gb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_gb())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], rss_gb()) - start


def peak_rss_of(mode: str, args) -> float:
    """Extra peak RSS (GB, above the loaded model) of one mode, in a fresh process."""
    cmd = [sys.executable, "-m", "benchmarks.scoring", "--model", args.model, "--examples", str(args.examples)]
    cmd += ["--batch-size", str(args.batch_size), "--only", mode]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_gb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2_embedded", choices=["tiny_random", "smollm2_embedded"])
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--skip-reference", action="store_true", help="skip the slow per-layer loop")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", choices=list(MODES), help="run one mode once and print its peak RSS (internal)")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS per mode in fresh processes")
    args = ap.parse_args()
    model, tok = load(ModelConfig(name=args.model, path="", builder=args.model, dtype="float32", device="cpu"))
    toks = tokenize(tok, examples(args.examples))
    if args.only:
        extra = peak_extra_rss(lambda: MODES[args.only](model, toks, args.batch_size))
        print(json.dumps({"peak_rss_gb": round(extra, 3)}))
        return
    n_tokens = sum(len(t.prompt_ids) + len(t.response_ids) for t in toks)
    bs = args.batch_size
    results = {"model": args.model, "examples": len(toks), "tokens": n_tokens, "layers": len(decoder_layers(model))}
    bare_forward_backward(model, toks[:bs], bs)  # warm-up
    results["bare_fwd_bwd_s"] = timed(lambda: bare_forward_backward(model, toks, bs))
    out = {}
    results["signed_snip_s"] = timed(
        lambda: out.__setitem__("signed", compute(model, toks, "signed_snip", batch_size=bs))
    )
    results["snip_abs_s"] = timed(lambda: out.__setitem__("abs", compute(model, toks, "snip", batch_size=bs)))
    results["signed_snip_per_example_s"] = timed(lambda: compute(model, toks, "signed_snip", batch_size=1))
    results["wanda_s"] = timed(lambda: compute(model, toks, "wanda", batch_size=bs))
    results["signed_snip_chunked4_s"] = timed(
        lambda: compute(model, toks, "signed_snip", batch_size=bs, layers_per_pass=4)
    )
    if not args.skip_reference:
        results["reference_layerwise_signed_s"] = timed(
            lambda: out.__setitem__("ref", layerwise_snip(model, toks, "signed_snip", batch_size=bs))
        )
        worst = max(
            float((out["ref"][n] - out["signed"][n]).abs().max() / out["ref"][n].abs().max().clamp(min=1e-30))
            for n in out["ref"]
        )
        results["reference_max_rel_diff"] = worst
    base = results["bare_fwd_bwd_s"]
    results["ratios_vs_bare_fwd_bwd"] = {
        k[:-2]: round(v / base, 2) for k, v in results.items() if k.endswith("_s") and k != "bare_fwd_bwd_s"
    }
    if "reference_layerwise_signed_s" in results:
        results["speedup_one_pass_vs_reference"] = round(
            results["reference_layerwise_signed_s"] / results["signed_snip_s"], 2
        )
    if args.memory:
        results["peak_rss_gb"] = {mode: peak_rss_of(mode, args) for mode in MODES}
    results["threads"] = torch.get_num_threads()
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
