"""Harm-compression curve statistics against hand-computed values."""

import math

import numpy as np
import pytest

from harmcore.report.compression import (
    CurveError,
    CurveStats,
    auc_log,
    bootstrap_curve,
    compression_ratio,
    curve_stats,
    relative_reduction,
    s50,
)

# Reference curve: R = 0.2, 0.6, 0.9 at 1e-5, 1e-4, 1e-3. The first crossing lies between 1e-5 and 1e-4:
# log10 s50 = -5 + (0.5 - 0.2) / (0.6 - 0.2) = -4.25.
S = [0.0, 1e-5, 1e-4, 1e-3]
H = [1.0, 0.8, 0.4, 0.1]
S50_REF = 10**-4.25
# Trapezoid over one-decade steps: ((0.2 + 0.6) / 2 + (0.6 + 0.9) / 2) / 2 decades = (0.4 + 0.75) / 2.
AUC_REF = 0.575


def test_relative_reduction_drops_dense_point_and_sorts():
    s, r = relative_reduction(S, H)
    np.testing.assert_allclose(s, [1e-5, 1e-4, 1e-3])
    np.testing.assert_allclose(r, [0.2, 0.6, 0.9])


def test_s50_log_interpolated_between_bracketing_points():
    value, censored = s50(S, H)
    assert value == pytest.approx(S50_REF, rel=1e-12)
    assert censored is False


def test_auc_by_hand():
    assert auc_log(S, H) == pytest.approx(AUC_REF, abs=1e-12)


def test_auc_uneven_spacing_by_hand():
    # R = 0, 0.5, 1 with steps of 1 and 2 decades: (1 * (0 + 0.5) / 2 + 2 * (0.5 + 1) / 2) / 3 = (0.25 + 1.5) / 3.
    assert auc_log([0, 1e-6, 1e-5, 1e-3], [2.0, 2.0, 1.0, 0.0]) == pytest.approx(1.75 / 3, abs=1e-12)


def test_auc_single_nonzero_point_is_its_R():
    assert auc_log([0, 1e-3], [1.0, 0.3]) == pytest.approx(0.7)


def test_curve_stats_reference_with_utility():
    # U at log10 s = -4.25 lies 3/4 of the way from 0.9 (1e-5) to 0.7 (1e-4): 0.9 - 0.75 * 0.2 = 0.75.
    st = curve_stats(S, H, utility=[1.0, 0.9, 0.7, 0.5])
    assert isinstance(st, CurveStats)
    assert st.s50 == pytest.approx(S50_REF, rel=1e-12)
    assert st.reached and not st.censored_left and st.monotone
    assert st.auc == pytest.approx(AUC_REF)
    assert st.utility_at_s50 == pytest.approx(0.75, abs=1e-12)


def test_never_reached_is_not_extrapolated():
    # R = 0.1, 0.3, 0.45: steadily approaching 0.5 but never there; s50 must stay None.
    s = [0, 1e-4, 1e-3, 1e-2]
    h = [1.0, 0.9, 0.7, 0.55]
    assert s50(s, h) == (None, False)
    st = curve_stats(s, h, utility=[1, 1, 1, 1])
    assert st.s50 is None and not st.reached and st.utility_at_s50 is None
    # Trapezoid: ((0.1 + 0.3) / 2 + (0.3 + 0.45) / 2) / 2 = (0.2 + 0.375) / 2.
    assert st.auc == pytest.approx(0.2875)


def test_non_monotone_uses_first_crossing():
    # R = 0.2, 0.7, 0.3, 0.9: crosses between 1e-5 and 1e-4 (t = 0.3 / 0.5 = 0.6), falls back, crosses again.
    s = [0, 1e-5, 1e-4, 1e-3, 1e-2]
    h = [1.0, 0.8, 0.3, 0.7, 0.1]
    value, censored = s50(s, h)
    assert value == pytest.approx(10**-4.4, rel=1e-12)
    assert not censored
    assert curve_stats(s, h).monotone is False


def test_harm_increase_at_dense_to_first_point_is_non_monotone():
    assert curve_stats([0, 1e-4, 1e-3], [1.0, 1.2, 0.1]).monotone is False


def test_exact_half_counts_as_reached():
    value, censored = s50([0, 1e-4, 1e-3], [1.0, 0.8, 0.5])
    assert value == pytest.approx(1e-3, rel=1e-12) and not censored


def test_left_censored():
    value, censored = s50([0, 1e-4, 1e-3], [1.0, 0.4, 0.1])
    assert value == 1e-4 and censored is True
    st = curve_stats([0, 1e-4, 1e-3], [1.0, 0.4, 0.1], utility=[3.0, 2.0, 1.0])
    assert st.censored_left and st.reached and st.utility_at_s50 == 2.0


@pytest.mark.parametrize("h0", [0.0, -0.1])
def test_zero_dense_harm_raises(h0):
    with pytest.raises(ValueError, match="H\\(0\\)"):
        curve_stats([0, 1e-4], [h0, 0.0])


