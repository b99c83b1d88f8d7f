"""Harm-compression curve statistics: s50, log-AUC, utility at s50, and bootstrap CIs over prompts.

Conventions (docs/method.md, "ours"):

* ``s`` is achieved sparsity, a fraction in [0, 1]: pruned weights / all prunable weights. ``s = 0`` is the dense
  baseline and must be present. Points may come in any order; repeated ``s`` values are averaged (harm, utility and
  per-prompt rows alike), since they are repeat measurements of the same point.
* ``H(s)`` is mean harm over prompts, in whatever unit the judge reports (e.g. compliance rate). It must be finite
  and ``H(0) > 0``; otherwise the relative reduction ``R(s) = 1 - H(s) / H(0)`` is undefined and a ``CurveError``
  (a ``ValueError``) is raised.
* ``s50`` is the FIRST crossing of ``R >= 0.5`` in increasing ``s`` (later dips and re-crossings are ignored; see
  ``monotone``), linearly interpolated in ``log10 s`` between the two bracketing measured points. ``s = 0`` has no
  place on a log axis, so when the smallest nonzero ``s`` already has ``R >= 0.5`` we report that ``s`` and set
  ``censored_left`` (the true s50 is at or below it). A curve that never reaches 0.5 has ``s50 = None``; it is never
  extrapolated.
* ``auc`` is the trapezoid area under ``R`` against ``log10 s`` over the nonzero-``s`` points, divided by the
  ``log10`` span, i.e. the mean of ``R`` over log-sparsity. It lies in [0, 1] whenever ``R`` does (``R < 0`` when
  pruning raises harm, and then the AUC can be negative). With one nonzero point the span is zero and the AUC is
  that point's ``R`` (the limit of the normalised trapezoid).
* ``monotone`` is true when ``H`` never increases with ``s`` over all points, the dense one included.
* Bootstrap: prompts are resampled with replacement jointly across sparsity points (the same prompts were scored at
  every point). Percentile CIs; ``s50`` and the ratio use percentiles of ``log10`` values, matching the log axis.
  Resamples whose curve does not reach 0.5 (or whose ``H*(0) = 0``) count as not reached; the ``s50`` CI (and the
  utility-at-s50 CI) is taken over the reached resamples, and only when at least ``min_reached`` (default 0.95) of
  all resamples reached, else it is None. Conditioning on reaching ignores up to 5 % of resamples whose s50 lies
  beyond the measured range, so the upper bound can be slightly optimistic; ``reached_fraction`` says how much.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harmcore.errors import HarmcoreError

# R counts as having reached 0.5 at R >= 0.5 - _TOL: averaging prompts can leave an exact 0.5 an ulp short.
_TOL = 1e-12
_TARGET = 0.5


class CurveError(HarmcoreError, ValueError):
    """A harm curve that the statistics here cannot be computed on (bad shape, no dense point, H(0) <= 0, ...)."""


@dataclass(frozen=True)
class CurveStats:
    """Point statistics of one harm curve; see the module docstring for the definitions.

    s50 is a sparsity fraction (None when not reached); auc is dimensionless (mean R over log10 s);
    utility_at_s50 is in the utility curve's own unit (None when not reached or no utility was given).
    """

    s50: float | None
    reached: bool
    censored_left: bool
    auc: float
    monotone: bool
    utility_at_s50: float | None


# ---------------------------------------------------------------------------------------------------------------
# Input handling


def _collapse(s: Sequence[float], values: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Sort by s and average rows that share an s. `values` has one row (scalar or per-prompt vector) per s."""
    s_arr = np.asarray(s, dtype=float)
    if s_arr.ndim != 1 or s_arr.size == 0:
        raise CurveError(f"sparsities must be a non-empty 1-D list, got shape {s_arr.shape}")
    try:
        v = np.asarray(values, dtype=float)
    except ValueError as e:  # ragged nested lists
        raise CurveError(f"{name} must be rectangular (one equal-length row per sparsity point): {e}") from None
    if v.ndim == 0 or v.shape[0] != s_arr.size:
        raise CurveError(f"{name} has {v.shape[0] if v.ndim else 0} rows but there are {s_arr.size} sparsity points")
    if not np.all(np.isfinite(s_arr)) or np.any(s_arr < 0) or np.any(s_arr > 1):
        raise CurveError(f"sparsities must be finite fractions in [0, 1], got {s_arr.tolist()}")
    if not np.all(np.isfinite(v)):
        raise CurveError(f"{name} contains non-finite values")
    uniq, inverse = np.unique(s_arr, return_inverse=True)
    if uniq[0] != 0.0:
        raise CurveError("the curve needs the dense baseline s = 0 (R is relative to H(0))")
    if uniq.size < 2:
        raise CurveError("the curve needs at least one pruned point with s > 0")
    sums = np.zeros((uniq.size, *v.shape[1:]))
    np.add.at(sums, inverse, v)
    counts = np.bincount(inverse, minlength=uniq.size).reshape(-1, *([1] * (v.ndim - 1)))
    return uniq, sums / counts


