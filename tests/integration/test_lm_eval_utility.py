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


def test_the_authors_lm_eval_settings_reach_lm_eval(tiny_model, tiny_tok, tmp_path, monkeypatch):
    """eval.utility.lm_eval_protocol=paper: a base model 3-shot (examples drawn with the seed), a chat
    model zero-shot through its chat template; both run for real on the live model."""
    import lm_eval

    tasks = write_task(tmp_path / "tasks")
    yaml = tasks / "mini_facts.yaml"
    yaml.write_text(yaml.read_text() + "fewshot_split: test\n")
    seen, real = [], lm_eval.simple_evaluate

    def spy(**kw):
        seen.append({k: kw[k] for k in ("num_fewshot", "apply_chat_template", "fewshot_random_seed")})
        return real(**kw)

    monkeypatch.setattr(lm_eval, "simple_evaluate", spy)
    base = lm_eval_accuracy(tiny_model, tiny_tok, ["mini_facts"], str(tasks), num_fewshot=3, seed=5)
    chat = lm_eval_accuracy(tiny_model, tiny_tok, ["mini_facts"], str(tasks), chat_template=True)
    zero = lm_eval_accuracy(tiny_model, tiny_tok, ["mini_facts"], str(tasks))
    assert seen == [{"num_fewshot": 3, "apply_chat_template": False, "fewshot_random_seed": 5},
                    {"num_fewshot": 0, "apply_chat_template": True, "fewshot_random_seed": 0},
                    {"num_fewshot": 0, "apply_chat_template": False, "fewshot_random_seed": 0}]  # fmt: skip
    for r in (base, chat, zero):
        assert set(r["mini_facts"]) == {"acc", "acc_norm"} and 0.0 <= r["mini_facts"]["acc"] <= 1.0


def test_the_papers_suites_are_lm_eval_task_names():
    """The task names docs/protocol.md gives for the paper's suites and zero-shot set are lm-eval's own
    (indexed from the installed package, offline), and eval=full runs the zero-shot set."""
    from lm_eval.tasks import TaskManager
    from omegaconf import OmegaConf

    from harmcore.measure.utility import PAPER_SUITES, ZERO_SHOT_TASKS
    from harmcore.run.options import CONF_DIR

    known = set(TaskManager().all_tasks)
    assert set(PAPER_SUITES.values()) | set(ZERO_SHOT_TASKS) <= known
    full = OmegaConf.load(CONF_DIR / "eval" / "full.yaml")
    assert tuple(full.utility.lm_eval_tasks) == ZERO_SHOT_TASKS
    protocol = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in protocol for name in PAPER_SUITES.values())
