"""Re-masking after a LoRA merge, on and off, read off the merged weights of the EM recipe's pruned
fine-tune and of the harmful-LoRA attack (the code paths that do it, not the masking helper)."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from harmcore.core.selection import set_difference
from harmcore.core.weights import prunable_linears
from harmcore.data.examples import FormatSpec
from harmcore.generation.base import Request, Sampling
from harmcore.measure import attacks, suite
from harmcore.measure.config import AttackConfig
from harmcore.models.config import ModelConfig
from harmcore.run.config import Config, EMConfig, EvalConfig
from harmcore.run.context import JobContext
from harmcore.run.em import _Recipe
from harmcore.run.session import Session


def masked_values(model, mask) -> torch.Tensor:
    linears = prunable_linears(model)
    return torch.cat([linears[n].weight.detach().reshape(-1)[i] for n, i in mask.indices.items() if i.numel()])


def random_mask(model, q=0.05):
    scores = {
        n: torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(1))
        for n, m in prunable_linears(model).items()
    }
    return set_difference(scores, None, q, 0.0)


@pytest.mark.parametrize("reapply", [True, False])
def test_em_pruned_finetune_is_masked_again_only_when_asked(tmp_path, harm_examples, reapply):
    em = EMConfig(lora_r=4, lora_alpha=8, lr=1e-3, batch_size=2, grad_accum=1, reapply_mask=reapply)
    cfg = Config(model=ModelConfig(name="tiny_random", builder="tiny_random", device="cpu"), em=em,
                 cache_dir=str(tmp_path / "cache"))  # fmt: skip
    recipe = _Recipe(JobContext.create(cfg, Session(), tmp_path / "job", "em"), tmp_path / "job")
    recipe.train = harm_examples
    mask = random_mask(recipe.lm.model)
    original = masked_values(recipe.lm.model, mask)
    assert (original != 0).all()
    model, _ = recipe.finetune("pruned", mask)
    merged = masked_values(model, mask)
    if reapply:
        assert (merged == 0).all()
    else:
        assert (merged != 0).any() and not torch.equal(merged, original)  # regrown from zero, not restored
    assert torch.equal(masked_values(recipe.lm.model, mask), original)  # the original model is restored


@pytest.mark.parametrize("reapply", [True, False])
def test_lora_attack_masks_the_merged_model_again_only_when_asked(
    tiny_model, tiny_tok, harm_examples, monkeypatch, reapply
):
    seen = {}

    class Recording:
        def __init__(self, model, *args, **kwargs):
            seen["model"] = model

        def generate(self, requests, sampling):
            return ["x"] * len(requests)

    monkeypatch.setattr(attacks, "HFGenerator", Recording)
    a = AttackConfig(lora_r=4, lora_alpha=8, lora_lr=1e-3, lora_epochs=1, lora_batch_size=2, lora_reapply_mask=reapply)
    cfg = replace(Config(), eval=EvalConfig(attacks=a))
    no_cache = lambda kind, meta, compute, stage, expect=None: compute()  # noqa: E731
    ctx = suite.Context(tiny_model, tiny_tok, "chat", cfg, {}, no_cache, None, None, FormatSpec("chat", max_length=128))
    mask = random_mask(tiny_model)
    original = masked_values(tiny_model, mask)
    data = SimpleNamespace(harmful_pairs=harm_examples)
    attacks._attack_generations(ctx, ("lora",), [Request("p")], Sampling(4), mask, "m", data, "t")
    merged = masked_values(seen["model"], mask)
    assert seen["model"] is not tiny_model  # a merged copy
    assert (merged == 0).all() if reapply else (merged != 0).any()
    assert torch.equal(masked_values(tiny_model, mask), original)  # the attacked model is restored
