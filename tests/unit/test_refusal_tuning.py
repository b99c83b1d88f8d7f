"""The offline aligned partner: refusal tuning moves the model towards refusing held-out harmful requests."""

import torch

from harmcore import sources
from harmcore.attacks import REFUSALS
from harmcore.data import Example, FormatSpec
from harmcore.evals import response_nll
from harmcore.models import ModelSpec, build, load
from harmcore.refusal_tuning import HELD_OUT, beyond_held_out, build_refusal_tuned


def test_training_prompts_are_never_evaluation_prompts():
    harmful = sources.strongreject()
    trained = {p.text for p in beyond_held_out(harmful, 48)}
    assert len(trained) == 48
    for n_eval in (1, 24, HELD_OUT):
        _, held = sources.split(harmful, n_eval, 24, seed=0)
        assert trained.isdisjoint(p.text for p in held)


def test_refusal_tuned_copy_refuses_held_out_requests_more_readily(tmp_path):
    base = build("tiny_random", tmp_path)
    out = build_refusal_tuned(base, tmp_path / "tuned", n_harmful=16, n_benign=8, response_tokens=8, epochs=4, lr=3e-3)
    held_out = [p.text for p in sources.split(sources.strongreject(), 8, 0, seed=0)[1] if len(p.text) < 150]
    probe = [Example(p, REFUSALS[0]) for p in held_out]
    fmt = FormatSpec(kind="chat", max_length=256)
    nll = {}
    for name, path in (("base", base), ("tuned", out)):
        model, tok = load(ModelSpec(name=name, path=str(path), dtype="float32", device="cpu"))
        nll[name] = sum(response_nll(model, tok, probe, fmt, 4)) / len(probe)
        weights = {n: p.detach().clone() for n, p in model.named_parameters() if "layers.0.mlp" in n}
        nll[name + "_weights"] = weights
    assert nll["tuned"] < nll["base"] - 0.5, nll  # nats/token on refusals to requests it never saw
    assert any(not torch.equal(nll["base_weights"][k], v) for k, v in nll["tuned_weights"].items())
