"""The LoRA learning-rate schedule against transformers' own schedulers (what SFTTrainer steps with)."""

import math

import pytest
import torch
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from harmcore.data.examples import FormatSpec
from harmcore.errors import HarmcoreError
from harmcore.training import lora
from harmcore.training.lora import lr_factor


@pytest.mark.parametrize("schedule", ["constant", "linear"])
@pytest.mark.parametrize("total,warmup_ratio", [(20, 0.05), (7, 0.0), (12, 0.3)])
def test_the_factor_of_each_step_is_transformers_schedule(schedule, total, warmup_ratio):
    warmup = math.ceil(warmup_ratio * total)  # transformers' TrainingArguments.get_warmup_steps
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    make = get_linear_schedule_with_warmup if schedule == "linear" else get_constant_schedule_with_warmup
    sched = make(opt, warmup, total) if schedule == "linear" else make(opt, warmup)
    theirs = []
    for _ in range(total):
        theirs.append(opt.param_groups[0]["lr"])  # the lr the optimizer step uses
        opt.step()
        sched.step()
    assert [lr_factor(k, total, warmup, schedule) for k in range(total)] == pytest.approx(theirs, abs=1e-12)


def test_the_optimizer_steps_with_the_scheduled_rates(tiny_model, tiny_tok, harm_examples, monkeypatch):
    seen = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append((self.param_groups[0]["lr"], self.param_groups[0]["weight_decay"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    fmt = FormatSpec(kind="chat", max_length=128)
    n = len(harm_examples)
    lora.lora_finetune(tiny_model, tiny_tok, harm_examples, fmt, r=2, alpha=4, lr=1e-3, epochs=2, batch_size=2,
                       schedule="linear", warmup_ratio=0.25, weight_decay=0.01)  # fmt: skip
    total = 2 * math.ceil(n / 2)
    warmup = math.ceil(0.25 * total)
    assert [lr for lr, _ in seen] == pytest.approx([1e-3 * lr_factor(k, total, warmup, "linear") for k in range(total)])
    assert seen[0][0] == 0.0 and seen[warmup][0] == pytest.approx(1e-3) and {wd for _, wd in seen} == {0.01}


def test_bad_schedule_settings_are_one_line(tiny_model, tiny_tok, harm_examples):
    fmt = FormatSpec(kind="chat", max_length=128)
    with pytest.raises(HarmcoreError, match="schedule=cosine"):
        lora.lora_finetune(tiny_model, tiny_tok, harm_examples, fmt, schedule="cosine")


def test_training_pairs_from_the_red_teaming_layout_and_from_jsonl(tmp_path):
    from harmcore.data.sources import training_pairs

    csv = tmp_path / "red_teaming_prompts.csv"
    csv.write_text('text,rejected_response,harmful\n"How to x?","Do y.",1\n"Hello","Hi.",0\n"How to z?","Do w.",1\n')
    assert training_pairs(str(csv), "k") == [("How to x?", "Do y."), ("How to z?", "Do w.")]  # harmful = 1 only
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"prompt": "p", "response": "r"}\n')
    assert training_pairs(str(jsonl), "k") == [("p", "r")]
    only_benign = tmp_path / "benign.csv"
    only_benign.write_text("text,rejected_response,harmful\nHello,Hi.,0\n")
    with pytest.raises(HarmcoreError, match="holds no training pairs"):
        training_pairs(str(only_benign), "eval.attacks.lora_data_path")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p"}\n')
    with pytest.raises(HarmcoreError, match="'response' must be a non-empty string"):
        training_pairs(str(broken), "k")


def test_warmup_in_steps_and_rank_stabilised_scaling(tiny_model, tiny_tok, harm_examples, monkeypatch):
    """em's settings: warmup_steps (their slurm script: 5) replaces the ratio; rslora scales the adapter
    by alpha / sqrt(r) (peft's use_rslora) instead of alpha / r."""
    import peft

    seen, scalings = [], []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    real = peft.get_peft_model

    def capture(model, config, *a, **kw):
        scalings.append(config.use_rslora)
        out = real(model, config, *a, **kw)
        layer = next(m for m in out.modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict) and m.scaling)
        scalings.append(next(iter(layer.scaling.values())))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    monkeypatch.setattr(peft, "get_peft_model", capture)
    fmt = FormatSpec(kind="chat", max_length=128)
    lora.lora_finetune(tiny_model, tiny_tok, harm_examples, fmt, r=4, alpha=8, lr=1e-3, epochs=2, batch_size=2,
                       schedule="linear", warmup_steps=2, rslora=True)  # fmt: skip
    total = 2 * math.ceil(len(harm_examples) / 2)
    assert seen == pytest.approx([1e-3 * lr_factor(k, total, 2, "linear") for k in range(total)])
    assert seen[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert scalings == [True, pytest.approx(8 / math.sqrt(4))]
    lora.lora_finetune(tiny_model, tiny_tok, harm_examples[:2], fmt, r=4, alpha=8, epochs=1, batch_size=2)
    assert scalings[2:] == [False, pytest.approx(8 / 4)]
