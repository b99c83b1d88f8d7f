"""Counts of pruned weights per layer x module, on hand-built masks."""

import csv
import json

import pytest
import torch

from harmcore.core import masking
from harmcore.core.selection import Mask
from harmcore.errors import HarmcoreError
from harmcore.report import locations


def hand_mask() -> Mask:
    idx = {
        "model.layers.0.self_attn.q_proj": torch.tensor([0, 5, 9]),
        "model.layers.0.mlp.down_proj": torch.tensor([1]),
        "model.layers.1.self_attn.v_proj": torch.tensor([2, 3]),
        "model.layers.1.mlp.gate_proj": torch.tensor([7, 8, 11, 12]),
    }
    numel = {f"model.layers.{i}.{m}": 100 for i in (0, 1) for m in ("self_attn.q_proj", "self_attn.v_proj")}
    numel |= {f"model.layers.{i}.mlp.{m}": 200 for i in (0, 1) for m in ("gate_proj", "down_proj")}
    return Mask(idx, numel)


def test_parse_name():
    assert locations.parse_name("model.layers.12.self_attn.o_proj") == (12, "o")
    assert locations.parse_name("transformer.h.3.attn.c_attn") == (3, "c_attn")
    with pytest.raises(HarmcoreError, match="no layer index"):
        locations.parse_name("lm_head")


def test_table_counts_every_cell():
    t = locations.table(hand_mask())
    assert t.layers == [0, 1] and t.modules == ["q", "v", "gate", "down"]  # the q, k, v, o, gate, up, down order
    assert [[t.count(la, m) for m in t.modules] for la in t.layers] == [[3, 0, 0, 1], [0, 2, 4, 0]]
    assert t.fraction(0, "q") == 0.03 and t.fraction(1, "gate") == 0.02 and t.fraction(0, "v") == 0.0
    assert t.total == 10


def test_write_csv_json_png_round_trip(tmp_path):
    mask = hand_mask()
    masking.save(mask, tmp_path / "mask.safetensors")
    assert locations.write_for_job(tmp_path)
    with open(tmp_path / "locations.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["layer", "q", "v", "gate", "down", "total"]
    assert rows[1:] == [
        ["0", "3", "0", "0", "1", "4"],
        ["1", "0", "2", "4", "0", "6"],
        ["total", "3", "2", "4", "1", "10"],
    ]
    data = json.loads((tmp_path / "locations.json").read_text())
    assert data["n_pruned"] == mask.n_pruned == 10 and data["fraction"][1][2] == 0.02
    assert (tmp_path / "locations.png").read_bytes()[:4] == b"\x89PNG"
    assert not locations.write_for_job(tmp_path / "nothing")


def test_empty_mask_has_zero_cells():
    t = locations.table(Mask({}, {"model.layers.0.mlp.up_proj": 10, "model.layers.1.mlp.up_proj": 10}))
    assert t.layers == [0, 1] and t.modules == ["up"] and t.total == 0


def test_background_write_gives_the_same_files(tmp_path):
    mask = hand_mask()
    drawn = locations.write_in_background(mask, tmp_path / "bg", title="q")
    assert (tmp_path / "bg" / "locations.csv").exists()  # the counts are written at once
    t = drawn.result(timeout=60)
    locations.write(mask, tmp_path / "fg", title="q")
    assert t.total == 10
    for name in ("locations.csv", "locations.json"):
        assert (tmp_path / "bg" / name).read_bytes() == (tmp_path / "fg" / name).read_bytes()
    png = (tmp_path / "bg" / "locations.png").read_bytes()
    assert png[:4] == b"\x89PNG" and png == (tmp_path / "fg" / "locations.png").read_bytes()
