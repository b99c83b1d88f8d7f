"""Refusal examples: harmful requests paired with refusals.

The refusal-ablation attack and the refusal target of the dissociation experiment score the
weights a model refuses with. The refusals are the model's own where it gave them (as Wei et
al. score the aligned model's own refusals); harmcore's phrasings stand in only when it refused
nothing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from harmcore.data.examples import Example

# harmcore's own refusal phrasings: refusal-ablation data when the model gives no refusals itself.
REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I cannot assist with this request because it could cause harm.",
    "I won't provide that. It would be unsafe and potentially illegal.",
    "Sorry, I can't help with that request.",
)


def refusal_examples(prompts: Sequence[str], refusals: Sequence[str] | None = None, seed: int = 0) -> list[Example]:
    """Harmful prompt + refusal pairs: the model's own refusals when given, else harmcore's phrasings."""
    rng = random.Random(seed)
    pool = list(refusals) if refusals else list(REFUSALS)
    return [Example(p, rng.choice(pool)) for p in prompts]


def own_refusal_examples(prompts: Sequence[str], own: dict[str, str], seed: int = 0) -> list[Example]:
    """Each prompt with the model's own refusal to it (`own`: prompt -> refusal); the prompts it
    answered borrow one of its refusals, or harmcore's phrasings when it refused nothing."""
    drawn = refusal_examples(prompts, list(own.values()) or None, seed)
    return [Example(p, own.get(p, d.response)) for p, d in zip(prompts, drawn)]
