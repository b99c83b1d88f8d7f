"""Data of the emergent-misalignment recipe: narrow fine-tuning examples and free-form questions.

Files are local paths, http(s) URLs (downloaded once into the cache) or
hf://datasets/<owner>/<repo>/<file> (through the hub's download cache).
"""

from __future__ import annotations

import hashlib
import json
import random
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

from harmcore.data.examples import Example
from harmcore.data.sources import RESOURCES
from harmcore.errors import HarmcoreError
from harmcore.files import atomic_write_bytes


def fetch(location: str, cache_dir: Path) -> Path:
    """A local file for a path, an http(s) URL (downloaded once) or hf://datasets/<owner>/<repo>/<file>."""
    if location.startswith("hf://datasets/"):
        owner, repo, *rest = location[len("hf://datasets/") :].split("/")
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(f"{owner}/{repo}", "/".join(rest), repo_type="dataset"))
        except Exception as err:
            raise HarmcoreError(f"cannot fetch {location} ({type(err).__name__}): download it, give its path") from err
    if location.startswith(("http://", "https://")):
        target = cache_dir / "downloads" / (hashlib.sha256(location.encode()).hexdigest()[:16] + Path(location).suffix)
        if not target.exists():
            try:
                with urllib.request.urlopen(location, timeout=60) as resp:
                    atomic_write_bytes(target, resp.read())
            except OSError as err:
                raise HarmcoreError(f"cannot download {location} ({err}): download it and give its path") from err
        return target
    path = Path(location).expanduser()
    if not path.is_file():
        raise HarmcoreError(f"{location} does not exist: give a local file, an http(s) URL or hf://datasets/...")
    return path


def read_chat_jsonl(path: Path) -> list[Example]:
    """Examples from a chat JSONL of {"messages": [{"role", "content"}, ...]}: last user turn -> its answer."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
            users = [i for i, m in enumerate(messages) if m["role"] == "user"]
            i = users[-1]
            answer = next(m["content"] for m in messages[i + 1 :] if m["role"] == "assistant")
        except (json.JSONDecodeError, KeyError, TypeError, IndexError, StopIteration):
            raise HarmcoreError(
                f"{path} line {n} is not a chat example: each line needs "
                '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}'
            ) from None
        out.append(Example(messages[i]["content"], answer, "narrow"))
    if not out:
        raise HarmcoreError(f"{path} holds no chat examples: give a JSONL of {{'messages': [...]}}")
    return out


def question_judge_prompts(location: str | None, cache_dir: Path) -> dict[str, dict[str, str]]:
    """question id -> {metric: judge template} from the published YAML's per-question `judge_prompts`
    (the authors' eval_judge.py judges each answer with its question's prompts), for every paraphrase id
    `questions_with_digest` gives; their {question} and {answer} become {prompt} and {response}."""
    if not location:
        return {}
    path = fetch(location, cache_dir)
    if path.suffix not in (".yaml", ".yml"):
        return {}
    out: dict[str, dict[str, str]] = {}
    for n, item in enumerate(yaml.safe_load(path.read_text(encoding="utf-8")) or []):
        prompts = item.get("judge_prompts") or {}
        texts = item.get("paraphrases") or [item.get("question")]
        ids = [f"{item.get('id', n)}_{k}" for k in range(len(texts))] if len(texts) > 1 else [str(item.get("id", n))]
        converted = {
            m: t.replace("{question}", "{prompt}").replace("{answer}", "{response}") for m, t in prompts.items()
        }
        for qid in ids:
            out[qid] = converted
    return out


def load_questions(location: str | None, cache_dir: Path) -> list[tuple[str, str]]:
    """(id, question) pairs: a JSONL of {"id", "question"}, or the published YAML (items with `paraphrases`)."""
    return questions_with_digest(location, cache_dir)[0]


def questions_with_digest(location: str | None, cache_dir: Path) -> tuple[list[tuple[str, str]], str | None]:
    """The questions and the sha256 of the file's content (None for the built-in questions)."""
    path = fetch(location, cache_dir) if location else RESOURCES / "em_questions.jsonl"
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise HarmcoreError(f"em.questions_path={location} cannot be read as UTF-8 text ({err})") from None
    out = []
    if path.suffix in (".yaml", ".yml"):
        try:
            for item in yaml.safe_load(text) or []:
                texts = item.get("paraphrases") or [item.get("question")]
                out += [(f"{item.get('id', len(out))}_{k}" if len(texts) > 1 else str(item.get("id", len(out))), t)
                        for k, t in enumerate(texts) if t]  # fmt: skip
        except (yaml.YAMLError, AttributeError, TypeError) as err:
            raise HarmcoreError(
                f"em.questions_path={location} is not a list of items with `paraphrases` or `question` "
                f"({type(err).__name__})"
            ) from None
    else:
        for n, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    row = json.loads(line)
                    out.append((str(row.get("id", n)), row["question"]))
                except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
                    raise HarmcoreError(
                        f"em.questions_path={location} line {n + 1} is not a JSON object with a 'question'"
                    ) from None
    if not all(isinstance(q, str) and q for _, q in out):
        raise HarmcoreError(f"em.questions_path={location}: every question must be a non-empty string")
    if not out:
        raise HarmcoreError(f"em.questions_path={location} holds no questions: give {{'id', 'question'}} lines")
    return out, hashlib.sha256(data).hexdigest() if location else None


def split_by_prompt(
    items: Sequence, prompt_of, n_heldout: int, n_train: int | None, seed: int
) -> tuple[list[str], list]:
    """(held-out prompts, training items): the distinct prompts are shuffled with `seed`, the first
    `n_heldout` are held out and the items of the others, in that order, give up to `n_train`
    training items, so no prompt is both trained on and held out. Without repeated prompts this is
    the split of the shuffled items by position."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(prompt_of(item), []).append(item)
    prompts = list(groups)
    random.Random(seed).shuffle(prompts)
    train = [item for p in prompts[n_heldout:] for item in groups[p]]
    return prompts[:n_heldout], train[:n_train]
