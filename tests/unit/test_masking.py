import pytest
import torch

from harmcore.core import masking
from harmcore.core.scoring import compute
from harmcore.core.selection import set_difference
from harmcore.core.weights import prunable_linears
from harmcore.errors import HarmcoreError
from harmcore.models.builders import tiny_random_model


def weights(model):
    return {n: m.weight.detach().clone() for n, m in prunable_linears(model).items()}


def test_apply_restore_roundtrip_is_bit_exact(tiny_model):
    before = weights(tiny_model)
    scores = compute(tiny_model, [], "random", seed=3)
    mask = set_difference(scores, None, q=0.05)
    handle = masking.apply(tiny_model, mask)
    after = weights(tiny_model)
    n_zeroed = sum(int(((before[n] != 0) & (after[n] == 0)).sum()) for n in before)
    assert n_zeroed == mask.n_pruned > 0
    for n, idx in mask.indices.items():
        assert torch.all(after[n].view(-1)[idx] == 0)
    masking.restore(tiny_model, handle)
    for n, w in weights(tiny_model).items():
        assert torch.equal(w.view(torch.int32), before[n].view(torch.int32))


def test_saved_mask_reapplies_to_reloaded_model(tmp_path, tiny_model):
    scores = compute(tiny_model, [], "magnitude")
    mask = set_difference(scores, None, q=0.02, ranking="global")
    path = tmp_path / "mask.safetensors"
    masking.save(mask, path, {"model": "tiny@default", "weights": "0123abcd"})
    loaded = masking.load(path)
    assert loaded.meta["ranking"] == "global" and loaded.sparsity == mask.sparsity
    assert loaded.meta["weights"] == "0123abcd" and loaded.meta["model"] == "tiny@default"  # what it was made on
    other = tiny_random_model(seed=0, vocab_size=tiny_model.config.vocab_size)
    masking.apply(other, loaded)
    masking.apply(tiny_model, mask)
    for n, w in weights(other).items():
        assert torch.equal(w == 0, prunable_linears(tiny_model)[n].weight == 0)


def test_mask_for_other_architecture_rejected(tiny_model):
    mask = set_difference({"model.layers.0.mlp.down_proj": torch.rand(7, 3)}, None, q=0.5)
    with pytest.raises(HarmcoreError, match="21-weight"):
        masking.apply(tiny_model, mask)
    mask = set_difference({"model.embed_tokens": torch.rand(7, 3)}, None, q=0.5)
    with pytest.raises(HarmcoreError, match="not a prunable linear"):
        masking.apply(tiny_model, mask)


def test_model_without_prunable_linears():
    class NoLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.LayerNorm(4) for _ in range(2)])

    with pytest.raises(HarmcoreError, match="nothing to prune"):
        prunable_linears(NoLinear())
    with pytest.raises(HarmcoreError, match="not a decoder-only"):
        prunable_linears(torch.nn.Linear(3, 3))
