"""Utility measurements on the live (dense or pruned) model: does pruning harm capability?

- `perplexity`: sliding-window perplexity of a corpus (WikiText-2 test, the Wanda/SparseGPT
  convention of joining the rows with "\\n\\n"; or a local text file).
- `lm_eval_accuracy`: zero-shot lm-evaluation-harness tasks on the in-memory model
  (`HFLM(pretrained=model)`), so a mask applied in place is what gets evaluated.
- `qa_accuracy`: open-QA accuracy: an answer is correct when one of the question's aliases,
  normalised as in the TriviaQA evaluation script, occurs in the normalised answer as a
  whole-word substring.
"""

from __future__ import annotations

import difflib
import json
import math
import random
import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from harmcore.core.offload import input_device
from harmcore.data.sources import read_table
from harmcore.errors import HarmcoreError
from harmcore.generation.base import Request, Sampling

# ---------------------------------------------------------------------------------------
# Perplexity


def corpus_text(source: str) -> str:
    """The evaluation text: 'wikitext' (WikiText-2 raw test split via datasets) or a local file."""
    if source == "wikitext":
        try:
            from datasets import load_dataset

            rows = load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"]
        except Exception as err:  # offline or renamed: both mean "give a local file"
            raise HarmcoreError(
                f"cannot load WikiText-2 from the hub ({type(err).__name__}): set "
                "eval.utility.perplexity_source=/path/to/text.txt"
            ) from err
        return "\n\n".join(rows)
    path = Path(source).expanduser()
    if not path.is_file():
        raise HarmcoreError(f"eval.utility.perplexity_source={source}: use wikitext or a path to a text file")
    return path.read_text(encoding="utf-8")


