"""lm-evaluation-harness on the in-memory model, offline, with a local multiple-choice task."""

import json
from pathlib import Path

import pytest
import torch

from harmcore.core import masking
from harmcore.core.selection import Mask
from harmcore.core.weights import prunable_linears
from harmcore.errors import HarmcoreError
from harmcore.measure.utility import lm_eval_accuracy

DATA = Path(__file__).parents[1] / "fixtures" / "lm_eval" / "mini_facts.jsonl"


def write_task(folder: Path) -> Path:
    """A local YAML task (the data path must be absolute, so the YAML is written here)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mini_facts.yaml").write_text(
        "task: mini_facts\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(DATA))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    return folder


def test_accuracy_changes_under_a_mask_and_comes_back(tiny_model, tiny_tok, tmp_path):
    tasks = write_task(tmp_path / "tasks")
    dense = lm_eval_accuracy(tiny_model, tiny_tok, ["mini_facts"], include_path=str(tasks), batch_size=8)
    assert set(dense["mini_facts"]) == {"acc", "acc_norm"} and 0.0 <= dense["mini_facts"]["acc"] <= 1.0
    linears = prunable_linears(tiny_model)
    mask = Mask(
        {n: torch.arange(0, m.weight.numel(), 2) for n, m in linears.items()},  # half of every matrix
        {n: m.weight.numel() for n, m in linears.items()},
    )
    handle = masking.apply(tiny_model, mask)
    pruned = lm_eval_accuracy(tiny_model, tiny_tok, ["mini_facts"], include_path=str(tasks))
    masking.restore(tiny_model, handle)
    assert pruned["mini_facts"] != dense["mini_facts"]
    limited = lm_eval_accuracy(tiny_model, tiny_tok, ["mini_facts"], include_path=str(tasks), limit=4)
    again = lm_eval_accuracy(tiny_model, tiny_tok, ["mini_facts"], include_path=str(tasks))
    assert again == dense and limited["mini_facts"]["acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_unknown_task_is_one_clear_error(tiny_model, tiny_tok, tmp_path):
    tasks = write_task(tmp_path / "tasks")
    with pytest.raises(HarmcoreError, match=r"unknown lm-eval task 'mini_fact' \(did you mean mini_facts"):
        lm_eval_accuracy(tiny_model, tiny_tok, ["mini_fact"], include_path=str(tasks), include_defaults=False)
