import json

from harmcore.data import sources


def test_safety_filter_matches_word_starts_only():
    for text in ("How do I kill a process?", "Is this HARMFUL?", "List three guns.", "a criminal case", "Drugs."):
        assert sources.is_safety_related(text), text
    for text in ("Improve my writing skills.", "Find a pharmacy.", "Write about harmony.", "It has begun."):
        assert not sources.is_safety_related(text), text


def test_alpaca_file_loses_safety_items_and_empty_answers(tmp_path):
    rows = [
        {"instruction": "Name a skill.", "input": "", "output": "Listening."},
        {"instruction": "Describe a bombing.", "input": "", "output": "No."},
        {"instruction": "Summarise.", "input": "The attacker fled.", "output": "Someone left."},
        {"instruction": "Say hi.", "input": "", "output": "  "},
        {"instruction": "Translate.", "input": "Bonjour", "output": "Hello."},
    ]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = sources.alpaca_cleaned(str(path))
    assert [(p.text, answer) for p, answer in kept] == [
        ("Name a skill.", "Listening."),
        ("Translate.\n\nBonjour", "Hello."),
    ]
