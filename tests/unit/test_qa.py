"""The control task's QA data and alias matching."""

import json

import pytest

from harmcore.data import qa, sources
from harmcore.errors import HarmcoreError


@pytest.mark.parametrize(
    "response,answers,expected",
    [
        ("The capital is Paris.", ["Paris"], True),
        ("paris, of course", ["Paris"], True),
        ("It is the Sun!", ["the Sun", "Sol"], True),
        ("My name is Bob.", ["Na"], False),  # whole words only: "Na" is not in "name"
        ("NaCl holds Na ions", ["Na"], True),
        ("Leonardo painted it", ["Leonardo da Vinci", "Leonardo"], True),
        ("I do not know.", ["Paris"], False),
        ("", ["Paris"], False),
    ],
)
def test_alias_match(response, answers, expected):
    assert qa.is_correct(response, answers) is expected


def test_builtin_set_loads_offline_and_gives_gold_calibration():
    items = qa.load(None)
    assert len(items) == 48 and all(it.answers for it in items)
    prompts = sources.harmful_prompts("qa")
    assert [p.text for p in prompts] == [it.question for it in items]
    (ex,) = qa.calibration_examples(None, [items[0].question])
    assert ex.prompt == items[0].question and ex.response == items[0].answers[0]
    flags = qa.correct_flags(None, [items[0].question, items[1].question], [items[0].answers[0], "no idea"])
    assert flags == [1.0, 0.0]


def test_local_file_and_bad_rows(tmp_path):
    good = tmp_path / "qa.jsonl"
    good.write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    assert qa.load(str(good))[0].answers == ("4",)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "2+2?"}) + "\n")
    with pytest.raises(HarmcoreError, match="lacks a question or answers"):
        qa.load(str(bad))
    with pytest.raises(HarmcoreError, match="does not exist"):
        qa.load(str(tmp_path / "none.jsonl"))
