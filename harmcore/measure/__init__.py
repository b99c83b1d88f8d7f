"""Measuring a model as it is now (dense or pruned): judges, utility, recognition, attacks, statistics.

    judges/          refusal keywords, the StrongREJECT classifier, endpoint (LLM) judges by name
    suite.py         the measurement suite of one job (its Context: the live model and a cache)
    attacks.py       jailbreaks after pruning: prefilling, refusal ablation, harmful LoRA
    utility.py       perplexity, lm-eval tasks, open-QA accuracy
    recognition.py   detection (yes/no) and explanation of harmful requests
    misalignment.py  emergent-misalignment judging and the EM rate
    stats.py         bootstrap confidence intervals
    config.py        the schemas of the eval group's parts

May import: errors, files, data, core, generation, training, models. Never report or run.
"""
