"""One-call GPU benchmark on a random-weight Llama-3.1-8B-shaped model (nothing from the hub).

    python -m benchmarks.gpu [--json out.json]               # on a GPU: a few minutes
    python -m benchmarks.gpu --shape tiny --device cpu ...    # the same code on a tiny shape (tests)

In one process, on random token ids (`--examples` x `--seq` tokens, loss on all but the first 64):
- `matmul_tflops`: the card's measured dense bf16 matmul rate (the ceiling for the ratios);
- scoring: a bare forward+backward (weights trainable, the floor), one-pass signed SNIP, abs
  SNIP (exact per-example), signed SNIP with `--chunk` layers per pass, each as seconds,
  tokens/s, model TFLOP/s (6 x linear params x tokens / s), fraction of `matmul_tflops` and peak
  memory (CUDA max allocated); the reference one-layer-per-pass loop on `--reference-examples`
  examples, timed and checked equal to the one-pass scores on the same examples;
- offload: signed SNIP with the last `--offload-blocks` blocks kept in host memory by a device map
  (accelerate loads each onto the GPU for its forward), timed and checked equal to the resident scores;
- selection: set difference (per-matrix and global ranking) on the model's scores for q in
  1e-5 .. 1e-2.
Then, in a fresh process (so the scoring buffers are gone), `benchmarks.generation` on the same
shape: HF generate vs vLLM tokens/s, vLLM engine start, checkpoint write and in-place mask swap.
A mode that runs out of memory is recorded as "oom" and the others go on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import SHAPES, emit, random_model, run_bounded
from harmcore.core.scoring import compute
from harmcore.core.scoring_reference import layerwise_snip
from harmcore.core.selection import set_difference
from harmcore.data.examples import TokenizedExample

PROMPT_TOKENS = 64


def random_examples(n: int, seq: int, vocab: int, seed: int = 0) -> list[TokenizedExample]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, seq), generator=g).tolist()
    return [TokenizedExample(row[:PROMPT_TOKENS], row[PROMPT_TOKENS:]) for row in ids]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None


def matmul_tflops(device: str, dtype: torch.dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def bare_forward_backward(model, toks: list[TokenizedExample], batch: int, device: str) -> None:
    for i in range(0, len(toks), batch):
        chunk = toks[i : i + batch]
        ids = torch.tensor([t.prompt_ids + t.response_ids for t in chunk], device=device)
        labels = ids.clone()
        labels[:, :PROMPT_TOKENS] = -100
        model(input_ids=ids, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)


def measure(name: str, fn, device: str, r: dict, tokens: int, flops_per_token: float, ceiling: float) -> object:
    """Time `fn` once after a reset of the peak-memory counter; store seconds, rates and memory."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    try:
        out = fn()
    except torch.OutOfMemoryError:
        r[name] = "oom"
        return None
    sync(device)
    s = time.perf_counter() - start
    tflops = flops_per_token * tokens / s / 1e12
    r[name] = {"s": s, "tok_s": tokens / s, "model_tflops": tflops, "fraction_of_matmul": tflops / ceiling,
               "peak_gb": peak_gb(device)}  # fmt: skip
    return out


def offload(scores: dict | None) -> dict | None:
    """Score tensors to CPU memory (an 8B model's fp32 scores are 30 GB each: keep one set on the GPU)."""
    return None if scores is None else {n: t.cpu() for n, t in scores.items()}


def max_rel_diff(a: dict, b: dict) -> float:
    return max(
        float((a[n].float() - b[n].to(a[n].device).float()).abs().max() / a[n].float().abs().max().clamp(min=1e-30))
        for n in a
    )


def scoring_and_selection(args, r: dict) -> None:
    device, dtype = args.device, getattr(torch, args.dtype)
    r["matmul_tflops"] = ceiling = matmul_tflops(device, dtype, args.matmul_n)
    model = random_model(args.shape, device, dtype)  # random ids over the full vocabulary: no tokenizer
    params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    r.update(linear_params=params, layers=model.config.num_hidden_layers)
    toks = random_examples(args.examples, args.seq, model.config.vocab_size)
    fpt = 6.0 * params  # model FLOPs per token of a forward+backward
    bare_forward_backward(model, toks[: args.batch], args.batch, device)  # warm-up

    def run(name, fn, examples=toks):
        return measure(name, fn, device, r, len(examples) * args.seq, fpt, ceiling)

    # The reference loop first, on a few examples, checked equal to the one-pass scores on them.
    few = toks[: args.reference_examples]
    one = offload(run("signed_snip_reference_set", lambda: compute(model, few, "signed_snip", batch_size=args.batch),
                      few))  # fmt: skip
    ref = run("reference_layerwise", lambda: layerwise_snip(model, few, "signed_snip", batch_size=args.batch), few)
    if one is not None and ref is not None:
        r["reference_max_rel_diff"] = max_rel_diff(ref, one)
        r["speedup_one_pass_vs_reference"] = r["reference_layerwise"]["s"] / r["signed_snip_reference_set"]["s"]
    del one, ref
    run("bare_fwd_bwd", lambda: bare_forward_backward(model, toks, args.batch, device))
    signed = offload(run("signed_snip", lambda: compute(model, toks, "signed_snip", batch_size=args.batch)))
    abs_scores = offload(run("snip_abs", lambda: compute(model, toks, "snip", batch_size=args.batch)))
    chunked = f"signed_snip_{args.chunk}_layers_per_pass"
    run(chunked, lambda: compute(model, toks, "signed_snip", batch_size=args.batch, layers_per_pass=args.chunk))
    for key in ("signed_snip", "snip_abs", chunked):
        if isinstance(r.get(key), dict) and isinstance(r.get("bare_fwd_bwd"), dict):
            r[key]["vs_bare_fwd_bwd"] = r[key]["s"] / r["bare_fwd_bwd"]["s"]
    if isinstance(r.get("snip_abs"), dict) and isinstance(r.get("signed_snip"), dict):
        r["abs_vs_signed"] = r["snip_abs"]["s"] / r["signed_snip"]["s"]
    if args.offload_blocks:
        offloaded_scoring(model, toks, args, signed, r, fpt, ceiling)
    model = None  # frees the weights before selection
    if signed is None or abs_scores is None:
        return
    r["selection"] = selection_times(signed, abs_scores, device)