@torch.no_grad()
def perplexity(
    model, tokenizer, text: str, seqlen: int = 512, stride: int | None = None, max_tokens=None, tail: str = "score"
) -> dict:
    """Sliding-window perplexity of `text` (exp of the mean NLL in nats per predicted token).

    Windows of `seqlen` tokens start every `stride` tokens (default: seqlen, i.e. disjoint
    windows); each token is predicted once, by the window that first reaches it, with up to
    seqlen - stride tokens of earlier context. A window's first token is only a context: the
    text's first token is never scored, nor (with disjoint windows) the first of each window.
    `tail`: score the last, shorter window too, or drop it (only whole windows of seqlen tokens, as
    the authors' eval_ppl does; with disjoint windows that is their exp of the mean window loss).
    Returns {"perplexity", "nll", "tokens"}.
    """
    stride = stride or seqlen
    if stride > seqlen:
        raise HarmcoreError(f"eval.utility.stride={stride} is larger than seqlen={seqlen}: tokens would be skipped")
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    if max_tokens:
        ids = ids[:max_tokens]
    if tail == "drop":
        if ids.numel() < seqlen:
            raise HarmcoreError(
                f"the perplexity corpus has {ids.numel()} tokens, less than one window of eval.utility.seqlen={seqlen}"
            )
        ids = ids[: ids.numel() // seqlen * seqlen]
    if ids.numel() < 2:
        raise HarmcoreError("the perplexity corpus has fewer than 2 tokens: give a longer text")
    device = input_device(model)
    total, count, scored_to = 0.0, 0, 1  # tokens [0, scored_to) are done (token 0 has no context)
    for begin in range(0, ids.numel() - 1, stride):
        end = min(begin + seqlen, ids.numel())
        window = ids[begin:end].to(device)[None]
        logits = model(input_ids=window).logits[0, :-1].float()
        targets = window[0, 1:]
        # Index into targets of the first token not scored yet; with disjoint windows the
        # window's own first token has no context here and is skipped (as in HF's recipe).
        first = max(scored_to - begin - 1, 0)
        nll = F.cross_entropy(logits[first:], targets[first:], reduction="sum")
        total += float(nll)
        count += int(targets.numel() - first)
        scored_to = end
        if end == ids.numel():
            break
    mean = total / count
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": count}


# ---------------------------------------------------------------------------------------
# lm-evaluation-harness


def _local_task_names(include_path: str | None) -> set[str]:
    names = set()
    if include_path:
        for file in Path(include_path).expanduser().rglob("*.yaml"):
            m = re.search(r"^task:\s*['\"]?([\w.\-]+)", file.read_text(encoding="utf-8"), re.M)
            if m:
                names.add(m.group(1))
    return names


def lm_eval_accuracy(
    model,
    tokenizer,
    tasks: Sequence[str],
    include_path: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    include_defaults: bool = True,
    num_fewshot: int = 0,
    chat_template: bool = False,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Each task's metrics: {task: {"acc": ..., "acc_norm": ..., "exact_match": ...}}, a metric under a
    filter other than lm-eval's "none" named "<metric>,<filter>" (e.g. GSM8K's "exact_match,strict-match").

    Runs on `model` as it is in memory (pruned weights included), zero-shot unless `num_fewshot`
    (examples drawn with `seed`), through the tokenizer's chat template with `chat_template`. Tasks
    found in `include_path` are used without indexing lm-eval's built-in tasks (faster, offline);
    `include_defaults=False` never indexes them.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if not tasks:
        return {}
    if include_path and not Path(include_path).expanduser().is_dir():
        raise HarmcoreError(f"eval.utility.lm_eval_include_path={include_path} is not a folder of task YAMLs")
    local_only = set(tasks) <= _local_task_names(include_path)
    manager = TaskManager(include_path=include_path, include_defaults=include_defaults and not local_only)
    known = set(manager.all_tasks)
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise HarmcoreError(f"unknown lm-eval task {task!r}{hint}: fix eval.utility.lm_eval_tasks")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, task_manager=manager,
            log_samples=False, verbosity="ERROR", apply_chat_template=chat_template, random_seed=seed,
            numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )  # fmt: skip
    except Exception as err:  # most often a task's dataset cannot be downloaded (offline)
        first = (str(err).splitlines() or [""])[0][:160]
        raise HarmcoreError(
            f"lm-eval failed on {list(tasks)} ({type(err).__name__}: {first}): offline? give local task YAMLs "
            "in eval.utility.lm_eval_include_path"
        ) from err
    results = {}
    for task in tasks:
        results[task] = {}
        for key, value in out["results"].get(task, {}).items():
            metric, _, filt = key.partition(",")  # metrics are "<metric>,<filter>"; "alias", "sample_len" are not
            if not filt or metric.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            results[task][metric if filt == "none" else f"{metric},{filt}"] = float(value)
    return results


# The other suites the paper reports, as lm-eval task names (eval.utility.lm_eval_tasks=[...]).
PAPER_SUITES = {
    "MMLU": "mmlu",
    "MMLU-Pro": "mmlu_pro",
    "GPQA (main, zero-shot)": "gpqa_main_zeroshot",
    "TruthfulQA (mc2)": "truthfulqa_mc2",
    "GSM8K": "gsm8k",
    "IFEval": "ifeval",
}
# The zero-shot tasks of their eval_zero_shot (EU)
ZERO_SHOT_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_challenge", "openbookqa")


# ---------------------------------------------------------------------------------------
# Open QA (TriviaQA-style)

QA_TEMPLATE = "Answer the question with a short phrase.\nQuestion: {question}"


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: tuple[str, ...]  # aliases; any one counts


