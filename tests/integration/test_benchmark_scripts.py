"""The benchmark scripts that are meant for a GPU run here on tiny shapes, so a short GPU session
spends its time measuring, not debugging. Speed is not asserted; the results must be sane."""

import csv
import json
import subprocess
import sys

from tests.integration.helpers import ROOT


def test_gpu_benchmark_runs_on_a_tiny_shape(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--shape", "tiny", "--device", "cpu", "--dtype", "float32",
           "--examples", "4", "--seq", "96", "--batch", "2", "--chunk", "2", "--reference-examples", "2",
           "--matmul-n", "256", "--offload-blocks", "2", "--skip-generation", "--json", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["reference_max_rel_diff"] < 1e-4  # the reference loop and the one pass agree
    for mode in ("bare_fwd_bwd", "signed_snip", "snip_abs", "signed_snip_2_layers_per_pass", "reference_layerwise"):
        m = r[mode]
        assert m["s"] > 0 and m["model_tflops"] > 0 and 0 < m["fraction_of_matmul"]
        assert abs(m["tok_s"] * m["s"] - (2 if mode == "reference_layerwise" else 4) * 96) < 1e-6 * m["tok_s"] + 1
    assert r["abs_vs_signed"] == r["snip_abs"]["s"] / r["signed_snip"]["s"]
    assert r["signed_snip_2_blocks_offloaded"]["s"] > 0 and r["offloaded_max_rel_diff"] < 1e-5  # on disk, here
    rows = r["selection"]
    assert [row["q"] for row in rows] == [1e-5, 1e-4, 1e-3, 1e-2]
    pruned = [row["global_pruned"] for row in rows]
    assert pruned == sorted(pruned) and pruned[-1] > 0  # a larger q prunes more

    # The capacity table predicts scoring time from this run's measured rates.
    table = tmp_path / "capacity.json"
    cmd = [sys.executable, "-m", "benchmarks.capacity", "--throughput", str(out), "--json", str(table)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cap = json.loads(table.read_text())
    h, inter, kv, layers, vocab = 4096, 14336, 8 * 128, 32, 128256  # Llama-3.1-8B, written out
    linear = layers * (2 * h * h + 2 * h * kv + 3 * h * inter) + vocab * h
    t = cap["llama3.1-8b_time"]
    assert t["linear_params"] == linear
    flops = 6 * linear * 412 * 512
    assert t["pflop_per_set"] == round(flops / 1e15, 2)
    assert t["harm_minutes"] == round(flops / (r["signed_snip"]["model_tflops"] * 1e12) / 60, 2)
    assert t["preserve_minutes"] == round(flops / (r["snip_abs"]["model_tflops"] * 1e12) / 60, 2)
    row = cap["llama3.1-8b_b1_all"]  # a model on the meta device is one device's plan, nothing offloaded
    assert set(row) == {"weights", "accumulators", "activations", "total"}
    assert row["weights"] == round((linear + vocab * h + (2 * layers + 1) * h) * 2 / 2**30, 1)  # bf16, + embeddings


def test_sweep_overhead_benchmark_accounts_for_the_wall_time(tmp_path):
    out = tmp_path / "overhead.json"
    cmd = [sys.executable, "-m", "benchmarks.sweep_overhead", "--model", "tiny_random", "--points", "3",
           "--examples", "4", "--new-tokens", "8", "--json", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["points"] == 3 and r["grid"] == [0.0, 1e-6, 1e-5]
    parts = r["scoring_s"] + r["generation_s"] + r["nll_s"] + r["load_model_s"]
    assert r["scoring_s"] > 0 and r["generation_s"] > 0 and r["peak_rss_gb"] > 0.1
    assert abs(r["overhead_s"] - (r["wall_s"] - parts)) < 0.01 and 0 < r["overhead_fraction"] < 1


def test_gpu_dry_run_runs_the_pair_end_to_end_on_a_tiny_shape(tmp_path):
    out = tmp_path / "dry.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_dry_run", "--shape", "tiny", "--device", "cpu", "--dtype", "float32",
           "--generation", "hf", "--points", "3", "--calibration", "4", "--eval", "4", "--new-tokens", "8",
           "--workdir", str(tmp_path / "work"), "--json", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    for member in ("base", "instruct"):
        m = r["members"][member]
        assert m["scoring"] > 0 and m["generation"] > 0 and m["judging"] > 0 and m["utility"] > 0
        assert (
            abs(m["unaccounted"] + sum(v for k, v in m.items() if k not in ("wall_s", "unaccounted")) - m["wall_s"])
            < 1e-6
        )
    with open(r["pair_report"]) as f:  # the pair report holds both members
        models = {row["model"] for row in csv.DictReader(f)}
    assert models == {"llama3_base", "llama3_instruct"}
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "work" / "out").rglob("metrics.json")]
    assert len(metrics) == 6 and all("strongreject" in json.dumps(m) for m in metrics)


def test_random_model_never_emits_ids_its_tokenizer_lacks():
    import torch

    from benchmarks.common import random_model

    model = random_model("tiny", "cpu", torch.float32, seed=3, usable_vocab=40)
    assert model.lm_head.weight.shape[0] == 512  # the cost is the full vocabulary's
    ids = torch.randint(3, 40, (8, 16), generator=torch.Generator().manual_seed(0))
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    assert int(out[:, 16:].max()) < 40
