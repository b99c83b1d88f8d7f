"""Generation requests, sampling settings and the `Generator` interface every backend implements.

`render`/`encode` give the exact text and token ids a model continues, so the HF and vLLM
backends (and cache keys) see identical prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from harmcore.data.examples import chat_prompt_text, has_chat_template, prompt_ids, qa_prompt


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


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


def render(tokenizer, prompt: str, prompt_format: str = "chat", prefix: str = "") -> str:
    """The exact text the model continues: chat template (or Q/A) plus any prefilled prefix."""
    text = chat_prompt_text(tokenizer, prompt) if prompt_format == "chat" else qa_prompt(prompt)
    return text + prefix


def encode(tokenizer, prompt: str, prompt_format: str = "chat", prefix: str = "") -> list[int]:
    """The token ids the model continues: `render`'s text, after the tokenizer's default leading
    special tokens (a BOS) when that text is a plain Q/A prompt rather than a chat template's."""
    return prompt_ids(tokenizer, render(tokenizer, prompt, prompt_format, prefix), is_plain(tokenizer, prompt_format))


def is_plain(tokenizer, prompt_format: str) -> bool:
    """Whether `render` gives a plain Q/A prompt (no chat template to write the special tokens)."""
    return prompt_format != "chat" or not has_chat_template(tokenizer)