def normalize_answer(text: str) -> str:
    """TriviaQA's normalisation: lower case, unicode NFD, no punctuation/articles/underscores, single spaces."""
    text = unicodedata.normalize("NFD", text).lower().replace("_", " ")
    exclude = set(string.punctuation + "‘’´`")
    text = "".join(" " if ch in exclude else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def alias_match(prediction: str, answers: Sequence[str]) -> bool:
    """True when a normalised alias occurs in the normalised prediction as whole words."""
    pred = f" {normalize_answer(prediction)} "
    return any(norm and f" {norm} " in pred for norm in (normalize_answer(a) for a in answers))


def qa_items(source: str, limit: int | None = None, order: str = "file") -> list[QAItem]:
    """QA items: a local JSONL of {"question", "answers": [...]}, TriviaQA's own JSON release (e.g.
    unfiltered-web-dev.json: {"Data": [{"Question", "Answer": {"Aliases"}}]}), or 'trivia_qa' (rc.nocontext
    validation, from the hub). `order`: file (the first `limit`) or paper (shuffled with
    random.Random(42) first, as the authors' load_triviaqa_raw_dataset)."""
    items = _all_qa_items(source, limit if order == "file" else None)
    if order == "paper":
        random.Random(42).shuffle(items)
    return items[:limit] if limit else items


def _all_qa_items(source: str, limit: int | None) -> list[QAItem]:
    if source.endswith(".json") and Path(source).expanduser().is_file():  # TriviaQA's release format
        try:
            data = json.loads(Path(source).expanduser().read_text(encoding="utf-8"))["Data"]
            return [QAItem(x["Question"], tuple(x["Answer"]["Aliases"])) for x in data]
        except (ValueError, KeyError, TypeError) as err:
            raise HarmcoreError(
                f"{source} is not TriviaQA's JSON release ({{'Data': [{{'Question', 'Answer': {{'Aliases'}}}}]}}): "
                f"{type(err).__name__} {err}"
            ) from None
    if source == "trivia_qa":
        try:
            from datasets import load_dataset

            rows = load_dataset("trivia_qa", "rc.nocontext", split="validation")
        except Exception as err:
            raise HarmcoreError(
                f"cannot load TriviaQA from the hub ({type(err).__name__}): set eval.utility.qa_source to a local "
                'JSONL of {"question": ..., "answers": [...]}'
            ) from err
        return [QAItem(r["question"], tuple(r["answer"]["aliases"])) for r in rows.select(range(limit or len(rows)))]

    items = []
    for n, row in enumerate(read_table(source)):
        answers = row.get("answers") or row.get("aliases")
        if not row.get("question") or not answers:
            raise HarmcoreError(f"{source} line {n + 1} needs a question and a non-empty answers list")
        items.append(QAItem(row["question"], tuple(answers if isinstance(answers, list) else [answers])))
    return items[:limit] if limit else items


def qa_accuracy(generator, items: Sequence[QAItem], max_new_tokens: int = 32, paper: Sampling | None = None) -> dict:
    """{"accuracy", "n"} of answers by `generator` (a `Generator`), plus per-item rows.

    harmcore's protocol: greedy answers to QA_TEMPLATE, an alias matching whole words after TriviaQA's
    normalisation. With `paper` (the authors' decoding, e.g. sampled, 100 tokens for chat models and 50
    for base ones): the bare question (the generator's prompt format wraps it: the chat template, or
    "Q: {question}\nA:"), the answer's first line, and an alias found anywhere in it, lower-cased
    (their compute_correctness_triviaqa)."""
    if not items:
        raise HarmcoreError("no QA items: check eval.utility.qa_source")
    if paper is not None:
        answers = generator.generate([Request(it.question) for it in items], paper)
        if getattr(generator, "prompt_format", "chat") != "chat":
            answers = [a.strip().split("\n")[0] for a in answers]
        correct = [any(x.lower() in a.lower() for x in it.answers) for a, it in zip(answers, items)]
    else:
        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0)
        answers = generator.generate([Request(QA_TEMPLATE.format(question=it.question)) for it in items], sampling)
        correct = [alias_match(a, it.answers) for a, it in zip(answers, items)]
    rows = [{"question": it.question, "answer": a, "correct": c} for it, a, c in zip(items, answers, correct)]
    return {"accuracy": sum(correct) / len(correct), "n": len(correct), "rows": rows}
