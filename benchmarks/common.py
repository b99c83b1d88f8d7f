"""Shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

SHAPES = {
    "llama8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, max_position_embeddings=1024),
}  # fmt: skip


def random_model(shape: str, device: str, dtype, seed: int = 0, usable_vocab: int | None = None):
    """A random-weight Llama of `shape` (nothing from the hub).

    With `usable_vocab` (the size of the tokenizer it is paired with), the output rows of the
    ids the tokenizer lacks are zeroed: their logit is 0 while the usable ones are independent
    zero-mean normals, so greedy decoding never picks them (the chance that all usable logits
    are negative is 2 ** -usable_vocab per token). The shapes, and so the cost, stay those of
    the full vocabulary.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    if usable_vocab is not None and usable_vocab < cfg.vocab_size:
        with torch.no_grad():
            model.lm_head.weight[usable_vocab:].zero_()
    return model.eval()


def emit(result: dict, json_path: str | None, digits: int | None = None, quiet: bool = False) -> None:
    """Print the result as JSON (top-level floats to `digits` significant digits) and write it to
    `json_path` atomically; `quiet` (a partial result kept in case the run stops) only writes."""
    if digits:
        result = {k: float(f"{v:.{digits}g}") if isinstance(v, float) else v for k, v in result.items()}
    text = json.dumps(result, indent=2)
    if not quiet:
        print(text)
    if json_path:
        tmp = Path(f"{json_path}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, json_path)


def run_bounded(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run with output captured, in its own process group: on timeout the whole group
    (the command and whatever it started, e.g. vLLM workers) is killed before TimeoutExpired is raised."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