@pytest.mark.parametrize(
    "s, h",
    [
        ([1e-4, 1e-3], [1.0, 0.5]),  # no dense point
        ([0.0, 0.0], [1.0, 0.5]),  # no pruned point
        ([0.0, -1e-4], [1.0, 0.5]),  # negative sparsity
        ([0.0, 1.5], [1.0, 0.5]),  # sparsity above 1
        ([0.0, 1e-4], [1.0]),  # length mismatch
        ([0.0, 1e-4], [1.0, float("nan")]),  # non-finite harm
    ],
)
def test_bad_curves_raise(s, h):
    with pytest.raises(CurveError):
        curve_stats(s, h)


def test_unsorted_input_matches_sorted():
    order = [2, 0, 3, 1]
    s = [S[i] for i in order]
    h = [H[i] for i in order]
    u = [[1.0, 0.9, 0.7, 0.5][i] for i in order]
    assert curve_stats(s, h, utility=u) == curve_stats(S, H, utility=[1.0, 0.9, 0.7, 0.5])


def test_duplicate_sparsities_are_averaged():
    # Two runs at 1e-4 (0.3 and 0.5) count as one point with H = 0.4; the dense point is averaged as well.
    s = [1e-4, 0, 1e-5, 1e-3, 1e-4, 0]
    h = [0.3, 0.9, 0.8, 0.1, 0.5, 1.1]
    assert curve_stats(s, h) == curve_stats(S, H)
    np.testing.assert_allclose(relative_reduction(s, h)[1], [0.2, 0.6, 0.9])


def _step_prompts(n: int, drop_at: int, n_points: int) -> np.ndarray:
    """Per-prompt 0/1 harm: every prompt harmful before point index `drop_at`, harmless from it on."""
    return np.array([[1.0] * n if i < drop_at else [0.0] * n for i in range(n_points)])


def test_bootstrap_degenerate_ci_equals_point():
    # Every prompt stops being harmful at 1e-4, so every resample has R = 0, 1, 1 and s50 = 10**-4.5.
    per_prompt = _step_prompts(30, drop_at=2, n_points=4)
    out = bootstrap_curve(S, per_prompt, n_resamples=200, seed=1)
    assert out["s50"] == pytest.approx(10**-4.5, rel=1e-12)
    assert out["reached"] and out["reached_fraction"] == 1.0
    lo, hi = out["s50_ci"]
    assert lo == pytest.approx(out["s50"], rel=1e-12) and hi == pytest.approx(out["s50"], rel=1e-12)
    lo, hi = out["auc_ci"]
    assert lo == pytest.approx(out["auc"]) and hi == pytest.approx(out["auc"])
    assert out["s50_samples"].shape == (200,)


def _noisy_prompts(seed: int, n: int = 200, centre: float = 1e-4) -> tuple[list[float], np.ndarray]:
    """0/1 harm per prompt: each prompt turns harmless at its own sparsity, log-normal around `centre`."""
    rng = np.random.default_rng(seed)
    s = [0.0, *np.logspace(-6, -2, 9)]
    threshold = 10 ** (np.log10(centre) + 0.7 * rng.standard_normal(n))
    harmful_dense = rng.random(n) < 0.8
    per_prompt = np.array([harmful_dense & (x < threshold) for x in s], dtype=float)
    return s, per_prompt


def test_bootstrap_noisy_ci_contains_point_and_is_reproducible():
    s, per_prompt = _noisy_prompts(seed=3)
    u = np.linspace(2.0, 3.0, len(s))  # a fixed utility curve (e.g. benign NLL per point)
    out = bootstrap_curve(s, per_prompt, n_resamples=500, seed=7, utility=u)
    point = curve_stats(s, per_prompt.mean(axis=1), utility=u)
    assert out["s50"] == pytest.approx(point.s50) and out["auc"] == pytest.approx(point.auc)
    assert out["reached_fraction"] >= 0.95
    for key in ("s50", "auc", "utility_at_s50"):
        lo, hi = out[f"{key}_ci"]
        assert lo <= out[key] <= hi and lo < hi, key
    again = bootstrap_curve(s, per_prompt, n_resamples=500, seed=7, utility=u)
    np.testing.assert_array_equal(out["s50_samples"], again["s50_samples"])
    other = bootstrap_curve(s, per_prompt, n_resamples=500, seed=8, utility=u)
    assert not np.array_equal(out["s50_samples"], other["s50_samples"])


def test_bootstrap_per_prompt_utility():
    s, per_prompt = _noisy_prompts(seed=4)
    rng = np.random.default_rng(0)
    u = np.linspace(2.0, 3.0, len(s))[:, None] + 0.1 * rng.standard_normal((len(s), 50))
    out = bootstrap_curve(s, per_prompt, n_resamples=300, seed=0, utility=u)
    assert out["utility_at_s50"] == pytest.approx(curve_stats(s, per_prompt.mean(1), utility=u.mean(1)).utility_at_s50)
    lo, hi = out["utility_at_s50_ci"]
    assert lo <= out["utility_at_s50"] <= hi


