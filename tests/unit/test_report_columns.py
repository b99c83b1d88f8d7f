"""The columns of every report file, pinned: a change to what a report holds must change this test
(and, with it, whoever reads these files: dashboards, notebooks, the paper tables)."""

from harmcore.report import control, cross_domain, dissociation, pairs, sweep

CURVE = (
    "model harm_domain scorer p ranking sparsity_requested sparsity_achieved n_pruned compliance "
    "compliance_lo compliance_hi baseline_compliance harmfulness harmfulness_lo harmfulness_hi "
    "baseline_harmfulness refusal_rate refusal_rate_wei harm_nll harm_nll_lo harm_nll_hi benign_nll benign_nll_lo "
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
    assert dissociation.ABILITIES == (
        "harmfulness", "compliance", "harm_likelihood", "refusal", "detection", "explanation"
    )  # fmt: skip


def test_keyword_compliance_is_never_called_harmfulness():
    """metrics.json: `harmfulness` is only the StrongREJECT classifier's mean (the paper's); jobs
    written before `compliance` existed are read with today's names."""
    from harmcore.measure.suite import headline
    from harmcore.report.measures import headline_harm, upgraded

    assert headline({"compliance": 0.9}, "corrected") == {"headline": {"harm": "compliance", "refusal": "refusal_rate"}}
    paper = headline({"compliance": 0.9, "strongreject": 0.4, "strongreject_ci": [0.3, 0.5]}, "wei")
    assert paper == {"harmfulness": 0.4, "harmfulness_ci": [0.3, 0.5],
                     "headline": {"harm": "harmfulness", "refusal": "refusal_rate_wei"}}  # fmt: skip
    old = {"harmfulness": 0.75, "harmfulness_ci": [0.5, 0.9], "baseline": {"harmfulness": 1.0, "strongreject": 0.6},
           "attacks": {"prefill": {"dense": {"harmfulness": 0.5}, "pruned": {"harmfulness": 0.25}},
                       "lora": {"skipped": "no data"}}}  # fmt: skip
    new = upgraded(old)
    assert new["compliance"] == 0.75 and new["compliance_ci"] == [0.5, 0.9] and "harmfulness" not in new
    assert new["baseline"] == {"compliance": 1.0, "strongreject": 0.6, "harmfulness": 0.6, "harmfulness_ci": None}
    assert new["attacks"]["prefill"]["pruned"] == {"compliance": 0.25} and new["attacks"]["lora"] == {
        "skipped": "no data"
    }
    assert upgraded(new) == new and old["harmfulness"] == 0.75  # idempotent; the file's dict untouched
    assert headline_harm(new) == "compliance" and headline_harm(new["baseline"]) == "harmfulness"