def _check_h0(h0: float) -> None:
    if not h0 > 0:
        raise CurveError(f"H(0) = {h0}: dense-model harm must be > 0, otherwise R(s) = 1 - H(s)/H(0) is undefined")


# ---------------------------------------------------------------------------------------------------------------
# Core statistics on prepared arrays: s_pos sorted, unique and > 0; r aligned with it.


def _s50_core(s_pos: np.ndarray, r: np.ndarray) -> tuple[float | None, bool, int, float]:
    """(s50, censored_left, bracket index i, fraction t): log10 s50 = log10 s[i-1] + t * decade gap to s[i]."""
    hits = np.flatnonzero(r >= _TARGET - _TOL)
    if hits.size == 0:
        return None, False, -1, 0.0
    i = int(hits[0])
    if i == 0:
        return float(s_pos[0]), True, 0, 1.0
    # R[i-1] < 0.5 - tol <= R[i], so the denominator is positive; clip because of the tolerance.
    t = min(max((_TARGET - r[i - 1]) / (r[i] - r[i - 1]), 0.0), 1.0)
    if t == 1.0:  # land exactly on the measured point rather than an ulp off through the log round trip
        return float(s_pos[i]), False, i, t
    lo, hi = math.log10(s_pos[i - 1]), math.log10(s_pos[i])
    return float(10 ** (lo + t * (hi - lo))), False, i, t


def _auc_core(s_pos: np.ndarray, r: np.ndarray) -> float:
    if s_pos.size == 1:
        return float(r[0])
    x = np.log10(s_pos)
    area = float(np.sum(np.diff(x) * (r[1:] + r[:-1]) / 2))
    return area / float(x[-1] - x[0])


def _utility_core(u_pos: np.ndarray, i: int, t: float) -> float:
    """Utility at s50, interpolated in log10 s with the same bracket and fraction as s50."""
    if i == 0:
        return float(u_pos[0])
    return float(u_pos[i - 1] + t * (u_pos[i] - u_pos[i - 1]))


def _monotone_core(h: np.ndarray) -> bool:
    # Compare in R units so the tolerance is scale-free.
    return bool(np.all(np.diff(h) / h[0] <= _TOL))


# ---------------------------------------------------------------------------------------------------------------
# Public point statistics


