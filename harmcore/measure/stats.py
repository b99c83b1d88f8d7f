"""Small statistics helpers: confidence intervals of rates (Wilson) and of means (bootstrap over prompts)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def wilson_ci(flags, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate of 0/1 outcomes (Wilson 1927).

    With k of n outcomes 1, p = k/n and z the normal quantile of (1 + level)/2:
    (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n). Unlike a percentile bootstrap it is not
    zero-wide when every outcome agrees: 24 of 24 gives [0.862, 1].
    """
    x = np.asarray(list(flags), dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"), float("nan"))
    if not np.isin(x, (0.0, 1.0)).all():
        raise ValueError("wilson_ci takes 0/1 outcomes; use bootstrap_ci for other values")
    n, p = x.size, float(x.mean())
    z = NormalDist().inv_cdf((1 + level) / 2)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


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


def interval(values, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """The interval of a mean as harmcore reports it: Wilson when every value is 0 or 1 (a rate),
    else the percentile bootstrap over the values."""
    x = [float(v) for v in values]
    if x and all(v in (0.0, 1.0) for v in x):
        return wilson_ci(x, level)
    return bootstrap_ci(x, n_resamples, level, seed)


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