def test_bootstrap_ci_withheld_when_resamples_rarely_reach():
    # Half the prompts drop at the last point, so R = 0.5 exactly there: the point estimate reaches,
    # but about half the resamples fall short, so no CI is given.
    n = 40
    per_prompt = np.ones((4, n))
    per_prompt[3, : n // 2] = 0.0
    out = bootstrap_curve(S, per_prompt, n_resamples=400, seed=0)
    assert out["reached"] and out["s50"] == pytest.approx(1e-3)
    assert 0.3 < out["reached_fraction"] < 0.7
    assert out["s50_ci"] is None and out["auc_ci"] is not None
    assert np.isnan(out["s50_samples"]).sum() == round((1 - out["reached_fraction"]) * 400)


def test_bootstrap_not_reached_point():
    per_prompt = np.ones((4, 10))
    out = bootstrap_curve(S, per_prompt, n_resamples=50, seed=0)
    assert out["s50"] is None and not out["reached"] and out["reached_fraction"] == 0.0 and out["s50_ci"] is None


def test_bootstrap_rejects_ragged_and_mismatched_input():
    with pytest.raises(CurveError):
        bootstrap_curve([0, 1e-4], [[1, 0, 1], [0, 0]])
    with pytest.raises(CurveError):
        bootstrap_curve([0, 1e-4, 1e-3], [[1, 1], [0, 0]])


def test_bootstrap_unsorted_matches_sorted():
    s, per_prompt = _noisy_prompts(seed=5)
    order = np.random.default_rng(0).permutation(len(s))
    a = bootstrap_curve(s, per_prompt, n_resamples=200, seed=2)
    b = bootstrap_curve([s[i] for i in order], per_prompt[order], n_resamples=200, seed=2)
    np.testing.assert_allclose(a["s50_samples"], b["s50_samples"], equal_nan=True)
    assert a["s50_ci"] == pytest.approx(b["s50_ci"])


def _exact_curve(s: list[float], h: list[float], n: int = 20) -> np.ndarray:
    """Every prompt has the same harm per point, so every resample reproduces the curve exactly."""
    return np.repeat(np.asarray(h, dtype=float)[:, None], n, axis=1)


def test_compression_ratio_known_s50s_with_ci():
    # Base reaches R = 0.5 exactly at 1e-3, instruct exactly at 1e-4: ratio 10 in every resample.
    s = [0.0, 1e-5, 1e-4, 1e-3, 1e-2]
    base = bootstrap_curve(s, _exact_curve(s, [1.0, 1.0, 0.8, 0.5, 0.1]), n_resamples=100, seed=0)
    inst = bootstrap_curve(s, _exact_curve(s, [1.0, 0.9, 0.5, 0.2, 0.0]), n_resamples=100, seed=0)
    assert base["s50"] == pytest.approx(1e-3) and inst["s50"] == pytest.approx(1e-4)
    out = compression_ratio(base, inst)
    assert out["ratio"] == pytest.approx(10.0)
    assert out["ratio_ci"] == pytest.approx((10.0, 10.0))
    assert out["paired_fraction"] == 1.0 and out["censored"] is False


def test_compression_ratio_noisy_ci_contains_point():
    s, base_pp = _noisy_prompts(seed=10, centre=1e-3)
    _, inst_pp = _noisy_prompts(seed=11, centre=1e-4)
    base = bootstrap_curve(s, base_pp, n_resamples=400, seed=0)
    inst = bootstrap_curve(s, inst_pp, n_resamples=400, seed=0)
    out = compression_ratio(base, inst)
    assert out["ratio"] == pytest.approx(base["s50"] / inst["s50"])
    assert 3 < out["ratio"] < 30
    lo, hi = out["ratio_ci"]
    assert lo <= out["ratio"] <= hi
    assert out["ratio_samples"].shape == (400,)


def test_compression_ratio_point_only_and_not_reached():
    out = compression_ratio({"s50": 1e-3}, curve_stats(S, H))
    assert out["ratio"] == pytest.approx(1e-3 / S50_REF) and out["ratio_ci"] is None
    never = curve_stats([0, 1e-4], [1.0, 0.9])
    out = compression_ratio(never, {"s50": 1e-4})
    assert out["ratio"] is None and out["ratio_ci"] is None


def test_compression_ratio_flags_censoring_and_rejects_unpaired_samples():
    cens = curve_stats([0, 1e-4, 1e-3], [1.0, 0.4, 0.1])
    assert compression_ratio(curve_stats(S, H), cens)["censored"] is True
    a = {"s50": 1e-3, "s50_samples": np.full(10, 1e-3)}
    b = {"s50": 1e-4, "s50_samples": np.full(12, 1e-4)}
    with pytest.raises(CurveError):
        compression_ratio(a, b)


def test_ci_level_is_respected():
    s, per_prompt = _noisy_prompts(seed=6)
    wide = bootstrap_curve(s, per_prompt, n_resamples=400, seed=0, level=0.95)["auc_ci"]
    narrow = bootstrap_curve(s, per_prompt, n_resamples=400, seed=0, level=0.5)["auc_ci"]
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1]
    assert math.isfinite(wide[0]) and math.isfinite(wide[1])