def offloaded_scoring(model, toks, args, signed: dict | None, r: dict, fpt: float, ceiling: float) -> None:
    """The same model with its last `--offload-blocks` blocks offloaded by a device map (kept in host
    memory beside a GPU; on a CPU run, on disk): signed SNIP timed, and its scores compared with the
    resident model's."""
    from accelerate import dispatch_model

    device, layers = args.device, model.config.num_hidden_layers
    n = min(args.offload_blocks, layers)
    main = ("cuda:0" if device == "cuda" else device) if device.startswith("cuda") else "cpu"
    away = "cpu" if device.startswith("cuda") else "disk"
    model.to("cpu")
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    device_map = {name: main for name in ("model.embed_tokens", "model.rotary_emb", "model.norm", "lm_head")}
    device_map.update({f"model.layers.{i}": away if i >= layers - n else main for i in range(layers)})
    with tempfile.TemporaryDirectory() as folder:
        dispatch_model(model, device_map=device_map, offload_dir=folder, force_hooks=True)
        key = f"signed_snip_{n}_blocks_offloaded"
        got = measure(key, lambda: compute(model, toks, "signed_snip", batch_size=args.batch), device, r,
                      len(toks) * args.seq, fpt, ceiling)  # fmt: skip
        if isinstance(r.get(key), dict) and isinstance(r.get("signed_snip"), dict):
            r[key]["vs_resident"] = r[key]["s"] / r["signed_snip"]["s"]
    if got is not None and signed is not None:
        r["offloaded_max_rel_diff"] = max_rel_diff(signed, offload(got))


def selection_times(signed: dict, abs_scores: dict, device: str) -> list[dict]:
    """Set-difference time per q and ranking on `device`, or on the CPU when the two model-sized
    fp32 score sets do not fit on it; each row's "device" says where it ran, and a ranking whose
    temporaries do not fit reads "oom"."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        try:
            on_device = ({n: t.to(device) for n, t in signed.items()}, {n: t.to(device) for n, t in abs_scores.items()})
        except torch.OutOfMemoryError:
            on_device, device = (signed, abs_scores), "cpu"
    else:
        on_device = (signed, abs_scores)
    rows = []
    for q in (1e-5, 1e-4, 1e-3, 1e-2):
        row = {"q": q, "device": device}
        for ranking in ("per_matrix", "global"):
            try:
                sync(device)
                start = time.perf_counter()
                mask = set_difference(*on_device, q, 5e-5, ranking)
                sync(device)
            except torch.OutOfMemoryError:
                row[f"{ranking}_s"] = "oom"
                continue
            row[f"{ranking}_s"] = time.perf_counter() - start
            row[f"{ranking}_pruned"] = mask.n_pruned
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama8b", choices=list(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=8, help="layers per pass of the chunked mode")
    ap.add_argument("--reference-examples", type=int, default=4)
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--offload-blocks", type=int, default=8,
                    help="also score with this many blocks offloaded to host memory (0: skip)")  # fmt: skip
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--generation-args", default="--prompts 64 --hf-batch 64 --new-tokens 128")
    ap.add_argument("--generation-timeout", type=float, default=1800, help="seconds for the generation benchmark")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    r: dict = {"shape": args.shape, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    r.update(examples=args.examples, seq=args.seq, batch=args.batch, dtype=args.dtype)
    scoring_and_selection(args, r)
    emit(r, args.json, quiet=True)  # the scoring figures are kept even if generation fails or hangs
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    if not args.skip_generation:
        model = "llama8b_random" if args.shape == "llama8b" else "tiny_random"
        out = Path(args.json or "gpu_benchmark.json").with_suffix(".generation.json")
        cmd = [sys.executable, "-m", "benchmarks.generation", "--model", model, *args.generation_args.split()]
        try:
            done = run_bounded([*cmd, "--json", str(out)], args.generation_timeout)
            r["generation"] = json.loads(out.read_text()) if done.returncode == 0 else {"error": done.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            r["generation"] = {"error": f"no result within --generation-timeout={args.generation_timeout:g} s"}
    emit(r, args.json)


if __name__ == "__main__":
    main()
