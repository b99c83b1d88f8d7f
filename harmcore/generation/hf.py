"""`HFGenerator`: transformers' `generate` on the live (possibly pruned) model, batched and
left-padded, with explicit sampling settings so the model's own generation_config never
changes the decoding by accident.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from harmcore.core.offload import input_device
from harmcore.data.examples import prompt_ids
from harmcore.generation.base import Request, Sampling, is_plain, render


def _left_padded(rows: list[list[int]], pad_id: int | None) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of token id lists, padded on the left (generation continues on the right)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), 0 if pad_id is None else pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            input_ids[b, width - len(row) :] = torch.tensor(row)
            attention_mask[b, width - len(row) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


class HFGenerator:
    """Batched transformers generation on the model as it is now (pruned or not)."""

    def __init__(self, model, tokenizer, prompt_format: str = "chat", batch_size: int = 8, progress: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.batch_size = batch_size
        self.progress = progress  # a progress bar per generate call (stderr)
        self.stats = {"tokens": 0, "seconds": 0.0}

    def weights_changed(self, names) -> None:
        """Nothing to do: generation runs on the live model itself."""

    def generate(self, requests: list[Request], sampling: Sampling) -> list[str]:
        return [texts[0] for texts in self.sample(requests, sampling, 1)]

    @torch.no_grad()
    def sample(self, requests: list[Request], sampling: Sampling, n: int) -> list[list[str]]:
        if n > 1 and sampling.temperature <= 0:  # greedy: n identical answers
            return [texts * n for texts in self.sample(requests, sampling, 1)]
        tok = self.tokenizer
        texts = [render(tok, r.prompt, self.prompt_format, r.prefix) for r in requests]
        plain = is_plain(tok, self.prompt_format)
        encoded = [prompt_ids(tok, text, plain) for text in texts]  # what `encode` gives, rendered once
        device = input_device(self.model)
        outputs: list[list[str]] = [[] for _ in texts]
        # Longest prompts first: batches of similar length waste less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        start = time.perf_counter()
        steps = range(0, len(order), self.batch_size)
        for b in tqdm(steps, desc="generate", unit="batch", disable=not self.progress or len(steps) < 2):
            idx = order[b : b + self.batch_size]
            enc = {k: v.to(device) for k, v in _left_padded([encoded[i] for i in idx], tok.pad_token_id).items()}
            kwargs = dict(
                max_new_tokens=sampling.max_new_tokens,
                num_return_sequences=n,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            if sampling.temperature > 0:
                torch.manual_seed(sampling.seed + b)
                kwargs.update(
                    do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k
                )
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            out = self.model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            for row in range(new.shape[0]):  # n rows per prompt, in prompt order
                ids = new[row]
                count = int((ids != tok.pad_token_id).sum()) if tok.pad_token_id is not None else len(ids)
                self.stats["tokens"] += count
                outputs[idx[row // n]].append(tok.decode(ids, skip_special_tokens=True).strip())
        self.stats["seconds"] += time.perf_counter() - start
        return outputs
