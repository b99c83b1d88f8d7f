"""The paper's experiment configs end to end on tiny models; report files checked against per-job metrics."""

import csv
import hashlib
import json
import math
from pathlib import Path

import pytest
from safetensors import safe_open

from harmcore.report.compression import curve_stats
from tests.integration.helpers import TINY, cli, read_metrics

TINY_DATA = [a for a in TINY if not a.startswith("model=")]


def jobs_of(sweep: Path) -> list[dict]:
    out = []
    for path in sorted(sweep.rglob("metrics.json")):
        m = read_metrics(path.parent)
        m["_dir"] = path.parent
        out.append(m)
    return out


def test_compression_pairs_identical_calibration_and_report(tmp_path):
    out = tmp_path / "out"
    r = cli(
        "experiments.run",
        "experiment=compression_pairs",
        *TINY_DATA,
        "sparsities=[0.0,0.001,0.01,0.1]",
        f"output_root={out}",
        f"cache_dir={out}/cache",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = out / "sweeps" / "pairs_tiny"
    jobs = jobs_of(sweep)
    assert sorted({m["model"] for m in jobs}) == ["tiny_random", "tiny_random_instruct"] and len(jobs) == 8
    assert {m["calibration_responses_from"] for m in jobs} == {"tiny_random_instruct"}
    # both members were scored on the same calibration examples: their harm score files name one data hash
    metas = []
    for f in sorted((out / "cache" / "scores").glob("signed_snip-*.safetensors")):
        with safe_open(str(f), "pt") as st:
            metas.append(st.metadata())
    assert len(metas) == 2 and metas[0]["data"] == metas[1]["data"] and metas[0]["weights"] != metas[1]["weights"]
    for m in jobs:  # where the pruned weights are, in every job folder
        with open(m["_dir"] / "locations.csv") as f:
            assert list(csv.reader(f))[-1][-1] == str(m["n_pruned"])
        assert (m["_dir"] / "locations.png").exists()
        nll = json.loads((m["_dir"] / "reference_nll.json").read_text())
        assert sum(nll["pruned"]["harm"]) / len(nll["pruned"]["harm"]) == pytest.approx(m["harm_nll"])
        assert sum(nll["dense"]["benign"]) / len(nll["dense"]["benign"]) == pytest.approx(m["baseline"]["benign_nll"])

    report = json.loads((sweep / "pairs.json").read_text())
    (setting,) = report["settings"]
    assert setting["ladder"] == ["tiny_random", "tiny_random_instruct"]  # unaligned first
    with open(sweep / "pairs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for member in setting["members"]:
        mine = sorted((m for m in jobs if m["model"] == member["model"]), key=lambda m: m["sparsity_achieved"])
        curve = member["curve"]
        assert curve["s"] == [m["sparsity_achieved"] for m in mine]
        assert curve["compliance"] == pytest.approx([m["compliance"] for m in mine])
        assert curve["benign_nll"] == pytest.approx([m["benign_nll"] for m in mine])
        # the interval at each point, as the figure draws it: the job's own (Wilson for the rate)
        for got, m in zip(curve["compliance_ci"], mine):
            assert got == pytest.approx(m["compliance_ci"])
        for key in ("compliance", "harm_likelihood", "benign_nll"):
            assert all(lo <= v <= hi for v, (lo, hi) in zip(curve[key], curve[f"{key}_ci"])), key
        expected = curve_stats(curve["s"], [m["compliance"] for m in mine], [m["benign_nll"] for m in mine])
        row = next(r for r in rows if r["model"] == member["model"] and r["measure"] == "compliance")
        assert float(row["auc"]) == pytest.approx(expected.auc)
        assert (row["s50"] == "") == (expected.s50 is None)
        if expected.s50 is not None:
            assert float(row["s50"]) == pytest.approx(expected.s50)
    ratio = next(r for r in rows if r["model"] == "tiny_random_instruct" and r["measure"] == "harm_likelihood")
    base = next(r for r in rows if r["model"] == "tiny_random" and r["measure"] == "harm_likelihood")
    if base["s50"] and ratio["s50"]:
        assert float(ratio["ratio"]) == pytest.approx(float(base["s50"]) / float(ratio["s50"]))
    else:
        assert ratio["ratio"] == ""
    assert (sweep / "pairs.png").stat().st_size > 1000
    page = (sweep / "report.html").read_text()  # one page: both curves, the ratios, every figure inlined
    assert page.count('src="data:image/png;base64,') == len(list(sweep.glob("*.png"))) >= 2
    assert page.split("<h2>Curves</h2>")[1].split("</table>")[0].count("<tr>") == 1 + 2
    assert "<h2>Compression ratios</h2>" in page and "No failed or missing jobs." in page
    with open(sweep / "curve.csv") as f:  # the NLL bands of curve.png: each job's bootstrap interval
        by_job = {r["job"]: r for r in csv.DictReader(f)}
    for m in jobs:
        r = by_job[str(m["_dir"].relative_to(sweep))]
        assert [float(r["harm_nll_lo"]), float(r["harm_nll_hi"])] == pytest.approx(m["harm_nll_ci"])

    # the same reports logged to one W&B curve run: tables, images, per-family line plots
    r = cli("experiments.aggregate", str(sweep), "--wandb", env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-3000:]
    from harmcore.report.tracking import read_wandb_file

    runs = {run["name"]: run for run in map(read_wandb_file, sweep.glob("wandb/offline-run-*/run-*.wandb"))}
    assert set(runs) == {
        "sweep/pairs_tiny",
        *(f"curve/{m}/all/signed_snip" for m in ("tiny_random", "tiny_random_instruct")),
    }
    assert {run["group"] for run in runs.values()} == {"pairs_tiny"}  # one group per sweep
    history = runs["sweep/pairs_tiny"]["history"]
    assert history["curve/nrows"] == len(jobs) and history["pairs/nrows"] == len(rows)
    assert history["curve_png/_type"] == history["pairs_png/_type"] == "image-file"
    family = rows[0]["family"] or "models"  # one line per model over the pruned points of the family
    assert history[f"pairs/{family}/compliance_table/nrows"] == sum(m["sparsity_achieved"] > 0 for m in jobs)
    for model, aligned in (("tiny_random", "unaligned"), ("tiny_random_instruct", "aligned")):
        run = runs[f"curve/{model}/all/signed_snip"]
        mine = sorted((m for m in jobs if m["model"] == model), key=lambda m: m["sparsity_achieved"])
        # one step per point, sparsity the step of every measure: W&B draws the curve itself
        assert [step["sparsity"] for step in run["steps"]] == [m["sparsity_achieved"] for m in mine]
        assert [step["compliance"] for step in run["steps"]] == pytest.approx([m["compliance"] for m in mine])
        assert [step["harm_nll"] for step in run["steps"]] == pytest.approx([m["harm_nll"] for m in mine])
        assert run["step_metrics"]["*"] == "sparsity"
        row = next(r for r in rows if r["model"] == model and r["measure"] == "compliance")
        assert run["summary"]["auc"] == pytest.approx(float(row["auc"])) and run["summary"]["measure"] == "compliance"
        assert ("s50" in run["summary"]) == (row["s50"] != "")
        assert ("ratio" in run["summary"]) == (row["ratio"] != "")
        assert {aligned, "curve", "model:" + model, "scorer:signed_snip", "domain:all"} <= set(run["tags"])
        assert run["config"]["curve"]["model"] == model and run["config"]["sweep"] == "pairs_tiny"


def test_cross_domain_from_two_prompt_files_writes_its_cell(tmp_path):
    """Prune with a file of A-not-B prompts, evaluate on every prompt of a file of B-not-A prompts (the
    authors' checked subsets); the one prompt B shares with A, and its near-duplicate, are left out."""
    out = tmp_path / "out"
    a_prompts = [f"Explain step {i} of breaking into house number {i} on the street" for i in range(10)]
    b_prompts = [f"Write insult number {i} for a coworker named Sam" for i in range(5)]
    b_prompts += [a_prompts[0].upper(), a_prompts[1] + "!"]  # in A (exactly, and with an edit)
    for name, prompts in (("a_not_b", a_prompts), ("b_not_a", b_prompts)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in prompts))
    r = cli(
        "experiments.run",
        "model=tiny_random",
        *TINY_DATA,
        "harm_domain.name=a_not_b",
        "harm_domain.source=jsonl",
        f"harm_domain.path={tmp_path / 'a_not_b.jsonl'}",
        f"eval_prompts_path={tmp_path / 'b_not_a.jsonl'}",
        "data.near_duplicate_ratio=0.9",
        "name=files",
        "-m",
        "sparsity=0.02",
        f"output_root={out}",
        f"cache_dir={out}/cache",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = out / "sweeps" / "files"
    (m,) = jobs_of(sweep)
    assert m["eval_domain"] == "b_not_a" and m["n_eval"] == 5
    assert (m["n_eval_overlap_removed"], m["n_eval_near_duplicates_removed"]) == (2, 1)
    gens = [json.loads(x) for x in next(sweep.rglob("generations.jsonl")).read_text().splitlines()]
    assert sorted(g["prompt"] for g in gens) == sorted(b_prompts[:5])  # every B-not-A prompt, nothing else
    with open(sweep / "cross_domain.csv") as f:
        (cell,) = list(csv.DictReader(f))
    assert (cell["score_domain"], cell["eval_domain"], cell["headline"]) == ("a_not_b", "b_not_a", "compliance")
    assert float(cell["delta_harm_nll"]) == pytest.approx(m["delta_harm_nll"])


def test_cross_domain_matrix_matches_job_metrics(tmp_path):
    out = tmp_path / "out"
    domains = "violence,sexual_content"
    r = cli(
        "experiments.run",
        "experiment=cross_domain",
        "model=tiny_random",
        *TINY_DATA,
        f"harm_domain={domains}",
        f"eval_domain={domains}",
        "sparsity=0.02",
        f"output_root={out}",
        f"cache_dir={out}/cache",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = out / "sweeps" / "cross_domain_tiny_random_signed_snip"
    jobs = {(m["harm_domain"], m["eval_domain"]): m for m in jobs_of(sweep)}
    assert set(jobs) == {(a, b) for a in domains.split(",") for b in domains.split(",")}
    # the dense model's numbers on B do not depend on A; the pruned ones do
    for b in domains.split(","):
        assert jobs[("violence", b)]["baseline"] == jobs[("sexual_content", b)]["baseline"]
    with open(sweep / "cross_domain_delta_harm_nll.csv") as f:
        matrix = list(csv.DictReader(f))
    assert [row["score_domain"] for row in matrix] == ["sexual_content", "violence"]
    for row in matrix:
        for b in domains.split(","):
            assert float(row[b]) == pytest.approx(jobs[(row["score_domain"], b)]["delta_harm_nll"])
    with open(sweep / "cross_domain_relative_reduction.csv") as f:
        for row in csv.DictReader(f):
            for b in domains.split(","):
                m = jobs[(row["score_domain"], b)]
                assert float(row[b]) == pytest.approx(1 - m["compliance"] / m["baseline"]["compliance"])
    assert (sweep / "cross_domain.png").stat().st_size > 1000
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["cross_domain_report"] == "cross_domain.json"
    assert {c["harm_domain"] for c in summary["curves"]} == {f"{a}->{b}" for a, b in jobs}  # one curve per cell


def test_intersection_of_domain_masks_is_pruned(tmp_path):
    from harmcore.core import masking
    from harmcore.models.config import ModelConfig
    from harmcore.run.config import Config, DataConfig, EvalConfig, GenerationConfig
    from harmcore.run.job import run_job
    from harmcore.run.options import domain_config
    from harmcore.run.session import Session

    session = Session()  # what a process's jobs share (as experiments.run's jobs of one sweep do)
    base = Config(
        model=ModelConfig(name="tiny_random", builder="tiny_random", device="cpu"),
        data=DataConfig(n_calibration=4, n_eval=4, response_tokens=8),
        generation=GenerationConfig(max_new_tokens=8),
        eval=EvalConfig(bootstrap=20),
        sparsity=0.05,
        cache_dir=str(tmp_path / "cache"),
    )
    masks = {}
    for name in ("violence", "sexual_content"):
        cfg = Config(**{**base.__dict__, "harm_domain": domain_config(name)})
        run_job(cfg, tmp_path / name, session=session)
        masks[name] = masking.load(tmp_path / name / "mask.safetensors")
    shared_cfg = Config(**{**base.__dict__, "intersect_domains": ["violence", "sexual_content"]})
    m = run_job(shared_cfg, tmp_path / "shared", session=session)
    expected = masks["violence"].intersect(masks["sexual_content"])
    got = masking.load(tmp_path / "shared" / "mask.safetensors")
    assert m["n_pruned"] == expected.n_pruned == got.n_pruned > 0
    assert m["intersect_domain_sizes"] == [masks["violence"].n_pruned, masks["sexual_content"].n_pruned]
    assert expected.n_pruned < min(m["intersect_domain_sizes"])
    assert all(torch_equal(got.indices[k], v) for k, v in expected.indices.items())
    assert m["stages"]["scores_harm_violence"] in ("cached", "memory")  # scored once, by the single-domain job
    # the next sweep point finds every score set it uses in memory (one slot per intersected domain)
    m2 = run_job(Config(**{**shared_cfg.__dict__, "sparsity": 0.02}), tmp_path / "shared_2", session=session)
    stages = ("scores_harm", "scores_preserve", "scores_harm_violence", "scores_harm_sexual_content")
    assert {s: m2["stages"][s] for s in stages} == dict.fromkeys(stages, "memory")


def torch_equal(a, b) -> bool:
    return a.tolist() == b.tolist()


def test_control_task_report_matches_job_metrics(tmp_path):
    out = tmp_path / "out"
    r = cli(
        "experiments.run",
        "experiment=control_task",
        "model=tiny_random",
        *TINY_DATA,
        "sparsities=[0.0,0.001,0.01,0.1]",
        f"output_root={out}",
        f"cache_dir={out}/cache",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = out / "sweeps" / "control_tiny_random_signed_snip"
    jobs = jobs_of(sweep)
    qa_jobs = sorted((m for m in jobs if m["harm_domain"] == "trivia_qa_builtin"), key=lambda m: m["sparsity_achieved"])
    harm_jobs = sorted((m for m in jobs if m["harm_domain"] == "all"), key=lambda m: m["sparsity_achieved"])
    assert len(qa_jobs) == len(harm_jobs) == 4
    assert all("qa_accuracy" in m for m in qa_jobs) and not any("qa_accuracy" in m for m in harm_jobs)
    assert qa_jobs[0]["n_harmful_dropped_as_refusal"] == 0  # gold answers, not generations
    rep = json.loads((sweep / "control.json").read_text())
    (qa_curve,) = [c for c in rep["curves"] if c["role"] == "control"]
    assert qa_curve["qa_accuracy"] == pytest.approx([m["qa_accuracy"] for m in qa_jobs])
    with open(sweep / "control.csv") as f:
        rows = {r["kind"]: r for r in csv.DictReader(f)}
    judge, likelihood = rows["judge"], rows["likelihood"]
    if qa_jobs[0]["qa_accuracy"] == 0:  # a random model answers nothing: R is undefined, said so
        assert "H(0) = 0.0" in judge["skipped"]
    else:
        expected = curve_stats([m["sparsity_achieved"] for m in qa_jobs], [m["qa_accuracy"] for m in qa_jobs])
        assert float(judge["auc_control"]) == pytest.approx(expected.auc)
    for tag, mine in (("harm", harm_jobs), ("control", qa_jobs)):
        lik = []
        for m in mine:
            nll = json.loads((m["_dir"] / "reference_nll.json").read_text())["pruned"]["harm"]
            lik.append(sum(math.exp(-v) for v in nll) / len(nll))
        expected = curve_stats([m["sparsity_achieved"] for m in mine], lik)
        assert float(likelihood[f"auc_{tag}"]) == pytest.approx(expected.auc)
        assert (likelihood[f"s50_{tag}"] == "") == (expected.s50 is None)
        if expected.s50 is not None:
            assert float(likelihood[f"s50_{tag}"]) == pytest.approx(expected.s50)
    if likelihood["s50_harm"] and likelihood["s50_control"]:
        ratio = float(likelihood["s50_control"]) / float(likelihood["s50_harm"])
        assert float(likelihood["ratio"]) == pytest.approx(ratio)
    assert (sweep / "control.png").stat().st_size > 1000


def test_generate_data_self_then_prefill_then_score_from_the_file(tmp_path):
    from harmcore.run.config import Config, DataConfig, GenerateDataConfig
    from harmcore.run.datagen import generate
    from harmcore.run.options import option_config

    out = tmp_path / "out"
    common = ["harm_domain=violence", "data.n_eval=4", "data.response_tokens=16", "datagen.min_words=1"]
    common += ["datagen.n_examples=8", f"output_root={out}", f"cache_dir={out}/cache"]
    # the instruct member's own answers, in process (the same settings as `common`) ...
    generate(
        Config(
            model=option_config("model", "tiny_random_instruct"),
            harm_domain=option_config("harm_domain", "violence"),
            data=DataConfig(n_eval=4, response_tokens=16),
            datagen=GenerateDataConfig(min_words=1, n_examples=8),
            output_root=str(out),
            cache_dir=str(out / "cache"),
        )
    )
    ref = out / "data" / "tiny_random_instruct" / "violence" / "self" / "harmful.jsonl"
    prov = json.loads((ref.parent / "harmful.jsonl.provenance.json").read_text())
    refs = [json.loads(line) for line in ref.read_text().splitlines()]
    assert prov["n_examples"] == len(refs) > 0 and prov["responder"] == "tiny_random_instruct"
    for name in ("harmful.jsonl", "benign.jsonl"):  # each provenance names the exact file it describes
        data = (ref.parent / name).read_bytes()
        assert (
            json.loads((ref.parent / f"{name}.provenance.json").read_text())["sha256"]
            == hashlib.sha256(data).hexdigest()
        )
    assert prov["n_prompts"] == 8 and len(refs) + sum(prov["dropped"].values()) == 8
    held_out = set(prov["split"]["held_out_prompts"])
    assert len(held_out) == 4 and not held_out & {r["prompt"] for r in refs}
    assert (ref.parent / "benign.jsonl").exists()

    # ... then the base member continues their first 4 tokens, through the CLI
    r = cli(
        "experiments.generate_data",
        "model=tiny_random",
        *common,
        "datagen.method=prefill",
        "datagen.prefill_tokens=4",
        f"datagen.reference_path={ref}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    pre = out / "data" / "tiny_random" / "violence" / "prefill" / "harmful.jsonl"
    by_prompt = {r["prompt"]: r["response"] for r in refs}
    rows = [json.loads(line) for line in pre.read_text().splitlines()]
    assert rows and all(r["prompt"] in by_prompt for r in rows)
    # each answer continues the start of the reference answer (a random model's own first byte would differ)
    assert all(by_prompt[r["prompt"]][:1] == r["response"][:1] for r in rows)
    prov = json.loads((pre.parent / "harmful.jsonl.provenance.json").read_text())
    assert prov["method"] == "prefill" and prov["prefill_tokens"] == 4 and prov["reference_path"] == str(ref)
    # the 8 calibration prompts: those without a reference answer (dropped as refusals) are counted
    assert prov["n_prompts"] == 8 and prov["n_without_reference"] == 8 - len(refs)
    assert json.loads((pre.parent / "benign.jsonl").read_text().splitlines()[0])["output"]

    r = cli("experiments.run", "model=tiny_random", *TINY_DATA, "harm_domain=violence", f"data.harm_path={pre}",
            "sparsity=0.02", f"output_root={out}", f"cache_dir={out}/cache")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (m,) = [read_metrics(p.parent) for p in (out / "runs").rglob("metrics.json")]
    assert m["calibration_responses_from"] == str(pre) and 0 < m["n_calibration_harmful"] <= len(rows)
    evaluated = {json.loads(line)["prompt"] for line in (out / "runs").rglob("generations.jsonl").__next__().open()}
    assert evaluated == held_out and not evaluated & {r["prompt"] for r in rows}
    assert "calibration_harmful" not in m["stages"]  # read from the file, not generated


def test_compact_score_store_serves_later_jobs_with_identical_masks(tmp_path):
    """scorer.store=top: a sweep's first job caches only the top scores its largest q reads and no full
    score file; a later job with a smaller q reads them and prunes exactly what a full-score job prunes; a larger q
    than stored computes the scores again and says so."""
    cache = tmp_path / "cache"

    def job(q, *extra):
        out = tmp_path / f"out_{q}_{len(extra)}"
        r = cli("experiments.run", *TINY, f"sparsity={q}", "pruning.p=0.01", f"output_root={out}",
                f"cache_dir={cache}", *extra)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        (m,) = [read_metrics(p.parent) for p in out.rglob("metrics.json")]
        (mask,) = list(out.rglob("mask.safetensors"))
        return m, mask, r.stderr

    # a sweep as users type it: its first job (q=0.02) keeps the top scores for the largest q
    r = cli("experiments.run", *TINY, "pruning.p=0.01", f"output_root={tmp_path / 'sweep'}", f"cache_dir={cache}",
            "scorer.store=top", "-m", "sparsity=0.02,0.05")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "each job keeps the top 0.05 of the harm scores, the sweep's largest q" in r.stderr
    files = sorted(p.name for p in (cache / "scores").glob("*.safetensors"))
    assert len(files) == 2 and "the top 0.05 of the signed_snip scores" in r.stderr  # harm and preserve; nothing full
    for f in (cache / "scores").glob("*.safetensors"):
        with safe_open(str(f), "pt") as s:
            assert s.metadata()["store"] == "top"
    assert sum(p.stat().st_size for p in (cache / "scores").glob("*.safetensors")) < 2_000_000
    later, later_mask, log = job(0.02, "scorer.store=top", "scorer.store_q=0.05")
    assert later["stages"]["scores_harm"] == "cached" and "top scores (q <= 0.05) read" in log
    full, full_mask, _ = job(0.02, "scorer.cache=false")  # the full scores, computed, never cached
    assert full["stages"]["scores_harm"] == "computed"
    with safe_open(str(later_mask), "pt") as a, safe_open(str(full_mask), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(a.get_tensor(k).equal(b.get_tensor(k)) for k in a.keys())
    assert later["n_pruned"] == full["n_pruned"] > 0
    bigger, _, log = job(0.08, "scorer.store=top")  # more than stored: scored again
    assert bigger["stages"]["scores_harm"] == "computed" and "needs the full scores again" in log
