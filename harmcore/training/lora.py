"""LoRA fine-tuning on prompt/response pairs (loss on response tokens only), resumable.

Used by the harmful-LoRA jailbreak (harmcore.measure.attacks) and by emergent-misalignment
fine-tuning (harmcore.run.em). The LoRA targets every prunable linear (q/k/v/o,
gate/up/down) and is merged into a COPY of the model: the caller's model is untouched.

The learning rate follows `schedule` as transformers' Trainer schedules it (its `constant` and
`linear` schedules with warmup; `lr_factor`): warmup over ceil(warmup_ratio x optimizer steps),
then constant or linear decay to zero at the last step. AdamW's weight decay is `weight_decay`.

Resuming: with `checkpoint` set, the adapter, the AdamW state and the position in the
data (micro-batches done) are written atomically to one safetensors file every
`checkpoint_every` optimizer steps and at the end ("finished" in its metadata). A rerun
with the same file continues after the last checkpoint; a finished file is merged
without training. The data order depends only on `seed` and the epoch, so the resumed
run sees the same batches in the same order as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from harmcore import files
from harmcore.core.losses import response_losses
from harmcore.core.weights import prunable_linears
from harmcore.data.examples import Example, FormatSpec, batches, tokenize
from harmcore.errors import HarmcoreError

log = logging.getLogger("harmcore.training")


SCHEDULES = ("constant", "linear")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The learning-rate multiplier of optimizer step `step` (0-based) of `total`, after `warmup` warmup
    steps: step / warmup during the warmup, then 1 (constant) or (total - step) / (total - warmup) (linear)."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


def _peft(model, r: int, alpha: int, rslora: bool = False):
    from peft import LoraConfig, get_peft_model

    targets = sorted({name.rsplit(".", 1)[-1] for name in prunable_linears(model)})
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, bias="none",
                        use_rslora=rslora)  # fmt: skip
    return get_peft_model(model, config)


def _trainable(peft_model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in peft_model.named_parameters() if p.requires_grad}


def _save(path: Path, peft_model, opt, state: dict) -> None:
    params = _trainable(peft_model)
    tensors = {f"lora/{n}": p.detach() for n, p in params.items()}
    index = {id(p): n for n, p in params.items()}
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    for i, pid in enumerate(ids):
        for k, v in opt.state_dict()["state"].get(i, {}).items():
            tensors[f"opt/{index[pid]}/{k}"] = torch.as_tensor(v).reshape(-1) if k == "step" else v
    files.save_tensors(tensors, path, {"kind": "lora_checkpoint", "state": json.dumps(state)})


def _load(path: Path, peft_model, opt, expected: dict) -> dict:
    tensors, meta = files.load_tensors(path)
    if meta.get("kind") != "lora_checkpoint":
        raise HarmcoreError(f"{path} is not a harmcore LoRA checkpoint: delete it to train again")
    state = json.loads(meta["state"])
    if state["settings"] != expected:
        raise HarmcoreError(f"{path} was trained with other settings ({state['settings']}): delete it to train again")
    params = _trainable(peft_model)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[f"lora/{n}"])
    names = [n for g in opt.param_groups for n in (next(k for k, v in params.items() if v is p) for p in g["params"])]
    opt_state = {}
    for i, n in enumerate(names):
        entry = {k.rsplit("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"opt/{n}/")}
        if entry:
            entry["step"] = entry["step"].reshape(())
            opt_state[i] = entry
    opt.load_state_dict({"state": opt_state, "param_groups": opt.state_dict()["param_groups"]})
    return state


def lora_finetune(
    model,
    tokenizer,
    examples: Sequence[Example],
    fmt: FormatSpec,
    *,
    r: int = 128,
    alpha: int = 16,
    lr: float = 2e-4,
    epochs: int = 5,
    batch_size: int = 5,
    grad_accum: int = 1,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    schedule: str = "constant",
    warmup_ratio: float = 0.0,
    weight_decay: float = 0.0,
    warmup_steps: int | None = None,
    rslora: bool = False,
) -> tuple[torch.nn.Module, list[float]]:
    """A merged, fine-tuned COPY of `model` and the mean micro-batch loss (nats/token) per epoch.

    One optimizer step per `grad_accum` micro-batches of `batch_size` examples (effective
    batch = batch_size * grad_accum); the last step of an epoch may use fewer. The loss is
    the mean response-token loss of each micro-batch. The copy doubles the model's memory.
    `warmup_steps` (optimizer steps) replaces `warmup_ratio` when given; `rslora` scales the adapter
    by alpha / sqrt(r) instead of alpha / r (rank-stabilised LoRA).
    """
    if not examples:
        raise HarmcoreError("no examples to fine-tune on: give the LoRA training data")
    if min(r, batch_size, grad_accum, epochs, checkpoint_every) < 1:
        raise HarmcoreError(
            f"LoRA r={r}, batch_size={batch_size}, grad_accum={grad_accum}, epochs={epochs}, "
            f"checkpoint_every={checkpoint_every}: use positive integers"
        )
    if schedule not in SCHEDULES or not 0.0 <= warmup_ratio < 1.0 or weight_decay < 0 or (warmup_steps or 0) < 0:
        raise HarmcoreError(
            f"LoRA schedule={schedule}, warmup_ratio={warmup_ratio}, weight_decay={weight_decay}: use a schedule "
            f"of {', '.join(SCHEDULES)}, a warmup ratio in [0, 1) and a weight decay >= 0"
        )
    if any(p.device.type == "meta" for p in model.parameters()):
        raise HarmcoreError(
            "LoRA fine-tuning needs every weight on a device, but this model has offloaded blocks (model.offload, "
            "or cpu/disk in model.device_map): place it on GPUs only for fine-tuning"
        )
    torch.manual_seed(seed)
    peft_model = _peft(copy.deepcopy(model), r, alpha, rslora)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    toks = tokenize(tokenizer, examples, fmt)
    settings = {"r": r, "alpha": alpha, "lr": lr, "epochs": epochs, "batch_size": batch_size,
                "grad_accum": grad_accum, "seed": seed, "n": len(toks)}  # fmt: skip
    if (schedule, warmup_ratio, weight_decay) != ("constant", 0.0, 0.0):  # checkpoints from before them match
        settings.update(schedule=schedule, warmup_ratio=warmup_ratio, weight_decay=weight_decay)
    if warmup_steps is not None:
        settings["warmup_steps"] = warmup_steps
    if rslora:
        settings["rslora"] = True
    total = epochs * math.ceil(math.ceil(len(toks) / batch_size) / grad_accum)  # optimizer steps
    warmup = math.ceil(warmup_ratio * total) if warmup_steps is None else warmup_steps
    state = {"micro": 0, "history": [], "losses": [], "finished": False, "settings": settings, "steps": 0}
    path = Path(checkpoint) if checkpoint else None
    if path is not None and path.exists():
        state = _load(path, peft_model, opt, settings)
        log.info("resuming LoRA training from %s (%d micro-batches done)", path, state["micro"])
    device = next(peft_model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    peft_model.train()
    micro, steps = 0, 0
    for epoch in range(epochs):
        rng = random.Random(seed + epoch)
        order = list(range(len(toks)))
        rng.shuffle(order)
        epoch_batches = list(batches([toks[i] for i in order], batch_size, pad))
        if state["finished"]:
            break
        for j, b in enumerate(epoch_batches):
            micro += 1
            if micro <= state["micro"]:  # done before the checkpoint
                continue
            loss = response_losses(
                peft_model, b.input_ids.to(device), b.attention_mask.to(device), b.labels.to(device)
            ).mean()
            (loss / grad_accum).backward()
            state["losses"].append(float(loss.detach()))
            if (j + 1) % grad_accum == 0 or j + 1 == len(epoch_batches):
                for group in opt.param_groups:
                    group["lr"] = lr * lr_factor(state.get("steps", 0), total, warmup, schedule)
                opt.step()
                opt.zero_grad(set_to_none=True)
                steps += 1
                state["steps"] = state.get("steps", 0) + 1
                state["micro"] = micro
                if j + 1 == len(epoch_batches):
                    state["history"].append(sum(state["losses"]) / len(state["losses"]))
                    state["losses"] = []
                if path is not None and steps % checkpoint_every == 0:
                    _save(path, peft_model, opt, state)
    state["finished"] = True
    if path is not None:
        _save(path, peft_model, opt, state)
    merged = peft_model.merge_and_unload()
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged, state["history"]
