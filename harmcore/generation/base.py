"""Generation requests, sampling settings and the `Generator` interface every backend implements.

`render`/`encode` give the exact text and token ids a model continues, so the HF and vLLM
backends (and cache keys) see identical prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from harmcore.data.examples import chat_prompt_text, has_chat_template, prompt_ids, qa_prompt


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    top_k: int = 0  # sampling only: keep the k most likely tokens; 0 = no cut

    def key(self) -> dict:
        """The decoding as cache keys see it (top_k only when set: entries from before it existed stay found)."""
        d = asdict(self)
        if not self.top_k:
            d.pop("top_k")
        return d


@dataclass(frozen=True)
class Request:
    """A prompt and an optional assistant prefix (prefilling)."""

    prompt: str
    prefix: str = ""


class Generator(Protocol):
    def generate(self, requests: list[Request], sampling: Sampling) -> list[str]:
        """One response per request (decoded, special tokens dropped, stripped)."""
        ...

    def sample(self, requests: list[Request], sampling: Sampling, n: int) -> list[list[str]]:
        """`n` responses per request."""
        ...

    def weights_changed(self, names) -> None:
        """Tell the generator that these parameters of the source model changed (pruned or restored)."""
        ...


def model_decoding(model, max_new_tokens: int, seed: int = 0) -> Sampling:
    """The decoding a model's own generation_config asks for, as transformers' pipeline decodes:
    sampling with its temperature, top_p and top_k (transformers' default top_k where it sets none)
    when it says do_sample, else greedy."""
    gc = getattr(model, "generation_config", None)
    if gc is None or not gc.do_sample:
        return Sampling(max_new_tokens, 0.0, 1.0, seed)
    top_k = TRANSFORMERS_TOP_K if gc.top_k is None else int(gc.top_k)
    return Sampling(max_new_tokens, float(gc.temperature or 1.0), float(gc.top_p or 1.0), seed, top_k)


TRANSFORMERS_TOP_K = 50  # what transformers' generate samples with where a generation_config sets no top_k


def sampling_for(generation, model, seed: int) -> Sampling:
    """The sampling of a job's evaluation generations: `generation` is the generation config group
    (decoding explicit: its temperature and top_p; model: `model_decoding`)."""
    if generation.decoding == "model":
        return model_decoding(model, generation.max_new_tokens, seed)
    return Sampling(generation.max_new_tokens, generation.temperature, generation.top_p, seed)


def render(tokenizer, prompt: str, prompt_format: str = "chat", prefix: str = "") -> str:
    """The exact text the model continues: chat template (or Q/A) plus any prefilled prefix."""
    if prompt_format == "chat":
        return chat_prompt_text(tokenizer, prompt) + prefix
    return (f"{prompt}\n" if prompt_format == "newline" else qa_prompt(prompt)) + prefix


def encode(tokenizer, prompt: str, prompt_format: str = "chat", prefix: str = "") -> list[int]:
    """The token ids the model continues: `render`'s text, after the tokenizer's default leading
    special tokens (a BOS) when that text is a plain Q/A prompt rather than a chat template's."""
    return prompt_ids(tokenizer, render(tokenizer, prompt, prompt_format, prefix), is_plain(tokenizer, prompt_format))


def is_plain(tokenizer, prompt_format: str) -> bool:
    """Whether `render` gives a plain Q/A prompt (no chat template to write the special tokens)."""
    return prompt_format != "chat" or not has_chat_template(tokenizer)
