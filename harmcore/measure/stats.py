"""Small statistics helpers: bootstrap confidence intervals over prompts."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (resampling prompts with replacement)."""
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1 or n_resamples <= 0:
        return (float(x.mean()), float(x.mean()))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def cluster_bootstrap_ci(
    values, clusters, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile cluster-bootstrap CI of the mean of `values` when they come in clusters (e.g. several
    samples per question): clusters are resampled with replacement, each drawn cluster brings all of
    its values, and a resample's estimate is the sum of its values over their count. With one value
    per cluster this is `bootstrap_ci`."""
    pairs = [(c, float(v)) for v, c in zip(values, clusters, strict=True) if np.isfinite(float(v))]
    if not pairs:
        return (float("nan"), float("nan"))
    index: dict = {}
    for c, _ in pairs:
        index.setdefault(c, len(index))
    sums, counts = np.zeros(len(index)), np.zeros(len(index))
    for c, v in pairs:
        sums[index[c]] += v
        counts[index[c]] += 1
    mean = float(sums.sum() / counts.sum())
    if len(index) == 1 or n_resamples <= 0:
        return (mean, mean)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(index), size=(n_resamples, len(index)))
    rates = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = np.quantile(rates, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))
