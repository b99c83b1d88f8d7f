"""The compact score store: only what selection reads, and masks identical to the full scores'."""

import pytest
import torch

from harmcore.core.score_store import StaleScores, load_top, save_top, score_path
from harmcore.core.selection import RANKINGS, SetDifference

SHAPES = {"model.layers.0.mlp.up_proj": (24, 40), "model.layers.0.self_attn.q_proj": (16, 16),
          "model.layers.1.mlp.down_proj": (40, 24)}  # fmt: skip


def scores(seed: int) -> dict[str, torch.Tensor]:
    """Random scores with many exact ties (values rounded to a coarse grid), as magnitude scores have."""
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(s, generator=g) * 4).round() / 4 for n, s in SHAPES.items()}


def same(a, b) -> bool:
    return set(a.indices) == set(b.indices) and all(torch.equal(a.indices[n], b.indices[n]) for n in a.indices)


@pytest.mark.parametrize("ranking", RANKINGS)
def test_masks_from_the_compact_store_equal_the_full_scores_masks(tmp_path, ranking):
    harm, preserve = scores(0), scores(1)
    q_max, p = 0.1, 0.05
    meta = {"method": "signed_snip", "model": "m", "weights": "w"}
    save_top(harm, tmp_path / "harm.safetensors", meta, q_max, ranking)
    save_top(preserve, tmp_path / "preserve.safetensors", meta, p, ranking)
    harm_top = load_top(tmp_path / "harm.safetensors", meta, SHAPES, q_max, ranking)
    preserve_top = load_top(tmp_path / "preserve.safetensors", meta, SHAPES, p, ranking)
    full, compact = SetDifference(harm, preserve, p, ranking), SetDifference(harm_top, preserve_top, p, ranking)
    for q in (0.0, 0.01, 0.02, 0.04, 0.05, 0.07, 0.1):
        assert same(full.mask(q), compact.mask(q)), (ranking, q)
    assert full.mask(0.1).n_pruned > 0
    total = sum(int(t.numel()) for t in harm_top.values())  # dense again in memory, but only ...
    kept = sum(int((t > torch.finfo(torch.float32).min).sum()) for t in harm_top.values())
    assert kept < 0.25 * total  # ... a small part of it was stored
    with pytest.raises(StaleScores, match="needs the full scores again"):
        load_top(tmp_path / "harm.safetensors", meta, SHAPES, 0.2, ranking)  # a larger q than kept


def test_the_compact_file_keeps_its_promise(tmp_path):
    harm = scores(0)
    meta = {"method": "signed_snip"}
    path = tmp_path / "h.safetensors"
    save_top(harm, path, meta, 0.1, "per_matrix")
    with pytest.raises(StaleScores, match="another ranking|needs the full scores"):
        load_top(path, meta, SHAPES, 0.1, "global")
    with pytest.raises(StaleScores, match="model's matrices"):
        load_top(path, meta, {**SHAPES, "extra": (2, 2)}, 0.1, "per_matrix")
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # a flipped bit in the stored values
    path.write_bytes(bytes(data))
    with pytest.raises(StaleScores, match="digest"):
        load_top(path, meta, SHAPES, 0.1, "per_matrix")
    assert score_path(tmp_path, {"method": "x", "a": 1}).parent.name == "scores"
