"""Scores against independent computations on the tiny model (float64)."""

import pytest
import torch

from harmcore.core import masking
from harmcore.core.losses import response_losses
from harmcore.core.scoring import compute
from harmcore.core.scoring_reference import layerwise_snip
from harmcore.core.selection import set_difference
from harmcore.core.weights import prunable_linears
from harmcore.data.examples import Example, FormatSpec, TokenizedExample, batches, tokenize
from harmcore.errors import HarmcoreError


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def per_example_grads(model, toks):
    """dL_n/dW for every prunable W, one example at a time, with plain autograd on transformers' own
    loss (`labels=`: the mean over the example's labelled tokens), not harmcore's."""
    linears = prunable_linears(model)
    params = [m.weight for m in linears.values()]
    out = []
    for t in toks:
        b = next(batches([t], 1))
        loss = model(input_ids=b.input_ids, labels=b.labels).loss
        grads = torch.autograd.grad(loss, params)
        out.append(dict(zip(linears, grads)))
    return out


@pytest.fixture
def model64(tiny_model):
    return tiny_model.double()


@pytest.fixture
def toks(tiny_tok, harm_examples):
    return tokenize(tiny_tok, harm_examples)


def test_signed_and_abs_snip_match_per_example_loop(model64, toks):
    grads = per_example_grads(model64, toks)
    signed = compute(model64, toks, "signed_snip", batch_size=4)
    absolute = compute(model64, toks, "snip", batch_size=4)
    for name, lin in prunable_linears(model64).items():
        w = lin.weight.detach()
        want_signed = -w * sum(g[name] for g in grads)
        want_abs = w.abs() * sum(g[name].abs() for g in grads)
        assert signed[name].dtype == torch.float32 and signed[name].shape == w.shape
        assert rel_err(signed[name], want_signed) < 1e-5, name
        assert rel_err(absolute[name], want_abs) < 1e-5, name
    # per-example abs differs from abs of the sum: the test data must tell them apart
    name = "model.layers.0.mlp.down_proj"
    w = prunable_linears(model64)[name].weight.detach()
    assert rel_err(w.abs() * sum(g[name] for g in grads).abs(), absolute[name]) > 1e-3


@pytest.mark.parametrize("method", ["signed_snip", "snip"])
def test_one_pass_equals_layer_by_layer(model64, toks, method):
    one_pass = compute(model64, toks, method, batch_size=3)
    chunked = compute(model64, toks, method, batch_size=2, layers_per_pass=1)
    reference = layerwise_snip(model64, toks, method, batch_size=3)
    for name in reference:
        assert rel_err(one_pass[name], reference[name]) < 1e-5
        assert rel_err(chunked[name], reference[name]) < 1e-5


def test_wanda_matches_direct_activation_norms(model64, toks):
    linears = prunable_linears(model64)
    sumsq = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}
    count = 0
    for t in toks:  # one example at a time, inputs captured with plain hooks
        inputs = {}

        def capture(name, store=inputs):
            return lambda mod, a, o: store.__setitem__(name, a[0][0])

        hooks = [m.register_forward_hook(capture(n)) for n, m in linears.items()]
        seq = torch.tensor([list(t.prompt_ids) + list(t.response_ids)])
        with torch.no_grad():
            model64(input_ids=seq)
        for h in hooks:
            h.remove()
        # the positions of the response tokens (not the ones that predict them)
        pos = slice(len(t.prompt_ids), len(t.prompt_ids) + len(t.response_ids))
        for n in linears:
            sumsq[n] += inputs[n][pos].pow(2).sum(0)
        count += len(t.response_ids)
    got = compute(model64, toks, "wanda", batch_size=4)
    for n, m in linears.items():
        want = m.weight.detach().abs() * (sumsq[n] / count).sqrt().unsqueeze(0)
        assert rel_err(got[n], want) < 1e-5


def test_magnitude_and_random(tiny_model):
    mag = compute(tiny_model, [], "magnitude")
    for n, m in prunable_linears(tiny_model).items():
        assert torch.equal(mag[n], m.weight.detach().abs())
    r1, r2, r3 = (compute(tiny_model, [], "random", seed=s) for s in (1, 1, 2))
    name = next(iter(r1))
    assert torch.equal(r1[name], r2[name]) and not torch.equal(r1[name], r3[name])
    assert 0 <= float(r1[name].min()) and float(r1[name].max()) < 1


def test_batch_size_does_not_change_scores(tiny_model, toks):
    a = compute(tiny_model, toks, "snip", batch_size=1)
    b = compute(tiny_model, toks, "snip", batch_size=6)
    for n in a:
        assert rel_err(b[n], a[n]) < 1e-4


def harm_loss(model, toks):
    b = next(batches(toks, len(toks)))
    with torch.no_grad():
        return float(response_losses(model, b.input_ids, b.attention_mask, b.labels).mean())


def test_sign_pruning_top_harm_weights_raises_harm_loss_most(tiny_model, toks):
    scores = compute(tiny_model, toks, "signed_snip")
    base = harm_loss(tiny_model, toks)
    q = 0.01
    rises = {}
    candidates = {
        "top": scores,
        "most_negative": {n: -s for n, s in scores.items()},
        **{f"random{seed}": compute(tiny_model, [], "random", seed=seed) for seed in range(5)},
    }
    for label, s in candidates.items():
        mask = set_difference(s, None, q=q)
        handle = masking.apply(tiny_model, mask)
        rises[label] = harm_loss(tiny_model, toks) - base
        masking.restore(tiny_model, handle)
    assert rises["top"] > 0
    assert rises["top"] > max(v for k, v in rises.items() if k.startswith("random"))
    assert rises["top"] > rises["most_negative"]
    assert rises["most_negative"] < 0  # zeroing weights that hurt the data lowers its loss


def test_requires_grad_flags_are_restored(tiny_model, toks):
    tiny_model.model.embed_tokens.weight.requires_grad_(False)
    compute(tiny_model, toks, "signed_snip")
    flags = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    assert flags["model.embed_tokens.weight"] is False
    assert flags["model.layers.0.mlp.down_proj.weight"] is True
    assert all(p.grad is None for p in tiny_model.parameters())


def test_bad_inputs(tiny_model, tiny_tok):
    with pytest.raises(HarmcoreError, match="no calibration examples"):
        compute(tiny_model, [], "signed_snip", tokenizer=tiny_tok)
    with pytest.raises(HarmcoreError, match="no response tokens"):
        compute(tiny_model, [Example("hello", "")], "snip", tokenizer=tiny_tok)
    with pytest.raises(HarmcoreError, match="no response tokens"):
        compute(tiny_model, [TokenizedExample((1, 2), ())], "snip")
    with pytest.raises(HarmcoreError, match="signed_snip, snip, wanda"):
        compute(tiny_model, [Example("a", "b")], "snipp", tokenizer=tiny_tok)
    with pytest.raises(HarmcoreError, match="format"):
        FormatSpec(kind="pretrained")
