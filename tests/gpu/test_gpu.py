"""Scoring, masking and generation on CUDA: what CPU tests cannot show (bf16, devices, vLLM on GPU)."""

import importlib.util

import pytest
import torch

from harmcore.core import masking, scoring
from harmcore.core.selection import set_difference
from harmcore.data.examples import tokenize
from harmcore.generation.base import Request, Sampling
from harmcore.generation.hf import HFGenerator
from harmcore.models.builders import tiny_random_model


@pytest.fixture
def model_and_toks(tiny_tok, harm_examples):
    model = tiny_random_model(vocab_size=len(tiny_tok), layers=4).to("cuda")
    return model, tokenize(tiny_tok, harm_examples)


def overlap(a, b) -> float:
    shared = sum(len(set(a.indices.get(n, torch.empty(0)).tolist()) & set(i.tolist())) for n, i in b.indices.items())
    return shared / max(b.n_pruned, 1)


def test_k_layers_per_pass_equals_one_pass_on_cuda(model_and_toks):
    model, toks = model_and_toks
    for method in ("signed_snip", "snip"):
        one = scoring.compute(model, toks, method, batch_size=4)
        split = scoring.compute(model, toks, method, batch_size=4, layers_per_pass=1)
        for name in one:
            assert split[name].device.type == "cpu" and one[name].device.type == "cuda"
            assert torch.allclose(split[name], one[name].cpu(), rtol=1e-4, atol=1e-6), (method, name)


def test_bf16_scores_select_nearly_the_same_weights_as_fp32(model_and_toks):
    model, toks = model_and_toks
    fp32 = scoring.compute(model, toks, "signed_snip")
    bf16 = scoring.compute(model.to(torch.bfloat16), toks, "signed_snip")
    assert all(v.dtype == torch.float32 for v in bf16.values())  # accumulated in fp32 whatever the weights
    a = set_difference({k: v.cpu() for k, v in fp32.items()}, None, 0.01)
    b = set_difference({k: v.cpu() for k, v in bf16.items()}, None, 0.01)
    assert overlap(a, b) > 0.8


def test_masking_in_bf16_restores_bit_exactly(model_and_toks, tiny_tok):
    model, toks = model_and_toks
    model = model.to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = set_difference({k: v.cpu() for k, v in scoring.compute(model, toks, "snip").items()}, None, 0.05)
    gen = HFGenerator(model, tiny_tok, "chat")
    dense = gen.generate([Request("Hello?")], Sampling(8))
    handle = masking.apply(model, mask)
    masking.restore(model, handle)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert gen.generate([Request("Hello?")], Sampling(8)) == dense


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed in this environment")
def test_vllm_on_cuda_follows_the_mask(tmp_path):
    from harmcore.generation.vllm_engine import EngineSettings, VLLMGenerator
    from harmcore.models.config import ModelConfig
    from harmcore.models.loading import load, source_path
    from tests.integration.test_vllm import _check_matches_hf_dense_pruned_restored

    spec = ModelConfig(name="tiny_random", builder="tiny_random", dtype="float32", device="cuda")
    model, tok = load(spec, tmp_path)
    gen = VLLMGenerator(source_path(spec, tmp_path), tok, model, "chat", EngineSettings(dtype="float32"))
    try:
        _check_matches_hf_dense_pruned_restored(model, tok, gen, q=0.05)
    finally:
        gen.close()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="spreading a model over devices needs two GPUs")
def test_a_model_spread_over_two_gpus_scores_as_on_one_device(tiny_tok, harm_examples):
    """model.device_map across GPUs: half the blocks on cuda:0, half on cuda:1; each accumulator sits
    on its weight's device and the scores equal the one-device model's."""
    from accelerate import dispatch_model

    toks = tokenize(tiny_tok, harm_examples)
    one = tiny_random_model(vocab_size=len(tiny_tok), layers=4).to("cuda")
    spread = tiny_random_model(vocab_size=len(tiny_tok), layers=4)
    placement = {"model.embed_tokens": "cuda:0", "model.rotary_emb": "cuda:0", "model.layers.0": "cuda:0",
                 "model.layers.1": "cuda:0", "model.layers.2": "cuda:1", "model.layers.3": "cuda:1",
                 "model.norm": "cuda:1", "lm_head": "cuda:1"}  # fmt: skip
    spread = dispatch_model(spread, device_map=placement)
    for method in ("signed_snip", "snip", "wanda"):
        want = scoring.compute(one, toks, method, batch_size=4)
        got = scoring.compute(spread, toks, method, batch_size=4)
        for n in want:
            assert got[n].device == spread.get_submodule(n).weight.device
            assert torch.allclose(got[n].cpu(), want[n].cpu(), rtol=1e-4, atol=1e-6), (method, n)


def test_blocks_offloaded_to_host_memory_score_and_prune_as_resident_ones(tiny_tok, harm_examples):
    """A device map with blocks on "cpu" beside the GPU (accelerate offloads them: stored in host
    memory, loaded onto the GPU for each forward): scores equal the GPU model's, accumulators and
    scores sit in host memory, and a mask changes the offloaded weights the next forward uses."""
    from accelerate import dispatch_model

    toks = tokenize(tiny_tok, harm_examples)
    one = tiny_random_model(vocab_size=len(tiny_tok), layers=4).to("cuda")
    off = tiny_random_model(vocab_size=len(tiny_tok), layers=4)
    placement = {"model.embed_tokens": "cuda:0", "model.rotary_emb": "cuda:0", "model.layers.0": "cuda:0",
                 "model.layers.1": "cpu", "model.layers.2": "cpu", "model.layers.3": "cuda:0",
                 "model.norm": "cuda:0", "lm_head": "cuda:0"}  # fmt: skip
    off = dispatch_model(off, device_map=placement, force_hooks=True)
    assert off.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    for method in ("signed_snip", "snip", "wanda"):
        want = scoring.compute(one, toks, method, batch_size=4)
        got = scoring.compute(off, toks, method, batch_size=4)
        assert got["model.layers.1.mlp.down_proj"].device.type == "cpu"
        for n in want:
            assert torch.allclose(got[n].cpu(), want[n].cpu(), rtol=1e-4, atol=1e-6), (method, n)
    harm, keep = (scoring.compute(one, toks, m) for m in ("signed_snip", "snip"))
    mask = set_difference({k: v.cpu() for k, v in harm.items()}, {k: v.cpu() for k, v in keep.items()}, 0.05, 0.05)
    ids = torch.tensor([toks[0].prompt_ids], device="cuda")
    masking.apply(one, mask)
    masking.apply(off, mask)
    assert torch.allclose(off(ids).logits, one(ids).logits, rtol=1e-4, atol=1e-5)
