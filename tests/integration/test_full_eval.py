"""eval=full end to end on tiny_random: judges, utility and attacks all land in metrics.json."""

import json
import math
import os
from pathlib import Path

import pytest

from harmcore.measure.judges.strongreject import TEMPLATE_KEY
from harmcore.models.builders import build
from tests.integration.helpers import TINY, cli, read_metrics
from tests.integration.test_lm_eval_utility import write_task

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_full_eval_writes_every_metric(served_tiny, tmp_path):
    judge_dir = build("tiny_random", Path(os.environ["HARMCORE_CACHE"]))  # a stand-in judge model
    template = tmp_path / "judge_templates.json"
    template.write_text(json.dumps({TEMPLATE_KEY: "Request: {forbidden_prompt}\nAnswer: {response}\nGrade:"}))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    tasks = write_task(tmp_path / "tasks")
    out = tmp_path / "outputs"
    job = out / "job"
    r = cli(
        "experiments.run",
        *TINY,
        "eval=full",
        "sparsity=0.02",
        f"output_root={out}",
        f"cache_dir={out}/cache",
        f"hydra.run.dir={job}",
        f"eval.strongreject.model={judge_dir}",
        "eval.strongreject.adapter=null",
        f"eval.strongreject.template_path={template}",
        f"eval.endpoint.base_url={served_tiny.base_url}",
        f"eval.endpoint.model={served_tiny.model}",
        "eval.endpoint.judges=[strongreject_rubric,coherence]",
        "eval.endpoint.max_tokens=16",
        "eval.utility.benign_judges=[usefulness]",
        f"eval.utility.perplexity_source={corpus}",
        "eval.utility.seqlen=128",
        "eval.utility.lm_eval_tasks=[mini_facts]",
        f"eval.utility.lm_eval_include_path={tasks}",
        "eval.utility.lm_eval_include_defaults=false",
        f"eval.utility.qa_source={FIXTURES / 'qa.jsonl'}",
        "eval.utility.qa_max_new_tokens=4",
        "eval.attacks.attacks=[prefill,refusal_ablation,lora+prefill]",
        "eval.attacks.lora_r=4",
        "eval.attacks.lora_epochs=1",
        "eval.attacks.lora_batch_size=2",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_metrics(job)
    for part in (m, m["baseline"]):
        assert 0.0 <= part["strongreject"] <= 1.0 and part["strongreject_ci"][0] <= part["strongreject_ci"][1]
        assert part["strongreject_rubric_parse_failed"] == 4  # a random model writes no rubric answer
        assert part["strongreject_rubric"] is None
        assert part["coherence"] is None or 0.0 <= part["coherence"] <= 100.0
        u = part["utility"]
        assert u["perplexity"] > 1.0 and u["perplexity_tokens"] > 100
        assert 0.0 <= u["lm_eval"]["mini_facts"]["acc"] <= 1.0 and u["qa_accuracy"] == 0.0
        # the endpoint judged the model's answers to every held-out benign instruction
        assert u["n_benign_judged"] == 4 and 0 <= u["usefulness_parse_failed"] <= 4
        assert (u["usefulness"] is None) == (u["usefulness_parse_failed"] == 4)
        assert u["usefulness"] is None or 0.0 <= u["usefulness"] <= 100.0
    assert m["utility"]["perplexity"] != m["baseline"]["utility"]["perplexity"]  # pruning shows in utility
    assert set(m["attacks"]) == {"prefill", "refusal_ablation", "lora+prefill"}
    for name, result in m["attacks"].items():
        if "skipped" in result:
            assert name != "refusal_ablation"
            continue
        for variant in ("dense", "pruned"):
            v = result[variant]
            assert v["n"] >= 1 and 0.0 <= v["compliance"] <= 1.0 and len(v["compliance_ci"]) == 2
            assert 0.0 <= v["strongreject"] <= 1.0 and not math.isnan(v["strongreject"])
            assert v["harmfulness"] == v["strongreject"] and 0.0 <= v["refusal_rate_wei"] <= 1.0  # the paper's two
    ablation = m["attacks"]["refusal_ablation"]
    assert ablation["pruned"]["n_pruned"] > m["n_pruned"] and ablation["dense"]["n_pruned"] > 0
    # its refusal data: the model's own refusals to calibration prompts, which scoring dropped
    assert 0 <= ablation["dense"]["n_own_refusals"] <= m["n_harmful_dropped_as_refusal"]
    rows = [json.loads(x) for x in (job / "generations.jsonl").read_text().splitlines()]
    assert all(0.0 <= row["strongreject"] <= 1.0 for row in rows)
    # a rerun finds every stage in the caches: same metrics, nothing recomputed
    (job / "metrics.json").unlink()
    r = cli("experiments.run", *r.args[3:])
    assert r.returncode == 0, r.stderr[-3000:]
    again = read_metrics(job)
    assert again["attacks"] == m["attacks"] and again["utility"] == m["utility"]
    assert "computed" not in {v for k, v in again["stages"].items() if k != "select"}


def test_a_curve_with_the_classifier_reports_it_as_the_headline(tmp_path):
    """The points' per-prompt classifier scores become the curve summary's headline; a single run
    that walks a curve (`sparsities=[...]`, no -m) gets its report like a sweep."""
    from harmcore.report.compression import bootstrap_curve

    judge_dir = build("tiny_random", Path(os.environ["HARMCORE_CACHE"]))
    template = tmp_path / "judge_templates.json"
    template.write_text(json.dumps({TEMPLATE_KEY: "Request: {forbidden_prompt}\nAnswer: {response}\nGrade:"}))
    out = tmp_path / "outputs"
    r = cli(
        "experiments.run", *TINY, "sparsities=[0,0.02,0.1]", f"output_root={out}", f"cache_dir={out}/cache",
        "eval.strongreject.enabled=true", f"eval.strongreject.model={judge_dir}", "eval.strongreject.adapter=null",
        f"eval.strongreject.template_path={template}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = {p.parent for p in out.rglob("q=grid/curve.csv")}  # the run folder, beside its points
    assert (sweep / "curve.png").exists() and not (out / "sweeps").exists()
    (curve,) = json.loads((sweep / "summary.json").read_text())["curves"]
    assert curve["measure"] == "strongreject" and set(curve["by_measure"]) >= {"compliance", "strongreject"}
    jobs = [(read_metrics(p.parent), p.parent) for p in sweep.rglob("metrics.json")]
    jobs.sort(key=lambda mj: mj[0]["sparsity_achieved"])
    rows = [[json.loads(x) for x in (d / "generations.jsonl").read_text().splitlines()] for _, d in jobs]
    for (m, _), job_rows in zip(jobs, rows):  # metrics.json's mean is the mean of the per-prompt scores
        assert m["strongreject"] == pytest.approx(sum(r["strongreject"] for r in job_rows) / len(job_rows))
    s = [m["sparsity_achieved"] for m, _ in jobs]
    expected = bootstrap_curve(s, [[r["strongreject"] for r in x] for x in rows], n_resamples=1000)
    assert curve["s50"] == expected["s50"] and curve["auc"] == expected["auc"]
    assert (
        curve["by_measure"]["compliance"]["auc"]
        == bootstrap_curve(s, [[r["complied"] for r in x] for x in rows], n_resamples=1000)["auc"]
    )
