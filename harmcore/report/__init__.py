"""Reports from finished job folders: curves, compression statistics, pairs, controls, figures, W&B.

    sweep.py          curve.csv, curve.png, summary.json of a sweep folder (and every report below)
    compression.py    s50, AUC and compression ratios of a curve, bootstrapped over prompts
    measures.py       the per-prompt harm measures a job wrote
    pairs.py          aligned vs unaligned models (pairs and ladders)
    control.py        a harm domain against a QA control domain
    cross_domain.py   pruned with domain A x evaluated on domain B
    dissociation.py   pruned with target x ability measured
    locations.py      where the pruned weights are (layer x module)
    plots.py          shared figure helpers
    tracking.py       the W&B mirror (offline by default; secrets and raw generations stay local)
    webpage.py        report.html: one self-contained page per sweep (figures, tables, failed jobs)

Reads files, never runs a model. May import: errors, files, data, core, measure. Never run.
"""
