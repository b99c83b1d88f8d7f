"""Predicted scoring memory at the paper's data sizes for 8B, 14B, 32B and 70B models (no weights
loaded: the models are built on the meta device from their published shapes).

For each model, the plan of `harmcore.core.memory` in bfloat16: weights, accumulators (all layers in
one pass, and one layer per pass) and activations for batches of 1 and 4 examples of 512 tokens
(the paper's 412 calibration examples, `data.max_length` 512 under protocol=paper), in GiB for the
whole model; spread over n GPUs, each holds about 1/n of it (plus the activations of its blocks).

    python -m benchmarks.capacity [--json out.json]
"""

from __future__ import annotations

import argparse

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    result = {}
    for name, shape in SHAPES.items():
        model = meta_model(*shape)
        for batch in (1, 4):
            for per_pass in (None, 1):
                (need,) = estimate(model, 512, batch, per_pass, "signed_snip").values()
                key = f"{name}_b{batch}_{'all' if per_pass is None else 'k1'}"
                result[key] = {k: round(v / GB, 1) for k, v in need.items()}
        print(name, "weights", result[f"{name}_b1_all"]["weights"], "GiB")
    emit(result, args.json)


if __name__ == "__main__":
    main()