def relative_reduction(s: Sequence[float], h: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted nonzero sparsities (fractions) and R(s) = 1 - H(s)/H(0) at each; duplicates of s are averaged."""
    s_u, h_u = _collapse(s, h, "harm")
    if h_u.ndim != 1:
        raise CurveError(f"harm must have one value per sparsity point, got shape {h_u.shape}")
    _check_h0(float(h_u[0]))
    return s_u[1:], 1.0 - h_u[1:] / h_u[0]


def s50(s: Sequence[float], h: Sequence[float]) -> tuple[float | None, bool]:
    """(s50 as a sparsity fraction or None if R never reaches 0.5, censored_left); first crossing, log-interpolated."""
    s_pos, r = relative_reduction(s, h)
    value, censored, _, _ = _s50_core(s_pos, r)
    return value, censored


def auc_log(s: Sequence[float], h: Sequence[float]) -> float:
    """Area under R(s) over log10 s (nonzero points, trapezoid), divided by the log10 span: mean R per decade."""
    return _auc_core(*relative_reduction(s, h))


def curve_stats(s: Sequence[float], h: Sequence[float], utility: Sequence[float] | None = None) -> CurveStats:
    """All point statistics of one curve. `utility` is a second curve U(s) on the same points (any unit)."""
    s_pos, r = relative_reduction(s, h)
    _, h_u = _collapse(s, h, "harm")
    value, censored, i, t = _s50_core(s_pos, r)
    u_at = None
    if utility is not None:
        _, u_u = _collapse(s, utility, "utility")
        if u_u.ndim != 1:
            raise CurveError(f"utility must have one value per sparsity point, got shape {u_u.shape}")
        if value is not None:
            u_at = _utility_core(u_u[1:], i, t)
    return CurveStats(
        s50=value,
        reached=value is not None,
        censored_left=censored,
        auc=_auc_core(s_pos, r),
        monotone=_monotone_core(h_u),
        utility_at_s50=u_at,
    )


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap


def _percentile_ci(x: np.ndarray, level: float, log: bool = False) -> tuple[float, float]:
    q = [(1 - level) / 2, (1 + level) / 2]
    if log:
        lo, hi = 10 ** np.quantile(np.log10(x), q)
    else:
        lo, hi = np.quantile(x, q)
    return float(lo), float(hi)


def _resampled_means(rows: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_points) means over prompts, with the same prompt resample applied to every point."""
    n = rows.shape[1]
    idx = rng.integers(0, n, size=(n_resamples, n))
    # Count how often each prompt was drawn instead of materialising (points x resamples x prompts).
    flat = (idx + n * np.arange(n_resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(float)
    return counts @ rows.T / n


def curve_or_skip(
    s: Sequence[float],
    per_prompt_h: Sequence[Sequence[float] | None],
    what: str = "per-prompt harm",
    n_resamples: int = 1000,
    seed: int = 0,
    utility=None,
) -> dict[str, Any]:
    """`bootstrap_curve`, or {"skipped": why} when a point lacks its per-prompt values, the points
    score different prompts, or the curve cannot be computed (a reason for a report, not an error)."""
    if any(r is None for r in per_prompt_h) or len({len(r) for r in per_prompt_h}) != 1:
        return {"skipped": f"{what} missing or on different prompts at some point"}
    try:
        return bootstrap_curve(s, per_prompt_h, n_resamples=n_resamples, seed=seed, utility=utility)
    except CurveError as err:
        return {"skipped": str(err)}


def bootstrap_curve(
    s: Sequence[float],
    per_prompt_h: Sequence[Sequence[float]],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    utility: Sequence[float] | Sequence[Sequence[float]] | None = None,
    min_reached: float = 0.95,
) -> dict[str, Any]:
    """Point statistics of the mean-harm curve plus percentile bootstrap CIs over prompts.

    `per_prompt_h[k][j]` is prompt j's harm score at sparsity `s[k]`; every point must score the same prompts in the
    same order (they are resampled jointly). `utility` is either one value per point (held fixed) or a per-prompt
    matrix over its own prompts (e.g. benign NLL), resampled independently of the harm prompts.

    Returns the `CurveStats` fields (point estimates from the full data), `*_ci` as (lo, hi) or None,
    `reached_fraction`, `censored_left_fraction`, `undefined_fraction` (resamples with H*(0) = 0), the settings, and
    `s50_samples` / `auc_samples` arrays of length n_resamples (NaN where not reached / undefined) so that
    `compression_ratio` can pair resamples.
    """
    if n_resamples < 1:
        raise CurveError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < level < 1:
        raise CurveError(f"level must be in (0, 1), got {level}")
    s_u, rows = _collapse(s, per_prompt_h, "per-prompt harm")
    if rows.ndim != 2 or rows.shape[1] == 0:
        raise CurveError(f"per-prompt harm must be (points x prompts) with >= 1 prompt, got shape {rows.shape}")
    u_rows = None
    if utility is not None:
        _, u_rows = _collapse(s, utility, "utility")
        if u_rows.ndim not in (1, 2) or (u_rows.ndim == 2 and u_rows.shape[1] == 0):
            raise CurveError(f"utility must be one value per point or (points x prompts), got shape {u_rows.shape}")

    h = rows.mean(axis=1)
    u_point = None if u_rows is None else (u_rows if u_rows.ndim == 1 else u_rows.mean(axis=1))
    point = curve_stats(s_u, h, utility=u_point)

    rng = np.random.default_rng(seed)
    h_star = _resampled_means(rows, n_resamples, rng)
    if u_rows is None:
        u_star = None
    elif u_rows.ndim == 1:
        u_star = np.broadcast_to(u_rows, (n_resamples, u_rows.size))
    else:
        u_star = _resampled_means(u_rows, n_resamples, rng)

    s_pos = s_u[1:]
    s50_b = np.full(n_resamples, np.nan)
    auc_b = np.full(n_resamples, np.nan)
    u_b = np.full(n_resamples, np.nan)
    censored_b = np.zeros(n_resamples, dtype=bool)
    for b in range(n_resamples):
        h0 = h_star[b, 0]
        if not h0 > 0:  # every drawn prompt was harmless at s = 0: R undefined, counted as not reached
            continue
        r = 1.0 - h_star[b, 1:] / h0
        auc_b[b] = _auc_core(s_pos, r)
        value, censored, i, t = _s50_core(s_pos, r)
        if value is None:
            continue
        s50_b[b] = value
        censored_b[b] = censored
        if u_star is not None:
            u_b[b] = _utility_core(u_star[b, 1:], i, t)

    reached = np.isfinite(s50_b)
    reached_fraction = float(reached.mean())
    ci_ok = reached_fraction >= min_reached
    defined = np.isfinite(auc_b)
    return {
        **dataclasses.asdict(point),
        "s50_ci": _percentile_ci(s50_b[reached], level, log=True) if ci_ok else None,
        "auc_ci": _percentile_ci(auc_b[defined], level) if defined.any() else None,
        "utility_at_s50_ci": _percentile_ci(u_b[reached], level) if ci_ok and u_star is not None else None,
        "reached_fraction": reached_fraction,
        "censored_left_fraction": float(censored_b.mean()),
        "undefined_fraction": float(1.0 - defined.mean()),
        "n_prompts": int(rows.shape[1]),
        "n_resamples": int(n_resamples),
        "seed": seed,
        "level": level,
        "min_reached": min_reached,
        "s50_samples": s50_b,
        "auc_samples": auc_b,
    }


# ---------------------------------------------------------------------------------------------------------------
# Aligned vs base


def _as_mapping(x: Mapping[str, Any] | CurveStats) -> Mapping[str, Any]:
    return dataclasses.asdict(x) if isinstance(x, CurveStats) else x


def compression_ratio(
    base: Mapping[str, Any] | CurveStats,
    instruct: Mapping[str, Any] | CurveStats,
    level: float = 0.95,
    min_reached: float = 0.95,
) -> dict[str, Any]:
    """s50(base) / s50(instruct): how many times less sparsity the aligned model needs to halve its harm.

    Inputs are `bootstrap_curve` dicts, `curve_stats` results, or any mapping with "s50" (and optionally
    "censored_left", "s50_samples"). The ratio is None when either s50 is None. When both carry `s50_samples` of the
    same length, resample b of one is paired with resample b of the other; with the same seed and the same prompt
    set this is a joint resample over prompts, otherwise an independent one, both valid. The CI (percentiles of
    log10 ratio) is over pairs where both reached, and only when at least `min_reached` of pairs did, else None.
    `censored` is true when either s50 is left-censored, i.e. the ratio is a bound rather than an estimate.
    """
    b, i = _as_mapping(base), _as_mapping(instruct)
    sb, si = b.get("s50"), i.get("s50")
    ratio = None if sb is None or si is None else float(sb) / float(si)
    out: dict[str, Any] = {
        "ratio": ratio,
        "censored": bool(b.get("censored_left", False) or i.get("censored_left", False)),
        "ratio_ci": None,
        "paired_fraction": None,
        "ratio_samples": None,
    }
    xb, xi = b.get("s50_samples"), i.get("s50_samples")
    if xb is None or xi is None:
        return out
    xb, xi = np.asarray(xb, dtype=float), np.asarray(xi, dtype=float)
    if xb.shape != xi.shape or xb.ndim != 1:
        raise CurveError(f"cannot pair bootstrap samples of shapes {xb.shape} and {xi.shape}: use equal n_resamples")
    samples = xb / xi  # NaN wherever either side did not reach
    paired = np.isfinite(samples)
    out["paired_fraction"] = float(paired.mean())
    out["ratio_samples"] = samples
    if ratio is not None and out["paired_fraction"] >= min_reached:
        out["ratio_ci"] = _percentile_ci(samples[paired], level, log=True)
    return out
