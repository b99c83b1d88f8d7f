"""Open QA as a control task: prune an ordinary capability the way harm is pruned.

A QA domain (`harm_domain.source: qa`) gives question prompts whose calibration responses
are the gold answers (no generation), and whose held-out questions are scored by QA
accuracy: a response is correct when any alias of the gold answer occurs in it as a whole
word sequence after TriviaQA-style normalisation (lower case, punctuation and the
articles a/an/the removed, whitespace collapsed). Whole words keep short aliases honest:
"Na" does not match "name".

Data: `harmcore/data/resources/qa_builtin.jsonl` (48 general-knowledge questions written for
this project, offline), a local JSONL of {"question", "answers": [...]} (harm_domain.path),
or TriviaQA (rc.nocontext validation) from the hub with ``path: trivia_qa``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harmcore.data.examples import Example
from harmcore.errors import HarmcoreError

BUILTIN = Path(__file__).parent / "resources" / "qa_builtin.jsonl"
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: tuple[str, ...]  # gold answer first, then aliases


def normalise(text: str) -> str:
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def is_correct(response: str, answers: Sequence[str]) -> bool:
    """True when a normalised alias occurs in the normalised response as whole words."""
    padded = f" {normalise(response)} "
    return any(f" {a} " in padded for a in map(normalise, answers) if a)


def load(path: str | None = None) -> list[QAItem]:
    """QA items: the built-in set (path None), TriviaQA from the hub (path "trivia_qa"), or a local JSONL."""
    if path == "trivia_qa":
        rows = _trivia_qa()
    else:
        p = Path(path).expanduser() if path else BUILTIN
        if not p.exists():
            raise HarmcoreError(f"QA file {p} does not exist: give a JSONL of {{'question', 'answers'}} objects")
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = []
    for n, r in enumerate(rows, 1):
        answers = r.get("answers") or ([r["answer"]] if r.get("answer") else [])
        if not r.get("question") or not answers:
            raise HarmcoreError(f"QA item {n} of {path or BUILTIN} lacks a question or answers")
        items.append(QAItem(r["question"], tuple(str(a) for a in answers)))
    return items


def _trivia_qa() -> list[dict]:
    try:
        from datasets import load_dataset

        ds = load_dataset("mandarjoshi/trivia_qa", "rc.nocontext", split="validation")
    except Exception as err:  # offline or renamed: use a local file
        raise HarmcoreError(
            f"cannot fetch TriviaQA from the hub ({type(err).__name__}): save {{'question', 'answers'}} rows "
            "as JSONL and set harm_domain.path to it"
        ) from err
    return [{"question": r["question"], "answers": [r["answer"]["value"], *r["answer"]["aliases"]]} for r in ds]


def answers_by_question(path: str | None) -> dict[str, tuple[str, ...]]:
    return {it.question: it.answers for it in load(path)}


def calibration_examples(path: str | None, questions: Sequence[str]) -> list[Example]:
    """Question + gold answer examples (the scoring data of the control task)."""
    gold = answers_by_question(path)
    return [Example(q, gold[q][0], "qa") for q in questions]


def correct_flags(path: str | None, questions: Sequence[str], responses: Sequence[str]) -> list[float]:
    """1.0 where the response answers its question correctly (alias match), else 0.0."""
    gold = answers_by_question(path)
    return [float(is_correct(r, gold[q])) for q, r in zip(questions, responses)]
