"""The pair/ladder report on synthetic sweep folders with known s50, AUC, utility at s50 and ratio."""

import csv
import json
import math

import pytest

from harmcore.report import control, pairs
from harmcore.report.sweep import aggregate, collect

S = [0.0, 1e-4, 1e-3, 1e-2]
N = 10  # prompts


def write_job(
    sweep, model, aligned, s, n_harmful, benign_nll, harm_nll=1.0, ladder=None, family="fam", ranking=None, judge=None,
    domain="all",
):  # fmt: skip
    """`judge`: {generations.jsonl field: per-prompt values} written beside the keyword compliance."""
    job = sweep / model / (ranking or "") / ("" if domain == "all" else domain) / f"q={s}"
    job.mkdir(parents=True)
    harmful = [1.0] * n_harmful + [0.0] * (N - n_harmful)
    rows = [{"harmful": h} | {k: v[i] for k, v in (judge or {}).items()} for i, h in enumerate(harmful)]
    (job / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    nll = {"harm": [harm_nll] * 3, "benign": [benign_nll] * 5}
    (job / "reference_nll.json").write_text(json.dumps({"dense": nll, "pruned": nll}))
    metrics = {
        "model": model,
        "harm_domain": domain,
        "scorer": "signed_snip",
        "p": 0.0,
        "sparsity_requested": s,
        "sparsity_achieved": s,
        "n_pruned": int(s * 1e6),
        "harmfulness": n_harmful / N,
        "benign_nll": benign_nll,
        "harm_nll": harm_nll,
        "baseline": {},
        "model_aligned": aligned,
        "model_family": family,
        "ladder": ladder,
    }
    metrics |= {k: sum(v) / N for k, v in (judge or {}).items() if None not in v}
    if ranking:  # the pipeline's hash of the settings one curve shares (here only the ranking differs)
        metrics |= {"ranking": ranking, "curve_hash": f"hash-{ranking}"}
    (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path):
    # base: H = 1, .8, .4, .1 -> R = .2, .6, .9: log10 s50 = -4 + (.5 - .2) / (.6 - .2) = -3.25; AUC .575;
    #   U = 2, 2, 2.4, 3 -> U(s50) = 2 + .75 * .4 = 2.3.
    # instruct: H = 1, .6, .3, .1 -> R = .4, .7, .9: log10 s50 = -4 + 1/3; AUC ((.4+.7)/2 + (.7+.9)/2) / 2 = .675.
    # harm_likelihood is flat (NLL 1.0 everywhere): R = 0, never reached, no ratio.
    for s, hb, hi, u in zip(S, [10, 8, 4, 1], [10, 6, 3, 1], [2.0, 2.0, 2.4, 3.0]):
        write_job(tmp_path, "base", False, s, hb, u)
        write_job(tmp_path, "instruct", True, s, hi, u + 1)
    return tmp_path


def by(rows, model, measure):
    (row,) = [r for r in rows if r["model"] == model and r["measure"] == measure]
    return row


def test_known_s50_auc_utility_and_ratio(sweep):
    points, _ = collect(sweep)
    rep = pairs.report(sweep, points, n_resamples=200)
    (setting,) = rep["settings"]
    assert setting["ladder"] == ["base", "instruct"]  # unaligned first
    base, inst = by(rep["rows"], "base", "compliance"), by(rep["rows"], "instruct", "compliance")
    assert base["s50"] == pytest.approx(10**-3.25) and inst["s50"] == pytest.approx(10 ** (-4 + 1 / 3))
    assert base["auc"] == pytest.approx(0.575) and inst["auc"] == pytest.approx(0.675)
    assert base["utility_at_s50"] == pytest.approx(2.3)
    assert inst["utility_at_s50"] == pytest.approx(3.0 + 0.4 / 3)  # 3 + (1/3) * (3.4 - 3)
    assert inst["ratio"] == pytest.approx(10 ** (-3.25 + 4 - 1 / 3)) and "ratio" not in base
    assert inst["s50_lo"] <= inst["s50"] <= inst["s50_hi"] and inst["auc_lo"] <= inst["auc"] <= inst["auc_hi"]
    assert inst["ratio_lo"] <= inst["ratio"] <= inst["ratio_hi"]
    curve = setting["members"][0]["curve"]
    assert curve["s"] == S and curve["compliance"] == [1.0, 0.8, 0.4, 0.1] and curve["benign_nll"] == [2, 2, 2.4, 3]
    assert curve["harm_likelihood"] == pytest.approx([math.exp(-1.0)] * 4)


def test_never_reached_has_no_s50_and_no_ratio(sweep):
    points, _ = collect(sweep)
    rows = pairs.report(sweep, points, n_resamples=50)["rows"]
    for model in ("base", "instruct"):
        row = by(rows, model, "harm_likelihood")
        assert row["s50"] is None and row["reached"] is False and row["auc"] == 0.0
    assert by(rows, "instruct", "harm_likelihood").get("ratio") is None


def test_non_monotone_member_uses_first_crossing_and_ladder_order(tmp_path):
    # R = .6, .2, .9: crosses at the first pruned point already (censored), falls back, crosses again.
    ladder = ["b", "a"]
    for s, ha, hb in zip(S, [10, 4, 8, 1], [10, 8, 4, 1]):
        write_job(tmp_path, "a", True, s, ha, 1.0, ladder=ladder)
        write_job(tmp_path, "b", False, s, hb, 1.0, ladder=ladder)
    points, _ = collect(tmp_path)
    rep = pairs.report(tmp_path, points, n_resamples=50)
    assert rep["settings"][0]["ladder"] == ladder
    a = by(rep["rows"], "a", "compliance")
    assert a["s50"] == pytest.approx(1e-4) and a["censored_left"] is True and a["monotone"] is False
    assert a["ratio"] == pytest.approx(10**-3.25 / 1e-4) and a["ratio_censored"] is True


def test_aggregate_writes_pair_files(sweep):
    summary = aggregate(sweep)
    assert summary["pair_report"] == "pairs.json"
    with open(sweep / "pairs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and float(by(rows, "instruct", "compliance")["ratio"]) == pytest.approx(10 ** (0.75 - 1 / 3))
    data = json.loads((sweep / "pairs.json").read_text())
    assert [m["model"] for m in data["settings"][0]["members"]] == ["base", "instruct"]
    assert (sweep / "pairs.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_per_prompt_rows_are_skipped_with_reason(sweep):
    (sweep / "base" / "q=0.001" / "reference_nll.json").unlink()
    points, _ = collect(sweep)
    row = by(pairs.report(sweep, points, n_resamples=20)["rows"], "base", "harm_likelihood")
    assert "missing" in row["skipped"] and "s50" not in row


def test_a_sweep_over_rankings_keeps_one_curve_per_ranking(tmp_path):
    # per_matrix: the fixture's curves; global: every member halves harm only at 1e-2
    for s, hb, hi, u in zip(S, [10, 8, 4, 1], [10, 6, 3, 1], [2.0, 2.0, 2.4, 3.0]):
        write_job(tmp_path, "base", False, s, hb, u, ranking="per_matrix")
        write_job(tmp_path, "instruct", True, s, hi, u + 1, ranking="per_matrix")
        write_job(tmp_path, "base", False, s, 10 if s < 1e-2 else 5, u, ranking="global")
        write_job(tmp_path, "instruct", True, s, 10 if s < 1e-2 else 5, u + 1, ranking="global")
    points, _ = collect(tmp_path)
    assert {p["scorer"] for p in points} == {"signed_snip [ranking=per_matrix]", "signed_snip [ranking=global]"}
    rep = pairs.report(tmp_path, points, n_resamples=50)
    assert len(rep["settings"]) == 2  # one pair per ranking, never one curve mixing both
    rows = {(r["scorer"], r["model"]): r for r in rep["rows"] if r["measure"] == "compliance"}
    assert rows[("signed_snip [ranking=per_matrix]", "base")]["s50"] == pytest.approx(10**-3.25)
    assert rows[("signed_snip [ranking=global]", "base")]["s50"] == pytest.approx(1e-2)
    summary = aggregate(tmp_path)
    assert len(summary["curves"]) == 4 and all("skipped" not in c for c in summary["curves"])


def test_jobs_from_before_curve_hash_join_the_curve_of_the_new_ones(tmp_path):
    for i, s in enumerate(S):  # a sweep resumed after an upgrade: its first points have no curve_hash
        write_job(tmp_path, "base", False, s, 10 - 3 * i, 2.0, ranking="per_matrix" if i >= 2 else None)
    points, _ = collect(tmp_path)
    assert {p["scorer"] for p in points} == {"signed_snip"} and len(points) == 4


def classifier_sweep(tmp_path):
    """The fixture's keyword curves plus StrongREJECT classifier scores that halve elsewhere.

    base classifier: .8, .8, .2, .1 -> R = 0, .75, .875: log10 s50 = -4 + .5 / .75;
    instruct: .5, .2, .1, .1 -> R = .6 at the first pruned point (censored left): s50 = 1e-4.
    """
    classifier = {"base": [0.8, 0.8, 0.2, 0.1], "instruct": [0.5, 0.2, 0.1, 0.1]}
    for s, hb, hi, u, cb, ci in zip(S, [10, 8, 4, 1], [10, 6, 3, 1], [2.0, 2.0, 2.4, 3.0], *classifier.values()):
        write_job(tmp_path, "base", False, s, hb, u, judge={"strongreject": [cb] * N})
        write_job(tmp_path, "instruct", True, s, hi, u + 1, judge={"strongreject": [ci] * N})
    return tmp_path


def test_the_classifier_is_a_measure_of_its_own_when_the_jobs_ran_it(tmp_path):
    sweep = classifier_sweep(tmp_path)
    points, _ = collect(sweep)
    # the classifier's mean is the curve's harmfulness (old files: their "harmfulness" is compliance)
    assert [p["harmfulness"] for p in points if p["model"] == "base"] == pytest.approx([0.8, 0.8, 0.2, 0.1])
    rep = pairs.report(sweep, points, n_resamples=50)
    assert list(rep["measures"]) == ["compliance", "strongreject", "harm_likelihood"]
    base, inst = by(rep["rows"], "base", "strongreject"), by(rep["rows"], "instruct", "strongreject")
    assert base["s50"] == pytest.approx(10 ** (-4 + 0.5 / 0.75)) and inst["s50"] == pytest.approx(1e-4)
    assert inst["ratio"] == pytest.approx(10 ** (-4 + 0.5 / 0.75) / 1e-4)
    assert by(rep["rows"], "base", "compliance")["s50"] == pytest.approx(10**-3.25)  # keyword curve unchanged
    # The sweep summary's headline is the classifier (the paper's harmfulness); keyword compliance stays beside it.
    curves = {c["model"]: c for c in aggregate(sweep)["curves"]}
    assert curves["base"]["measure"] == "strongreject" and curves["base"]["s50"] == pytest.approx(base["s50"])
    assert curves["base"]["by_measure"]["compliance"]["s50"] == pytest.approx(10**-3.25)
    assert set(curves["base"]["by_measure"]) == {"compliance", "strongreject", "harm_likelihood"}


def test_without_the_classifier_nothing_changes_and_a_failed_parse_drops_a_judge(sweep, tmp_path):
    points, _ = collect(sweep)
    rep = pairs.report(sweep, points, n_resamples=20)
    assert list(rep["measures"]) == ["compliance", "harm_likelihood"]
    assert {r["measure"] for r in rep["rows"]} == {"compliance", "harm_likelihood"}
    (curve, _) = aggregate(sweep)["curves"]
    assert curve["measure"] == "compliance" and curve["s50"] == pytest.approx(10**-3.25)
    # A rubric judgement that failed to parse (None) leaves no per-prompt row: the measure is left out.
    other = tmp_path / "other"
    for i, s in enumerate(S):
        scores = [0.9 - 0.2 * i] * N
        scores[0] = None if i == 2 else scores[0]
        write_job(other, "base", False, s, 10 - 3 * i, 2.0, judge={"strongreject_rubric": scores})
    (curve,) = aggregate(other)["curves"]
    assert set(curve["by_measure"]) == {"compliance", "harm_likelihood"} and curve["measure"] == "compliance"


def test_control_report_compares_the_classifier_with_qa_accuracy(tmp_path):
    # harm classifier .8, .55, .3, .05: R = .3125, .625, .9375 -> log10 s50 = -4 + .1875 / .3125 = -3.4;
    # QA correct 1, 1, 1, 0: R jumps 0 -> 1 between 1e-3 and 1e-2 -> log10 s50 = -2.5.
    for i, s in enumerate(S):
        write_job(tmp_path, "m", True, s, 10, 2.0, judge={"strongreject": [0.8 - 0.25 * i] * N})
        write_job(tmp_path, "m", True, s, 10, 2.0, judge={"correct": [float(i < 3)] * N}, domain="trivia")
    points, _ = collect(tmp_path)
    rep = control.report(tmp_path, points, n_resamples=50)
    rows = {r["kind"]: r for r in rep["rows"]}
    assert set(rows) == {"judge", "classifier", "likelihood"}
    c = rows["classifier"]
    assert (c["harm_measure"], c["control_measure"]) == ("strongreject", "qa_accuracy")
    assert c["s50_harm"] == pytest.approx(10**-3.4) and c["s50_control"] == pytest.approx(10**-2.5)
    assert c["ratio"] == pytest.approx(10**0.9)
    assert rows["judge"]["s50_harm"] is None  # keyword compliance stays at 1: never halves
