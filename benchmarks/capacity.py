"""Predicted scoring memory at the paper's data sizes for 8B, 14B, 32B and 70B models (no weights
loaded: the models are built on the meta device from their published shapes).

For each model, the plan of `harmcore.core.memory` in bfloat16: weights, accumulators (all layers in
one pass, and one layer per pass) and activations for batches of 1 and 4 examples of 512 tokens
(the paper's 412 calibration examples, `data.max_length` 512 under protocol=paper), in GiB for the
whole model; spread over n GPUs, each holds about 1/n of it (plus the activations of its blocks).

Scoring time: a one-pass score of a set costs about 6 x linear parameters x tokens FLOPs (forward,
backward to the inputs, one accumulation matmul), counted at 412 examples of 512 tokens (an upper
bound: shorter examples cost less). With `--throughput`, a `benchmarks.gpu` result, each set's time
is predicted from the model TFLOP/s measured there for signed SNIP (the harm set) and abs SNIP (the
preserve set). Blocks spread over GPUs run one after the other, so more GPUs hold a larger model but
do not make one pass faster.

    python -m benchmarks.capacity [--throughput gpu.json] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import emit
from harmcore.core.memory import GB, estimate

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "llama3.1-8b": (4096, 14336, 32, 32, 8, 128256),
    "qwen2.5-14b": (5120, 13824, 48, 40, 8, 152064),
    "qwen2.5-32b": (5120, 27648, 64, 40, 8, 152064),
    "llama3.1-70b": (8192, 28672, 80, 64, 8, 128256),
}


def meta_model(hidden, inter, layers, heads, kv, vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab)  # fmt: skip
    with torch.device("meta"):
        return LlamaForCausalLM(cfg).to(torch.bfloat16)


N_EXAMPLES, N_TOKENS = 412, 512  # the paper's calibration set and protocol=paper's data.max_length


def measured_tflops(path: str) -> dict[str, float]:
    """{"harm": signed SNIP's, "preserve": abs SNIP's} model TFLOP/s of a `benchmarks.gpu` result."""
    r = json.loads(Path(path).read_text())
    rates = {}
    for part, key in (("harm", "signed_snip"), ("preserve", "snip_abs")):
        if not isinstance(r.get(key), dict):
            raise SystemExit(f"{path} has no measured {key} (it was {r.get(key)!r}): rerun python -m benchmarks.gpu")
        rates[part] = float(r[key]["model_tflops"])
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--throughput", default=None, help="a benchmarks.gpu --json result: predict scoring time")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rates = measured_tflops(args.throughput) if args.throughput else None
    result = {}
    for name, shape in SHAPES.items():
        model = meta_model(*shape)
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        flops = 6.0 * linear * N_EXAMPLES * N_TOKENS
        result[f"{name}_time"] = t = {"linear_params": linear, "pflop_per_set": round(flops / 1e15, 2)}
        if rates:
            for part, tflops in rates.items():
                t[f"{part}_minutes"] = round(flops / (tflops * 1e12) / 60, 2)
        for batch in (1, 4):
            for per_pass in (None, 1):
                (need,) = estimate(model, 512, batch, per_pass, "signed_snip").values()
                key = f"{name}_b{batch}_{'all' if per_pass is None else 'k1'}"
                result[key] = {k: round(v / GB, 1) for k, v in need.items()}
        print(name, "weights", result[f"{name}_b1_all"]["weights"], "GiB;", result[f"{name}_time"])
    emit(result, args.json)


if __name__ == "__main__":
    main()
