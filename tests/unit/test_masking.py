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


def test_every_alpha_mode_changes_exactly_the_selected_weights(tiny_model):
    """pruning.alpha: null zeroes the selected weights, a number multiplies them, mean sets them to the
    mean of the selected weights of their matrix (the authors' --alpha); nothing else moves, and
    restore puts every weight back bit-exactly."""
    mask = set_difference(compute(tiny_model, [], "magnitude"), None, 0.05, 0.0)
    before = {n: m.weight.detach().clone() for n, m in prunable_linears(tiny_model).items()}
    keys = set()
    for alpha, expect in ((None, lambda w: torch.zeros_like(w)), ("0.5", lambda w: w * 0.5),
                          ("mean", lambda w: torch.full_like(w, w.mean().item()))):  # fmt: skip
        m = masking.with_options(mask, alpha)
        keys.add(masking.content_key(m))
        handle = masking.apply(tiny_model, m)
        for name, module in prunable_linears(tiny_model).items():
            w, w0 = module.weight.detach().reshape(-1), before[name].reshape(-1)
            idx = m.indices.get(name, torch.empty(0, dtype=torch.long))
            rest = torch.ones_like(w0, dtype=torch.bool)
            rest[idx] = False
            assert torch.equal(w[rest], w0[rest]), (alpha, name)  # only the selected weights change
            if idx.numel():
                assert torch.allclose(w[idx], expect(w0[idx]), atol=1e-7), (alpha, name)
        masking.restore(tiny_model, handle)
        assert all(torch.equal(module.weight, before[n]) for n, module in prunable_linears(tiny_model).items())
    assert len(keys) == 3 and masking.content_key(masking.with_options(mask)) == masking.content_key(mask)


def test_pruning_only_given_layers_keeps_each_kept_matrix_whole():
    from harmcore.core.selection import Mask

    mask = Mask({"model.layers.0.mlp.up_proj": torch.tensor([1, 2]), "model.layers.1.mlp.up_proj": torch.tensor([3]),
                 "model.layers.10.self_attn.q_proj": torch.tensor([4])}, {}, {})  # fmt: skip
    only = masking.with_options(mask, layers=[1, 10])
    assert set(only.indices) == {"model.layers.1.mlp.up_proj", "model.layers.10.self_attn.q_proj"}
    assert only.meta["layers"] == "1,10" and masking.with_options(mask).indices == mask.indices


def test_bad_alpha_is_one_line():
    from harmcore.run.config import PruningConfig

    with pytest.raises(HarmcoreError, match="pruning.alpha=half: use null"):
        PruningConfig(alpha="half")
    assert PruningConfig(alpha=0.5).alpha == "0.5" and PruningConfig(alpha="mean").alpha == "mean"


def test_the_fingerprint_sees_one_pruned_weight_and_not_the_order_of_summation():
    """The per-matrix reduction is an integer sum of bit patterns (mod 2**64): a hand case, any order
    or chunking and an independent numpy sum agree, and zeroing one weight the sample skips changes the
    fingerprint."""
    import numpy as np

    from harmcore.core.weights import bit_sum, fingerprint, prunable_linears
    from harmcore.models.builders import tiny_random_model

    # 1.0 is 0x3F800000 = 1065353216 and -2.0 is 0xC0000000 = -1073741824 as int32
    assert bit_sum(torch.tensor([1.0, -2.0])) == (1065353216 - 1073741824) % 2**64
    w = torch.randn(1000, dtype=torch.float32) * 1e-3
    independent = int(np.frombuffer(w.numpy()[::-1].tobytes(), dtype=np.int32).astype(np.int64).sum()) % 2**64
    assert bit_sum(w) == bit_sum(w.flip(0)) == bit_sum(w, chunk=7) == bit_sum(w.reshape(20, 50).t().contiguous())
    assert bit_sum(w) == independent
    assert bit_sum(w.bfloat16()) == int(w.bfloat16().view(torch.int16).long().sum()) % 2**64

    model = tiny_random_model()
    before = fingerprint(model)
    matrix = prunable_linears(model)["model.layers.1.mlp.down_proj"].weight
    assert matrix.numel() // 4096 == 2  # the sample takes every second value: index 1 is not in it
    with torch.no_grad():
        matrix.view(-1)[1] = 0.0
    assert fingerprint(model) != before


def test_the_fingerprint_before_v2_is_still_recognised():
    """Masks made before v2 recorded the float32 abs-sum fingerprint; this is the value that code gave
    for the seed-0 tiny model on the CPU (so export can still match their weights)."""
    from harmcore.core.weights import fingerprint, fingerprint_v1

    model = tiny_random_model()
    assert fingerprint_v1(model) == "4f2ba5988baf6661" != fingerprint(model)
