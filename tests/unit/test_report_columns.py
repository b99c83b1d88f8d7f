"""The columns of every report file, pinned: a change to what a report holds must change this test
(and, with it, whoever reads these files: dashboards, notebooks, the paper tables)."""

from harmcore.report import control, cross_domain, dissociation, pairs, sweep

CURVE = (
    "model harm_domain scorer p ranking sparsity_requested sparsity_achieved n_pruned harmfulness "
    "harmfulness_lo harmfulness_hi baseline_harmfulness strongreject strongreject_lo strongreject_hi "
    "baseline_strongreject refusal_rate refusal_rate_wei harm_nll harm_nll_lo harm_nll_hi benign_nll benign_nll_lo "
    "benign_nll_hi baseline_harm_nll "
    "baseline_benign_nll delta_harm_nll delta_benign_nll curve_hash job"
).split()
PAIRS = (
    "harm_domain scorer p family rung model aligned reference measure n_points n_prompts s50 s50_lo "
    "s50_hi reached censored_left reached_fraction monotone auc auc_lo auc_hi utility_at_s50 "
    "utility_at_s50_lo utility_at_s50_hi ratio ratio_lo ratio_hi ratio_censored skipped"
).split()
CONTROL = [
    "model", "scorer", "p", "kind", "harm_domain", "control_domain", "harm_measure", "control_measure", "s50_harm",
    "s50_harm_lo", "s50_harm_hi", "s50_control", "s50_control_lo", "s50_control_hi", "auc_harm", "auc_harm_lo",
    "auc_harm_hi", "auc_control", "auc_control_lo", "auc_control_hi", "utility_at_s50_harm", "utility_at_s50_control",
    "ratio", "ratio_lo", "ratio_hi", "ratio_censored", "skipped",
]  # fmt: skip


def test_curve_pairs_and_control_columns():
    assert sweep.CURVE_COLUMNS == CURVE
    assert pairs.CSV_COLUMNS == PAIRS
    assert control.COLUMNS == CONTROL


def test_cross_domain_and_dissociation_tables():
    assert cross_domain.ROW_KEYS == ["model", "scorer", "p", "sparsity", "score_domain"]
    assert cross_domain.MATRIX_METRICS == ("relative_reduction", "delta_harm_nll")
    assert dissociation.MATRIX_KEYS == ("model", "harm_domain", "scorer", "p", "sparsity", "pruned_with")
    assert dissociation.ABILITIES == ("harmfulness", "harm_likelihood", "refusal", "detection", "explanation")
