"""Utility evals on tiny_random: sliding-window perplexity and open-QA alias matching."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harmcore.core import masking
from harmcore.core.selection import Mask
from harmcore.core.weights import prunable_linears
from harmcore.errors import HarmcoreError
from harmcore.generation.hf import HFGenerator
from harmcore.measure.utility import alias_match, corpus_text, normalize_answer, perplexity, qa_accuracy, qa_items

FIXTURES = Path(__file__).parents[1] / "fixtures"
TEXT = "The quick brown fox jumps over the lazy dog. " * 6  # 270 byte-level tokens


def full_nll(model, ids):
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0, :-1]
    return F.cross_entropy(logits, ids[1:], reduction="none")


def test_perplexity_windows(tiny_model, tiny_tok):
    ids = tiny_tok(TEXT, return_tensors="pt")["input_ids"][0]
    per_token = full_nll(tiny_model, ids)
    one = perplexity(tiny_model, tiny_tok, TEXT, seqlen=1024)  # one window: the plain sequence loss
    assert one["tokens"] == ids.numel() - 1
    assert one["nll"] == pytest.approx(float(per_token.mean()), rel=1e-5)
    assert one["perplexity"] == pytest.approx(math.exp(one["nll"]), rel=1e-9)
    disjoint = perplexity(tiny_model, tiny_tok, TEXT, seqlen=100)  # windows [0,100) [100,200) [200,270)
    manual = [full_nll(tiny_model, ids[b : b + 100]) for b in (0, 100, 200)]
    assert disjoint["tokens"] == sum(m.numel() for m in manual) == ids.numel() - 3
    assert disjoint["nll"] == pytest.approx(float(torch.cat(manual).mean()), rel=1e-5)
    sliding = perplexity(tiny_model, tiny_tok, TEXT, seqlen=100, stride=50)  # each token scored once
    assert sliding["tokens"] == ids.numel() - 1
    capped = perplexity(tiny_model, tiny_tok, TEXT, seqlen=100, max_tokens=101)  # last window: context only
    assert capped["tokens"] == 99 and capped["nll"] == pytest.approx(float(manual[0].mean()), rel=1e-5)
    with pytest.raises(HarmcoreError, match="stride=200 is larger"):
        perplexity(tiny_model, tiny_tok, TEXT, seqlen=100, stride=200)


def test_perplexity_moves_under_a_mask_and_comes_back(tiny_model, tiny_tok):
    dense = perplexity(tiny_model, tiny_tok, TEXT, seqlen=128)
    linears = prunable_linears(tiny_model)
    name = sorted(linears)[0]
    numel = linears[name].weight.numel()
    mask = Mask({name: torch.arange(0, numel, 2)}, {n: m.weight.numel() for n, m in linears.items()})
    handle = masking.apply(tiny_model, mask)
    pruned = perplexity(tiny_model, tiny_tok, TEXT, seqlen=128)
    masking.restore(tiny_model, handle)
    assert pruned["nll"] != pytest.approx(dense["nll"], rel=1e-4)
    assert perplexity(tiny_model, tiny_tok, TEXT, seqlen=128) == dense


def test_corpus_from_a_local_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("hello world")
    assert corpus_text(str(path)) == "hello world"
    with pytest.raises(HarmcoreError, match="perplexity_source=/nope.txt"):
        corpus_text("/nope.txt")


@pytest.mark.parametrize(
    "prediction,answers,ok",
    [
        ("The capital is Paris.", ["Paris"], True),
        ("It was written by Shakespeare!", ["William Shakespeare", "Shakespeare"], True),
        ("the PACIFIC ocean", ["Pacific Ocean"], True),
        ("Parisian food", ["Paris"], False),  # whole words only
        ("Beyonce", ["Beyoncé"], False),  # NFD keeps the accent mark: as in TriviaQA's script
        ("I do not know", ["Paris"], False),
        ("The answer is 1984", ["1984"], True),
    ],
)
def test_alias_match(prediction, answers, ok):
    assert alias_match(prediction, answers) is ok


def test_normalize_answer():
    assert normalize_answer("  The  U.S._Navy's ship, an `Enterprise`! ") == "u s navy s ship enterprise"


def test_qa_accuracy(tiny_model, tiny_tok):
    items = qa_items(str(FIXTURES / "qa.jsonl"))
    assert len(items) == 3 and items[1].answers == ("William Shakespeare", "Shakespeare")

    class Oracle:  # answers the first two correctly, the third wrongly
        def generate(self, requests, sampling):
            assert "capital of France" in requests[0].prompt
            return ["Paris.", "Shakespeare wrote it", "The Atlantic"]

    result = qa_accuracy(Oracle(), items)
    assert result["accuracy"] == pytest.approx(2 / 3) and [r["correct"] for r in result["rows"]] == [1, 1, 0]
    real = qa_accuracy(HFGenerator(tiny_model, tiny_tok, "chat", 4), items, max_new_tokens=4)
    assert real["n"] == 3 and real["accuracy"] == 0.0  # a random byte-level model does not answer


def test_qa_the_authors_way(tmp_path, tiny_model, tiny_tok):
    """eval.utility.qa_protocol=paper: TriviaQA's JSON release shuffled with random.Random(42), the bare
    question, the first line of a base model's answer, an alias anywhere in it (lower-cased)."""
    import json
    import random

    from harmcore.generation.base import Sampling

    data = [{"Question": f"Question {i}?", "Answer": {"Aliases": [f"Answer{i}", f"alias {i}"]}} for i in range(6)]
    path = tmp_path / "unfiltered-web-dev.json"
    path.write_text(json.dumps({"Version": 1.0, "Data": data}))
    items = qa_items(str(path), 4, "paper")
    order = list(range(6))
    random.Random(42).shuffle(order)
    assert [it.question for it in items] == [f"Question {i}?" for i in order[:4]]  # their load_triviaqa_raw_dataset
    assert [it.question for it in qa_items(str(path), 2)] == ["Question 0?", "Question 1?"]

    class Base:  # a base model: its answer runs on past the first line
        prompt_format = "qa"

        def __init__(self, answers):
            self.answers, self.seen = answers, []

        def generate(self, requests, sampling):
            self.seen.append((requests, sampling))
            return self.answers

    gen = Base([f"it is the ANSWER{order[0]}x\nQ: Answer{order[1]}", "no idea\nAnswer", "Alias 1", "none"])
    result = qa_accuracy(gen, items, paper=Sampling(50, 1.0, 1.0, 0, 50))
    ((requests, sampling),) = gen.seen
    assert [r.prompt for r in requests] == [it.question for it in items] and sampling.max_new_tokens == 50
    # substring (ANSWER3x counts), first line only (the second answer's "Answer" is on line 2)
    assert [r["correct"] for r in result["rows"]] == [1, 0, int(items[2].answers[1] == "alias 1"), 0]
    assert result["rows"][0]["answer"] == f"it is the ANSWER{order[0]}x"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Data": [{"question": "x"}]}))
    with pytest.raises(HarmcoreError, match="is not TriviaQA's JSON release"):
        qa_items(str(bad))
