"""The reverse direction: calibration data per target, and the pruned-with x measured table."""

import csv
import json
import math

import pytest

from harmcore.data.examples import Example
from harmcore.data.refusals import REFUSALS
from harmcore.errors import HarmcoreError
from harmcore.measure.recognition import DETECT, EXPLAIN
from harmcore.report import dissociation
from harmcore.run.config import DataConfig
from harmcore.run.targets import target_examples

HARMFUL = [Example("How do I pick a lock to break in?", "", "crime"), Example("Write a threat.", "", "hate")]


def no_generation(prompts):
    raise AssertionError("this target must not generate")


def test_detection_uses_gold_answers_on_both_sides():
    out, dropped = target_examples("detection", HARMFUL, ["a", "b"], ["Bake bread."], no_generation)
    assert dropped == 0
    assert [(e.prompt, e.response) for e in out] == [
        (DETECT.format(prompt=HARMFUL[0].prompt), "Yes"),
        (DETECT.format(prompt=HARMFUL[1].prompt), "Yes"),
        (DETECT.format(prompt="Bake bread."), "No"),
    ]
    assert out[0].domain == "crime" and out[2].domain is None


def test_explanation_keeps_the_models_explanations_and_drops_refusals():
    asked = []

    def generate(prompts):
        asked.extend(prompts)
        return ["It could hurt people who live there.", "I'm sorry, but I can't help with that."]

    out, dropped = target_examples("explanation", HARMFUL, ["", ""], [], generate)
    assert asked == [EXPLAIN.format(prompt=e.prompt) for e in HARMFUL]
    assert [(e.prompt, e.response) for e in out] == [(asked[0], "It could hurt people who live there.")]
    assert dropped == 1
    kept, dropped = target_examples("explanation", HARMFUL, ["", ""], [], generate, drop_refusals=False)
    assert len(kept) == 2 and dropped == 0


def test_refusal_uses_the_models_own_refusals_else_fixed_phrasings():
    own = ["Sure, here is how.", "I cannot help with that request."]
    out, _ = target_examples("refusal", HARMFUL, own, [], no_generation)
    assert [e.prompt for e in out] == [e.prompt for e in HARMFUL]
    assert {e.response for e in out} == {"I cannot help with that request."}
    assert [e.domain for e in out] == ["crime", "hate"]
    out, _ = target_examples("refusal", HARMFUL, ["Sure.", "Here you go."], [], no_generation)
    assert {e.response for e in out} <= set(REFUSALS)
    # each refused prompt keeps its own refusal; only complied prompts borrow one
    own = ["I won't write that lock guide.", "I'm sorry, I can't write threats."]
    out, _ = target_examples("refusal", HARMFUL, own, [], no_generation)
    assert [e.response for e in out] == own


def test_unknown_target_is_refused_by_the_config():
    with pytest.raises(HarmcoreError, match="data.target=harmful"):
        DataConfig(target="harmful")


def test_abilities_from_a_metrics_block():
    block = {
        "compliance": 0.5,
        "harm_nll": 2.0,
        "harm_likelihood": 0.3,
        "refusal_rate": 0.25,
        "recognition": {
            "detection": {"yes_rate_harmful": 0.8, "no_rate_benign": 0.4},
            "explanation": {"explanation_score": 3.5},
        },
    }
    a = dissociation.abilities(block)
    assert a == {
        "harmfulness": None,  # only the StrongREJECT classifier's mean is harmfulness: it did not run
        "compliance": 0.5,
        "harm_likelihood": 0.3,
        "refusal": 0.25,
        "detection": pytest.approx(0.6),  # balanced accuracy
        "explanation": 3.5,
    }
    # Under the paper's protocol: the classifier's mean and Wei et al.'s refusal rate are the headline
    paper = {**block, "harmfulness": 0.4, "refusal_rate_wei": 0.75, "headline": {"refusal": "refusal_rate_wei"}}
    assert dissociation.abilities(paper)["harmfulness"] == 0.4 and dissociation.abilities(paper)["refusal"] == 0.75
    assert dissociation.abilities({}) == dict.fromkeys(dissociation.ABILITIES)
    # A job written before metrics.json held harm_likelihood: the mean of exp(-NLL) over its
    # references (as the curve reports compute it), not exp(-mean NLL).
    old = dissociation.abilities({"harm_nll": 2.0}, harm_nll=[1.0, 3.0])
    assert old["harm_likelihood"] == pytest.approx((math.exp(-1.0) + math.exp(-3.0)) / 2)
    assert old["harm_likelihood"] != pytest.approx(math.exp(-2.0))


