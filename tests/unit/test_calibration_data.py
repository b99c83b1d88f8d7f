"""Calibration files: filters, overlap removal, round trip with provenance."""

import hashlib
import json

import pytest

from harmcore.data import calibration_files as cd
from harmcore.data.examples import Example
from harmcore.errors import HarmcoreError
from harmcore.measure.judges.refusal import RefusalKeywordJudge

GOOD = "First you gather the materials, then you follow the steps carefully in order."


def test_filters_refusals_degenerate_and_duplicates():
    examples = [
        Example("p1", GOOD),
        Example("p2", "I'm sorry, but I can't help with that request at all."),
        Example("p3", "yes yes yes yes yes yes yes no"),
        Example("p4", "too short"),
        Example("P1 ", GOOD + " "),  # same pair up to case and whitespace
        Example("p5", ""),
        Example("p6", "loop line\nloop line\nloop line\nother line here now\nloop line"),
    ]
    judge = RefusalKeywordJudge("corrected")
    kept, dropped = cd.filter_responses(examples, lambda r: judge.is_refusal(r)[0])
    assert [e.prompt for e in kept] == ["p1"]
    assert dropped == {"empty": 1, "refusal": 1, "degenerate": 3, "duplicate": 1}
    kept, _ = cd.filter_responses(examples, min_words=2)
    assert [e.prompt for e in kept] == ["p1", "p2", "p4"]


def test_without_prompts_and_round_trip(tmp_path):
    examples = [Example("Alpha  prompt", GOOD, "x"), Example("beta", GOOD)]
    kept, n = cd.without_prompts(examples, ["alpha prompt"])
    assert kept == [examples[1]] and n == 1
    path = cd.write_examples(tmp_path / "h.jsonl", examples, {"method": "self"})
    assert cd.read_examples(path) == examples
    prov = json.loads(cd.provenance_path(path).read_text())
    assert prov == {"method": "self", "n_examples": 2, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(HarmcoreError, match="does not exist: make it with python -m experiments.generate_data"):
        cd.read_examples(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(HarmcoreError, match="line 1: 'response' must be a non-empty string, got None"):
        cd.read_examples(bad)
    bad.write_text('{"prompt": "x", "response": 123}\n')  # a number is not silently turned into "123"
    with pytest.raises(HarmcoreError, match="'response' must be a non-empty string, got 123"):
        cd.read_examples(bad)
    bad.write_text("not json\n")
    with pytest.raises(HarmcoreError, match="line 1 is not a"):
        cd.read_examples(bad)
    bad.write_bytes(b'{"prompt": "\xff\xfe", "response": "y"}\n')
    with pytest.raises(HarmcoreError, match="is not UTF-8 text"):
        cd.read_examples(bad)
    with pytest.raises(HarmcoreError, match="is a folder: give a file"):
        cd.read_examples(tmp_path)
