"""Data: prompts and examples as text, and how they become token ids.

    examples.py            Example, FormatSpec (raw / chat), tokenization, batches, data hashes
    sources.py             harmful prompt sets (StrongREJECT, AdvBench, HEx-PHI, JSONL), benign sets, splits
    calibration_files.py   calibration JSONL files with provenance; response filters
    qa.py                  the control task's questions and gold answers
    refusals.py            refusal examples (the model's own refusals, or harmcore's phrasings)
    narrow.py              emergent-misalignment data: chat JSONL, free-form questions, remote files

May import: errors, files. Nothing above it (no models, no judges).
"""
