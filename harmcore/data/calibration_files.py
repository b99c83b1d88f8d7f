"""Calibration example files: prompt + response pairs on disk, with provenance.

A calibration file is JSONL, one ``{"prompt", "response", "category"}`` object per line,
next to ``<file>.provenance.json`` saying how it was made (model, method, filters,
counts). `experiments.generate_data` writes them; the pipeline reads one with
``data.harm_path`` and leaves out every example whose prompt is an evaluation prompt,
so no evaluation prompt is ever used for scoring.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from harmcore.data.examples import Example
from harmcore.data.sources import text_field
from harmcore.errors import HarmcoreError
from harmcore.files import atomic_write_json, atomic_write_text
from harmcore.inputs import read_text


def normalise(text: str) -> str:
    """Prompt identity for overlap checks: case and whitespace do not make a prompt new."""
    return " ".join(text.lower().split())


def near_duplicates(texts: Sequence[str], references: Sequence[str], ratio: float) -> list[bool]:
    """For each text: whether some reference is the same prompt up to small edits (difflib's ratio of
    the normalised texts >= `ratio`; equal normalised texts always are)."""
    refs = list(dict.fromkeys(normalise(r) for r in references))
    exact = set(refs)
    out = []
    for text in texts:
        t = normalise(text)
        matcher = difflib.SequenceMatcher(None, "", t, autojunk=False)  # b (cached): the text; a: each reference
        found = t in exact
        for r in refs if not found else ():
            matcher.set_seq1(r)
            if matcher.real_quick_ratio() >= ratio and matcher.quick_ratio() >= ratio and matcher.ratio() >= ratio:
                found = True
                break
        out.append(found)
    return out


def read_examples(path) -> list[Example]:
    """Examples of a calibration JSONL (`prompt` and `response` required, `category` optional)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise HarmcoreError(f"calibration file {p} does not exist: make it with python -m experiments.generate_data")
    out = []
    for n, line in enumerate(read_text(p, "calibration file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise HarmcoreError(f"{p} line {n} is not a {{'prompt', 'response'}} JSON object ({err.msg})") from None
        if not isinstance(row, dict):
            raise HarmcoreError(f"{p} line {n} is not a {{'prompt', 'response'}} JSON object")
        category = row.get("category")
        prompt, response = text_field(row, "prompt", f"{p} line {n}"), text_field(row, "response", f"{p} line {n}")
        out.append(Example(prompt, response, category if isinstance(category, str) else None))
    if not out:
        raise HarmcoreError(f"calibration file {p} holds no examples")
    return out


def write_examples(path, examples: Iterable[Example], provenance: dict) -> Path:
    """Write examples as JSONL and their provenance as <path>.provenance.json (both atomic)."""
    rows = [json.dumps({"prompt": e.prompt, "response": e.response, "category": e.domain}) for e in examples]
    return write_rows(path, rows, provenance)


def write_rows(path, rows: Sequence[str], provenance: dict) -> Path:
    """Write JSONL rows, then <path>.provenance.json with their count and the file's sha256 (each
    atomic; the digest ties a provenance to the exact file it describes)."""
    path = Path(path)
    text = "".join(r + "\n" for r in rows)
    atomic_write_text(path, text)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    atomic_write_json(provenance_path(path), {**provenance, "n_examples": len(rows), "sha256": digest})
    return path


def provenance_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".provenance.json")


def without_prompts(examples: Sequence[Example], prompts: Iterable[str]) -> tuple[list[Example], int]:
    """(examples whose prompt is not among `prompts`, how many were left out)."""
    banned = {normalise(p) for p in prompts}
    keep = [e for e in examples if normalise(e.prompt) not in banned]
    return keep, len(examples) - len(keep)


def is_degenerate(text: str, min_words: int = 5, max_repeat: float = 0.5) -> bool:
    """True for text no one would call an answer: fewer than `min_words` words, or (from 4 words on)
    one word over `max_repeat` of all words, or a line repeated over half the lines (a generation loop)."""
    words = text.split()
    if len(words) < min_words:
        return True
    top = max((words.count(w) for w in set(words)), default=0)
    if len(words) >= 4 and top / len(words) > max_repeat:
        return True
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return len(lines) >= 4 and max(lines.count(ln) for ln in set(lines)) / len(lines) > 0.5


def filter_responses(
    examples: Sequence[Example],
    is_refusal: Callable[[str], bool] | None = None,
    drop_degenerate: bool = True,
    min_words: int = 5,
) -> tuple[list[Example], dict[str, int]]:
    """Drop empty responses, refusals (those `is_refusal` flags; None keeps them), degenerate text
    (see `is_degenerate`) and duplicate pairs.

    Returns the kept examples (first occurrence order) and counts of what was dropped, by reason.
    """
    kept, seen = [], set()
    dropped = {"empty": 0, "refusal": 0, "degenerate": 0, "duplicate": 0}
    for e in examples:
        key = (normalise(e.prompt), normalise(e.response))
        if not e.response.strip():
            dropped["empty"] += 1
        elif is_refusal is not None and is_refusal(e.response):
            dropped["refusal"] += 1
        elif drop_degenerate and is_degenerate(e.response, min_words):
            dropped["degenerate"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            kept.append(e)
    return kept, dropped
