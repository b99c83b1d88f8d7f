"""Calibration examples and their conversion to token ids.

An `Example` is a prompt and a response. Scoring needs the loss on the response
tokens only, so examples become `TokenizedExample`s holding the two id lists
separately; `collate` pads a batch and labels every prompt and pad position -100.

Formats:
- ``raw`` (the reference "pretrained format"): ``prompt + "\\n"`` and the response
  tokenized separately without special tokens, then concatenated. Base and instruct
  models see identical inputs this way. The prompt starts with the special tokens
  the tokenizer puts before any text by default (Llama's and Mistral's BOS; none
  for most others), as a plain `tokenizer(prompt)` would; `add_bos` forces the BOS
  on or off. Optional EOS after the response.
- ``chat``: the model's chat template; the response part is everything the
  template adds after the generation prompt (assistant text and end-of-turn
  token). A tokenizer without a chat template gets ``"Q: {prompt}\\nA:"`` (after
  its default leading special tokens) and ``" {response}"``, the prompt format used
  for base models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from harmcore.errors import HarmcoreError

FORMATS = ("raw", "chat")
MAX_CHARS_PER_TOKEN = 64


@dataclass(frozen=True)
class Example:
    """One prompt + response pair; `domain` is the harm category (None for benign)."""

    prompt: str
    response: str
    domain: str | None = None


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids of a prompt and its response; the loss is taken on `response_ids` only."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_ids", tuple(int(i) for i in self.prompt_ids))
        object.__setattr__(self, "response_ids", tuple(int(i) for i in self.response_ids))


@dataclass(frozen=True)
class FormatSpec:
    """How examples become token ids (see module docstring)."""

    kind: str = "raw"
    add_bos: bool | None = None  # raw format: BOS first? None = as the tokenizer does by default
    add_eos: bool = False  # raw format: append the tokenizer's EOS token after the response
    max_length: int = 512  # truncate the response so prompt + response fits
    system_prompt: str | None = None  # chat format: optional system message

    def __post_init__(self) -> None:
        if self.kind not in FORMATS:
            raise HarmcoreError(f"unknown data format {self.kind!r}: use one of {', '.join(FORMATS)}")


def qa_prompt(prompt: str) -> str:
    """The prompt format for models without a chat template (base models)."""
    return f"Q: {prompt}\nA:"


def leading_special_ids(tokenizer) -> list[int]:
    """The special tokens `tokenizer` puts before any text by default (e.g. a BOS; often none)."""
    probe = "Hello"
    full, bare = list(tokenizer(probe)["input_ids"]), _encode(tokenizer, probe)
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start]
    return []


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt_text(tokenizer, prompt: str, system_prompt: str | None = None) -> str:
    """The text a chat model sees before its answer (generation prompt included)."""
    if not has_chat_template(tokenizer):
        return qa_prompt(prompt)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer, text: str, plain: bool) -> list[int]:
    """Token ids of a rendered prompt: a chat template's text as it is (it writes its own special
    tokens); a plain one (Q/A, raw) after the tokenizer's default leading special tokens, i.e.
    exactly what `tokenizer(text)` starts with."""
    return (leading_special_ids(tokenizer) if plain else []) + _encode(tokenizer, text)


def _split_chat(tokenizer, ex: Example, spec: FormatSpec) -> tuple[str, str]:
    if not has_chat_template(tokenizer):
        return qa_prompt(ex.prompt), " " + ex.response
    messages = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
    messages.append({"role": "user", "content": ex.prompt})
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": ex.response}], tokenize=False)
    if not full.startswith(prompt_text):
        raise HarmcoreError(
            "the chat template does not render the conversation as prompt + answer; "
            "use data format 'raw' for this model"
        )
    return prompt_text, full[len(prompt_text) :]


def _raw_lead(tokenizer, spec: FormatSpec) -> list[int]:
    if spec.add_bos is None:
        return leading_special_ids(tokenizer)
    return [tokenizer.bos_token_id] if spec.add_bos and tokenizer.bos_token_id is not None else []


def tokenize(tokenizer, examples: Sequence[Example], spec: FormatSpec = FormatSpec()) -> list[TokenizedExample]:
    """Turn examples into prompt/response token ids (see module docstring for the formats)."""
    out = []
    if spec.kind == "raw":
        lead = _raw_lead(tokenizer, spec)
    else:  # a template writes its own special tokens; the Q/A fallback gets the tokenizer's
        lead = [] if has_chat_template(tokenizer) else leading_special_ids(tokenizer)
    cap = spec.max_length * MAX_CHARS_PER_TOKEN
    for n, ex in enumerate(examples):
        # Only max_length tokens are kept: text far beyond them is cut before the tokenizer sees it
        # (a 50 MB line must not cost gigabytes); a token longer than MAX_CHARS_PER_TOKEN is unheard of.
        ex = Example(ex.prompt[:cap], ex.response[:cap], ex.domain)
        if spec.kind == "raw":
            prompt_ids = lead + _encode(tokenizer, ex.prompt + "\n")
            response_ids = _encode(tokenizer, ex.response)
            if spec.add_eos and tokenizer.eos_token_id is not None:
                response_ids = response_ids + [tokenizer.eos_token_id]
        else:
            prompt_text, response_text = _split_chat(tokenizer, ex, spec)
            prompt_ids = lead + _encode(tokenizer, prompt_text)
            response_ids = _encode(tokenizer, response_text)
        room = spec.max_length - len(prompt_ids)
        response_ids = response_ids[: max(room, 0)]
        if not response_ids:
            raise HarmcoreError(
                f"example {n} has no response tokens (prompt {ex.prompt[:40]!r}...): give it a non-empty "
                f"response, or raise max_length (now {spec.max_length}) above its prompt length {len(prompt_ids)}"
            )
        out.append(TokenizedExample(prompt_ids, response_ids))
    return out


def fitting(tokenizer, examples: Sequence[Example], spec: FormatSpec = FormatSpec()) -> list[Example]:
    """The examples whose prompt leaves room for at least one response token within max_length."""
    keep = []
    for ex in examples:
        try:
            tokenize(tokenizer, [ex], spec)
        except HarmcoreError:
            continue
        keep.append(ex)
    return keep


def ensure_tokenized(tokenizer, examples: Sequence, spec: FormatSpec = FormatSpec()) -> list[TokenizedExample]:
    """Accept `Example`s or `TokenizedExample`s; reject an empty list."""
    if len(examples) == 0:
        raise HarmcoreError("no calibration examples: check the data source and its domain filter")
    if all(isinstance(e, TokenizedExample) for e in examples):
        toks = list(examples)
        for n, t in enumerate(toks):
            if not t.response_ids:
                raise HarmcoreError(f"tokenized example {n} has no response tokens")
        return toks
    if tokenizer is None:
        raise HarmcoreError("examples are text: pass the tokenizer so they can be tokenized")
    return tokenize(tokenizer, list(examples), spec)


@dataclass
class Batch:
    """A right-padded batch. `labels` is -100 on prompt and pad positions."""

    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long
    labels: torch.Tensor  # [B, T] long
    n_tokens: list[int] = field(default_factory=list)  # response tokens per example


def collate(examples: Sequence[TokenizedExample], pad_id: int = 0) -> Batch:
    """Right-pad a batch; labels copy the response ids and are -100 elsewhere."""
    width = max(len(e.prompt_ids) + len(e.response_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for b, e in enumerate(examples):
        seq = list(e.prompt_ids) + list(e.response_ids)
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq)] = 1
        labels[b, len(e.prompt_ids) : len(seq)] = torch.tensor(e.response_ids)
    return Batch(ids, mask, labels, [len(e.response_ids) for e in examples])


def batches(examples: Sequence[TokenizedExample], batch_size: int, pad_id: int = 0):
    """Yield batches; examples are sorted by length so padding stays small (the order never changes a sum)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt_ids) + len(examples[i].response_ids))
    for start in range(0, len(order), batch_size):
        yield collate([examples[i] for i in order[start : start + batch_size]], pad_id)


def data_hash(examples: Sequence) -> str:
    """A stable hash of examples (text or token ids), used in cache keys."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(asdict(e), sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
