"""The offline aligned partner: refusal tuning moves the model towards refusing held-out harmful requests."""

import torch

from harmcore.core.losses import response_nll
from harmcore.data import sources
from harmcore.data.examples import Example, FormatSpec
from harmcore.data.refusals import REFUSALS
from harmcore.models.builders import build
from harmcore.models.config import ModelConfig
from harmcore.models.loading import load
from harmcore.training.refusal_tuning import HELD_OUT, beyond_held_out, refusal_tune


def test_training_prompts_are_never_evaluation_prompts():
    harmful = sources.strongreject()
    trained = {p.text for p in beyond_held_out(harmful, 48)}
    assert len(trained) == 48
    for n_eval in (1, 24, HELD_OUT):
        _, held = sources.split(harmful, n_eval, 24, seed=0)
        assert trained.isdisjoint(p.text for p in held)


def test_refusal_tuned_copy_refuses_held_out_requests_more_readily(tmp_path):
    base = build("tiny_random", tmp_path)
    model, tok = load(ModelConfig(name="base", path=str(base), dtype="float32", device="cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuned = refusal_tune(model, tok, n_harmful=16, n_benign=8, response_tokens=8, epochs=4, lr=3e-3)
    held_out = [p.text for p in sources.split(sources.strongreject(), 8, 0, seed=0)[1] if len(p.text) < 150]
    probe = [Example(p, REFUSALS[0]) for p in held_out]
    fmt = FormatSpec(kind="chat", max_length=256)
    nll = {
        name: sum(response_nll(m, tok, probe, fmt, 4)) / len(probe) for name, m in (("base", model), ("tuned", tuned))
    }
    assert nll["tuned"] < nll["base"] - 0.5, nll  # nats/token on refusals to requests it never saw
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # a merged copy: the base is untouched
    changed = [n for n, p in tuned.named_parameters() if "layers.0.mlp" in n and not torch.equal(before[n], p)]
    assert changed
