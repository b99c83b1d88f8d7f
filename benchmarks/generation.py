"""Generation: vLLM vs HF generate, and an in-place mask swap vs what the reference code does per point.

Same model, same prompts, greedy, same machine, one run:
- `hf_tok_s` / `vllm_tok_s`: generated tokens per second (vLLM timed on its second call);
- `engine_start_s`: building a vLLM engine for the model (what a fresh engine per sparsity costs);
- `checkpoint_write_s`: writing the pruned model as a checkpoint (the other half of that cost);
- `swap_s`: applying a per-matrix mask (q) to the live model and copying the touched matrices
  (and their fused siblings) into the engine; `restore_s` the same back to dense.
Ratios: `swap_vs_engine_start`, `swap_vs_restart` (= swap / (checkpoint write + engine start)),
`vllm_vs_hf`.

    python -m benchmarks.generation [--model smollm2_embedded] [--prompts 16] [--new-tokens 64]
    python -m benchmarks.generation --model llama8b_random   # GPU: random weights, Llama-3.1-8B shape
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit, random_model
from harmcore.core import masking, scoring
from harmcore.core.selection import set_difference
from harmcore.data.sources import benign_builtin
from harmcore.generation.base import Request, Sampling
from harmcore.generation.hf import HFGenerator
from harmcore.generation.vllm_engine import EngineSettings, VLLMGenerator
from harmcore.models import loading as models
from harmcore.models.builders import tiny_tokenizer
from harmcore.models.config import ModelConfig


def llama8b_random(out: Path) -> Path:
    """A random-weight model of Llama-3.1-8B's shape (bf16) with the byte-level test tokenizer."""
    if (out / "config.json").exists():
        return out
    tok = tiny_tokenizer()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    random_model("llama8b", device, torch.bfloat16, usable_vocab=len(tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2_embedded", help="a harmcore builder or llama8b_random")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--q", type=float, default=1e-5, help="per-matrix harm fraction of the swapped mask")
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.6,
                    help="vLLM's share of the GPU; the HF model stays resident beside it")  # fmt: skip
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    dtype = "bfloat16" if cuda else "float32"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        if args.model == "llama8b_random":
            path = str(llama8b_random(cache / "llama8b_random"))
            spec = ModelConfig(name=args.model, path=path, dtype=dtype, device="auto")
        else:
            spec = ModelConfig(name=args.model, path="", builder=args.model, dtype=dtype, device="auto")
            path = models.source_path(spec, cache)
        model, tok = models.load(spec, cache)
        requests = [Request(p.text) for p in benign_builtin()[: args.prompts]]
        # Greedy: both backends produce the same tokens, so tokens/s compare like for like.
        sampling = Sampling(max_new_tokens=args.new_tokens)
        r: dict = {"model": args.model, "device": torch.cuda.get_device_name() if cuda else "cpu"}
        r.update(prompts=len(requests), new_tokens=args.new_tokens, q=args.q)

        hf = HFGenerator(model, tok, "chat", args.hf_batch)
        start = time.perf_counter()
        hf.generate(requests, sampling)
        r["hf_s"] = time.perf_counter() - start
        r["hf_tok_s"] = hf.stats["tokens"] / r["hf_s"]

        start = time.perf_counter()
        settings = EngineSettings(dtype=dtype, max_model_len=2048, gpu_memory_utilization=args.gpu_memory_utilization)
        gen = VLLMGenerator(path, tok, model, "chat", settings)
        r["engine_start_s"] = time.perf_counter() - start
        gen.generate(requests, sampling)  # warm-up
        tokens, start = gen.stats["tokens"], time.perf_counter()
        gen.generate(requests, sampling)
        r["vllm_s"] = time.perf_counter() - start
        r["vllm_tok_s"] = (gen.stats["tokens"] - tokens) / r["vllm_s"]

        mask = set_difference(scoring.compute(model, [], "random", seed=0), None, args.q, 0.0, "per_matrix")
        changed = [f"{n}.weight" for n, idx in mask.indices.items() if idx.numel()]
        start = time.perf_counter()
        handle = masking.apply(model, mask)
        gen.weights_changed(changed)
        gen.sync()
        r["swap_s"] = time.perf_counter() - start
        r["tensors_per_swap"] = gen.stats["tensors_sent"]
        start = time.perf_counter()
        ckpt = cache / "pruned_checkpoint"
        model.save_pretrained(ckpt)  # what the reference code does for each point
        r["checkpoint_write_s"] = time.perf_counter() - start
        start = time.perf_counter()
        masking.restore(model, handle)
        gen.weights_changed(changed)
        gen.sync()
        r["restore_s"] = time.perf_counter() - start
        gen.close()

    r["vllm_vs_hf"] = r["vllm_tok_s"] / r["hf_tok_s"]
    r["swap_vs_engine_start"] = r["swap_s"] / r["engine_start_s"]
    r["swap_vs_restart"] = r["swap_s"] / (r["engine_start_s"] + r["checkpoint_write_s"])
    emit(r, args.json, digits=4)


if __name__ == "__main__":
    main()