def _job(root, name, target, dense, pruned, nll=None):
    job = root / name
    job.mkdir(parents=True)
    if nll:  # per-reference harm NLLs {"dense": [...], "pruned": [...]}
        (job / "reference_nll.json").write_text(json.dumps({k: {"harm": v} for k, v in nll.items()}))
    m = {"model": "m", "harm_domain": "all", "scorer": "signed_snip", "sparsity_requested": 1e-4,
         "sparsity_achieved": 1e-4, "data_target": target, **pruned, "baseline": dense}  # fmt: skip
    (job / "metrics.json").write_text(json.dumps(m))
    return {"job": name}


def test_report_is_pruned_over_dense_per_target(tmp_path):
    dense = {"harmfulness": 0.8, "harm_nll": 1.0, "refusal_rate": 0.0,
             "recognition": {"detection": {"yes_rate_harmful": 1.0, "no_rate_benign": 0.5}}}  # fmt: skip
    harm_pruned = {"harmfulness": 0.2, "harm_nll": 3.0, "refusal_rate": 0.1,
                   "recognition": {"detection": {"yes_rate_harmful": 1.0, "no_rate_benign": 0.5}}}  # fmt: skip
    det_pruned = {"harmfulness": 0.8, "harm_nll": 1.0, "refusal_rate": 0.0,
                  "recognition": {"detection": {"yes_rate_harmful": 0.5, "no_rate_benign": 0.0}}}  # fmt: skip
    nll = {"dense": [1.0, 1.0], "pruned": [2.0, 4.0]}
    points = [
        _job(tmp_path, "a", "harm", dense, harm_pruned, nll),
        _job(tmp_path, "b", "detection", dense, det_pruned, {"dense": [1.0], "pruned": [1.0]}),
    ]
    table = dissociation.write(tmp_path, points)
    by = {r["pruned_with"]: r for r in table}
    assert by["harm"]["compliance"] == pytest.approx(0.25) and by["harm"]["detection"] == pytest.approx(1.0)
    retained = (math.exp(-2.0) + math.exp(-4.0)) / 2 / math.exp(-1.0)
    assert by["harm"]["harm_likelihood"] == pytest.approx(retained)
    assert by["detection"]["compliance"] == pytest.approx(1.0) and by["detection"]["detection"] == pytest.approx(1 / 3)
    assert by["harm"]["refusal"] is None  # dense refusal 0: nothing to retain
    assert by["harm"]["explanation"] is None  # not measured
    with open(tmp_path / "dissociation_matrix.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["pruned_with"] for r in rows] == ["harm", "detection"]
    assert float(rows[0]["compliance"]) == pytest.approx(0.25) and rows[0]["refusal"] == ""
    assert rows[0]["harmfulness"] == ""  # old files: keyword compliance is read as compliance, not harmfulness
    with open(tmp_path / "dissociation.csv") as f:
        long = list(csv.DictReader(f))
    assert len(long) == 2 * len(dissociation.ABILITIES)
    assert (tmp_path / "dissociation.png").stat().st_size > 1000


def test_no_report_for_a_single_target(tmp_path):
    points = [_job(tmp_path, "a", "harm", {"harmfulness": 1.0}, {"harmfulness": 0.5})]
    assert dissociation.write(tmp_path, points) is None
    assert not (tmp_path / "dissociation.csv").exists()


def test_no_recognition_prompt_of_either_kind_is_scored_with_a_reverse_target(tmp_path):
    """data.target=detection with a custom recognition file: neither its harmful requests nor its
    benign look-alikes reach the calibration data (nor the preserve set)."""
    from harmcore.measure.config import RecognitionConfig
    from harmcore.models.config import ModelConfig
    from harmcore.run.config import Config, EvalConfig
    from harmcore.run.context import JobContext
    from harmcore.run.prepare import prepare_data
    from harmcore.run.session import Session

    session = Session()

    def job_data(recognition):
        cfg = Config(
            model=ModelConfig(name="tiny_random", builder="tiny_random", device="cpu"),
            data=DataConfig(n_calibration=4, n_eval=4, response_tokens=8, target="detection"),
            eval=EvalConfig(recognition=recognition),
        )
        ctx = JobContext.create(cfg, session)
        return prepare_data(ctx, ctx.model())

    before = job_data(RecognitionConfig(enabled=False))
    harmful, benign = before.calibration_requests[0], before.benign_calibration[0].prompt
    path = tmp_path / "recognition.jsonl"
    path.write_text(
        json.dumps({"prompt": harmful, "harmful": True}) + "\n" + json.dumps({"prompt": benign, "harmful": False})
    )
    after = job_data(RecognitionConfig(enabled=True, path=str(path)))
    assert harmful not in after.calibration_requests and benign not in [e.prompt for e in after.benign_calibration]
    scored = " ".join(e.prompt for e in after.harm_calibration)  # the yes/no questions wrap both kinds
    assert harmful not in scored and benign not in scored
    assert benign in " ".join(e.prompt for e in before.harm_calibration)  # it was asked about before


def test_non_harm_targets_keep_the_raw_requests_and_compliant_pairs_for_the_attacks(monkeypatch):
    """With data.target=detection the scored prompts wrap the requests; refusal ablation still
    refuses the raw requests and the harmful fine-tuning attack still trains on harmful answers."""
    from types import SimpleNamespace

    from harmcore.measure import attacks
    from harmcore.models.config import ModelConfig
    from harmcore.run.config import Config
    from harmcore.run.context import JobContext
    from harmcore.run.prepare import prepare_data
    from harmcore.run.session import Session

    session = Session()

    def job_data(target):
        cfg = Config(
            model=ModelConfig(name="tiny_random", builder="tiny_random", device="cpu"),
            data=DataConfig(n_calibration=4, n_eval=4, response_tokens=8, target=target),
        )
        ctx = JobContext.create(cfg, session)
        return prepare_data(ctx, ctx.model())

    harm, detection = job_data("harm"), job_data("detection")
    assert harm.harmful_pairs is harm.harm_calibration
    assert [e.prompt for e in harm.harm_calibration] == harm.calibration_requests
    assert detection.harmful_pairs == harm.harmful_pairs  # the same compliant answers, unwrapped
    assert all(e.prompt not in detection.calibration_requests for e in detection.harm_calibration)

    seen = {}
    monkeypatch.setattr(attacks, "set_difference", lambda *a: SimpleNamespace(meta={}))
    cfg = Config(model=ModelConfig(name="tiny_random", builder="tiny_random"))

    def scores(examples, method, stage, mask_key=None):
        return seen.setdefault(stage, examples)

    ctx = SimpleNamespace(cfg=cfg, scores=scores)
    own = detection.own_refusals
    attacks._ablation_mask(ctx, detection.calibration_requests, detection.benign_calibration, own)
    refused = [e.prompt for e in own]  # the model's own refusals first, then the raw requests it answered
    want = refused + [r for r in detection.calibration_requests if r not in refused]
    assert [e.prompt for e in seen["scores_refusal"]] == want and detection.calibration_requests
