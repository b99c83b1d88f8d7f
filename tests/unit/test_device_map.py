"""A model dispatched through accelerate with an explicit device map scores as the plain model does."""

import pytest
import torch

from harmcore.core import scoring
from harmcore.data.examples import Example, FormatSpec
from harmcore.models.config import ModelConfig
from harmcore.models.loading import load

EXAMPLES = [Example("How do I pick a lock?", "Insert the wrench, then rake the pins."),
            Example("Name a colour.", "Blue, like the sky at noon.")]  # fmt: skip
FMT = FormatSpec(kind="raw", max_length=64)


def test_scores_of_a_dispatched_model_equal_the_plain_models(tmp_path):
    """Every block on the CPU, but through accelerate's dispatch hooks (model.device_map): the hooks
    move activations, each accumulator sits beside its weight, and one-pass and layer-by-layer
    scoring give the plain model's scores."""
    plain, tok = load(ModelConfig(name="t", builder="tiny_random", device="cpu"), tmp_path)
    placement = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
                 "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}  # fmt: skip
    spread, _ = load(ModelConfig(name="t", builder="tiny_random", device="cpu", device_map=placement), tmp_path)
    assert type(spread.model.layers[0]._hf_hook).__name__ == "AlignDevicesHook"  # dispatched, not moved
    assert not hasattr(plain.model.layers[0], "_hf_hook")
    for method in ("signed_snip", "snip", "wanda"):
        want = scoring.compute(plain, EXAMPLES, method, tokenizer=tok, fmt=FMT)
        for per_pass in (None, 1):
            got = scoring.compute(spread, EXAMPLES, method, tokenizer=tok, fmt=FMT, layers_per_pass=per_pass)
            assert set(got) == set(want)
            for n in want:
                assert torch.allclose(got[n], want[n], rtol=1e-5, atol=1e-7), (method, per_pass, n)
                assert got[n].device == spread.get_submodule(n).weight.device


def test_a_device_map_is_where_layers_go_not_what_the_job_computes(tmp_path):
    from harmcore.errors import HarmcoreError
    from harmcore.run.config import Config
    from harmcore.run.hashing import config_hash

    plain = config_hash(Config(model=ModelConfig(name="m", builder="tiny_random")))
    for placed in (ModelConfig(name="m", builder="tiny_random", device_map={"model.layers.0": "cuda:1"}),
                   ModelConfig(name="m", builder="tiny_random", offload=True)):  # fmt: skip
        assert config_hash(Config(model=placed)) == plain
    with pytest.raises(HarmcoreError, match="model.device_map='everywhere': give module name -> device"):
        ModelConfig(name="m", builder="tiny_random", device_map="everywhere")
    with pytest.raises(HarmcoreError, match="model.device_map puts lm_head on 'gpu': use cuda:N"):
        ModelConfig(name="m", builder="tiny_random", device_map={"lm_head": "gpu"})
    with pytest.raises(HarmcoreError) as err:  # model.embed_tokens and more have no device
        load(ModelConfig(name="t", builder="tiny_random", device="cpu", device_map={"model.layers.0": "cpu"}), tmp_path)
    line = str(err.value)
    assert "\n" not in line and line.startswith("model.device_map does not place t:") and "model.embed_tokens" in line


def test_a_device_map_and_offload_typed_as_the_docs_spell_them(tmp_path):
    """`model.device_map={model.layers.0: disk, ...}` and `model.offload=true` on the command line, as
    docs/cluster.md writes them (no `+`), reach the job's model config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from harmcore.run.hydra_setup import register_schemas, to_run_config
    from harmcore.run.options import CONF_DIR

    register_schemas()
    typed = "{" + ", ".join(f"{k}: {v}" for k, v in OFFLOADED.items()) + "}"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_random", f"model.device_map={typed}", "model.offload=true"])
    GlobalHydra.instance().clear()
    model = to_run_config(cfg).model
    assert model.device_map == OFFLOADED and model.offload is True


# Both decoder blocks offloaded to disk: accelerate keeps their weights on the meta device and loads
# them for each forward, as it does for blocks mapped to "cpu" beside GPUs (the same hooks and
# weights map; only where the stored copy lives differs).
OFFLOADED = {"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "disk",
             "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}  # fmt: skip


def _prunable_mask(model):
    from harmcore.core.selection import Mask
    from harmcore.core.weights import prunable_linears

    linears = prunable_linears(model)
    names = sorted(linears)
    return Mask({n: torch.arange(i % 3, 300, 7) for i, n in enumerate(names)},
                {n: linears[n].weight.numel() for n in names}, {})  # fmt: skip


def test_offloaded_blocks_score_prune_generate_and_export_as_resident_ones(tmp_path):
    """Weights offloaded by a device map (the meta device during work): every scorer gives the plain
    model's scores, in one pass and layer by layer; the fingerprint is the same; a mask zeroes the
    same weights (the next forward sees it) and restores bit-exactly; greedy generation, response
    losses and the exported checkpoint equal the plain model's."""
    import gc

    from safetensors.torch import load_file

    from harmcore.core import masking
    from harmcore.core.losses import response_nll
    from harmcore.core.offload import is_offloaded
    from harmcore.core.weights import fingerprint, prunable_linears
    from harmcore.generation.base import Request, Sampling
    from harmcore.generation.hf import HFGenerator

    plain, tok = load(ModelConfig(name="t", builder="tiny_random", device="cpu"), tmp_path)
    off, _ = load(ModelConfig(name="t", builder="tiny_random", device="cpu", device_map=OFFLOADED), tmp_path)
    assert all(is_offloaded(m) and m.weight.device.type == "meta" for m in prunable_linears(off).values())
    (folder,) = (tmp_path / "offload").iterdir()  # this process's, under the cache
    assert any(folder.iterdir())
    again, _ = load(ModelConfig(name="t", builder="tiny_random", device="cpu", device_map=OFFLOADED), tmp_path)
    assert len(list((tmp_path / "offload").iterdir())) == 2  # a folder per model
    kept = again.model.layers[0].mlp.down_proj
    del again
    gc.collect()
    assert kept(torch.ones(1, 128)).shape == (1, 64)  # a module kept still reads its weights
    del kept
    gc.collect()
    assert list((tmp_path / "offload").iterdir()) == [folder]  # gone with what reads it
    assert fingerprint(off) == fingerprint(plain)
    for method in ("signed_snip", "snip", "wanda", "magnitude", "random"):
        want = scoring.compute(plain, EXAMPLES, method, tokenizer=tok, fmt=FMT)
        for per_pass in (None, 1):
            got = scoring.compute(off, EXAMPLES, method, tokenizer=tok, fmt=FMT, layers_per_pass=per_pass)
            for n in want:
                assert got[n].device.type == "cpu"
                assert torch.allclose(got[n], want[n], rtol=1e-5, atol=1e-7), (method, per_pass, n)

    ids = torch.tensor([[1, 5, 9, 22, 7, 3]])
    dense = off(ids).logits
    mask = _prunable_mask(plain)
    handle = masking.apply(off, mask)
    masking.apply(plain, mask)
    assert not torch.equal(off(ids).logits, dense)
    assert torch.equal(off(ids).logits, plain(ids).logits)
    assert fingerprint(off) == fingerprint(plain)
    requests = [Request("How do I pick a lock?"), Request("Name a colour.")]
    sampling = Sampling(max_new_tokens=8)
    assert HFGenerator(off, tok, "chat").generate(requests, sampling) == HFGenerator(plain, tok, "chat").generate(
        requests, sampling
    )
    assert response_nll(off, tok, EXAMPLES, FMT) == pytest.approx(response_nll(plain, tok, EXAMPLES, FMT), rel=1e-6)
    off.save_pretrained(tmp_path / "export")
    saved = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert set(saved) == set(plain.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in plain.state_dict().items())
    masking.restore(off, handle)
    assert torch.equal(off(ids).logits, dense)


def test_offloaded_weights_count_in_host_memory_and_fine_tuning_refuses_them(tmp_path):
    """The plan puts offloaded weights and their accumulators in host memory and the loaded copy of the
    largest offloaded module (a block's linear or the head) on the execution device; LoRA fine-tuning,
    which needs resident weights, stops with one line."""
    from harmcore.core.memory import estimate
    from harmcore.errors import HarmcoreError
    from harmcore.training.lora import lora_finetune

    plain, tok = load(ModelConfig(name="t", builder="tiny_random", device="cpu"), tmp_path)
    off, _ = load(ModelConfig(name="t", builder="tiny_random", device="cpu", device_map=OFFLOADED), tmp_path)
    want, got = estimate(plain, 32, 2, None, "signed_snip")["cpu"], estimate(off, 32, 2, None, "signed_snip")["cpu"]
    mlp = 64 * 128 * 4  # the largest offloaded module: an MLP projection, hidden 64 x intermediate 128, float32
    assert got["onloaded"] == mlp and "onloaded" not in want  # one module's copy at a time
    assert (got["weights"], got["accumulators"], got["activations"]) == (
        want["weights"], want["accumulators"], want["activations"])  # fmt: skip
    assert got["total"] == want["total"] + mlp
    assert estimate(off, 32, 2, None, "wanda")["cpu"]["onloaded"] == mlp
    with_head = ModelConfig(name="t", builder="tiny_random", device="cpu", device_map={**OFFLOADED, "lm_head": "disk"})
    head, _ = load(with_head, tmp_path)
    assert estimate(head, 32, 2, None, "snip")["cpu"]["onloaded"] == 262 * 64 * 4  # the head: vocabulary 262 x 64
    with pytest.raises(HarmcoreError) as err:
        lora_finetune(off, tok, EXAMPLES, FMT, r=4, epochs=1)
    assert "\n" not in str(err.value) and "offloaded blocks" in str(err.value)


def test_a_process_removes_its_offload_folder_at_exit_and_those_of_dead_processes(tmp_path):
    import json
    import subprocess
    import sys

    from harmcore.files import HOST

    dead = tmp_path / "offload" / f"{HOST}.999999999-left"  # no such process on this host
    other = tmp_path / "offload" / "elsewhere.999999999-left"  # another host's: not this one's to judge
    dead.mkdir(parents=True)
    other.mkdir()
    code = (
        "import sys; from pathlib import Path; from harmcore.models.config import ModelConfig; "
        "from harmcore.models.loading import load; "
        f"spec = ModelConfig(name='t', builder='tiny_random', device='cpu', device_map={OFFLOADED!r}); "
        "load(spec, Path(sys.argv[1])); "
        "import json; print(json.dumps(sorted(p.name for p in (Path(sys.argv[1]) / 'offload').iterdir())))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])  # while it ran
    (own,) = [n for n in seen if n != other.name]
    assert own.startswith(f"{HOST}.") and "999999999" not in own and other.name in seen
    assert list((tmp_path / "offload").iterdir()) == [other]


def test_the_vllm_engine_takes_as_many_gpus_as_the_model_is_spread_over(tmp_path):
    """generation.vllm.tensor_parallel_size=auto (the default): the GPUs the HF model spans, lowered
    until vLLM can split the heads and the MLP; a number is kept, anything else is one line."""
    from harmcore.errors import HarmcoreError
    from harmcore.generation.vllm_engine import matching_tensor_parallel, tensor_parallel_size
    from harmcore.run.config import VLLMEngineConfig

    assert tensor_parallel_size(4, 40, 8, 27648) == 4  # Qwen2.5-32B on a 4-GPU node
    assert tensor_parallel_size(3, 32, 8, 14336) == 2  # 32 heads do not split three ways
    assert tensor_parallel_size(6, 40, 8, 27648) == 4  # 5 splits 40 query heads but not 8 key/value heads
    assert tensor_parallel_size(8, 32, 4, 14336) == 8  # 4 key/value heads, each on two GPUs
    assert tensor_parallel_size(8, 64, 8, 4100) == 4  # the heads split eight ways, the MLP's 4100 rows do not
    assert tensor_parallel_size(0, 32, 8, 14336) == tensor_parallel_size(1, 32, 8, 14336) == 1
    plain, _ = load(ModelConfig(name="t", builder="tiny_random", device="cpu"), tmp_path)
    assert matching_tensor_parallel(plain) == 1  # no GPU
    assert VLLMEngineConfig().tensor_parallel_size == "auto" and VLLMEngineConfig(tensor_parallel_size=2)
    with pytest.raises(HarmcoreError, match="tensor_parallel_size=lots: use a positive integer or auto"):
        VLLMEngineConfig(tensor_parallel_size="lots")


def test_offloaded_blocks_refuse_vllm_and_offload_without_auto_is_one_line(tmp_path):
    """vLLM needs the whole model on its GPUs: a job whose model has offloaded blocks stops with one
    line when it asks for its generator (before any work); `model.offload=true` beside a fixed
    device would do nothing, so it is refused where the config is made."""
    from harmcore.errors import HarmcoreError
    from harmcore.run.config import Config
    from harmcore.run.session import LoadedModel, Session

    spec = ModelConfig(name="t", builder="tiny_random", device="cpu", device_map=OFFLOADED)
    off, tok = load(spec, tmp_path)
    cfg = Config(model=spec)
    cfg.generation.backend = "vllm"
    with Session() as session, pytest.raises(HarmcoreError) as err:
        session.generator(LoadedModel(off, tok, spec, "f"), cfg, stages=None)
    line = str(err.value)
    assert "\n" not in line and line.startswith("generation=vllm needs the whole of t on GPUs") and "hf" in line
    with pytest.raises(HarmcoreError, match=r"model.offload=true has no effect with model.device=cpu: .*device=auto"):
        ModelConfig(name="t", builder="tiny_random", device="cpu", offload=True)
    with pytest.raises(HarmcoreError, match="model.offload=true has no effect"):  # an empty map places nothing
        ModelConfig(name="t", builder="tiny_random", device="cpu", offload=True, device_map={})
    assert ModelConfig(name="t", builder="tiny_random", device="cpu", offload=True, device_map=OFFLOADED).offload


def test_offload_budgets_the_host_memory_free_before_the_model_is_read_in(tmp_path, monkeypatch):
    """model.offload's host budget is what was free before the model was read into host memory (as a
    copy, or mapped from its files), not what is left while it is there. One GPU with room for no
    module; host memory free for 3.5 models before loading and 0.5 after: 30 % of 3.5 models holds
    the whole model in host memory (30 % of 0.5 would not: an error)."""
    import psutil
    from transformers import AutoModelForCausalLM

    plain, _ = load(ModelConfig(name="t", builder="tiny_random", device="cpu"), tmp_path)
    size = sum(p.numel() * p.element_size() for p in plain.parameters())
    read_in, reads = [], []
    from_pretrained = AutoModelForCausalLM.from_pretrained

    def reading(*args, **kwargs):
        model = from_pretrained(*args, **kwargs)
        read_in.append(model)
        return model

    def virtual_memory():
        reads.append(bool(read_in))
        return type("Free", (), {"available": int((0.5 if read_in else 3.5) * size)})()

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", reading)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (1024, 1024))
    monkeypatch.setattr(psutil, "virtual_memory", virtual_memory)
    placed, _ = load(ModelConfig(name="t", builder="tiny_random", offload=True), tmp_path)
    assert reads == [False] and {p.device.type for p in placed.parameters()} == {"cpu"}


class _Recording:
    """An offloaded module's weights map that remembers (weakly) the storage of every copy it hands out."""

    def __init__(self, inner, seen):
        self.inner, self.seen = inner, seen
        self.dataset, self.prefix = inner.dataset, inner.prefix

    def __getitem__(self, key):
        from torch.multiprocessing.reductions import StorageWeakRef

        value = self.inner[key]
        self.seen.append(StorageWeakRef(value.untyped_storage()))
        return value

    def __contains__(self, key):
        return key in self.inner


def test_a_gradient_pass_keeps_no_loaded_copy_of_an_offloaded_weight_until_its_backward(tmp_path, monkeypatch):
    """Autograd saves what the backward needs, the loaded copies of offloaded weights among it: scoring
    saves them as references and loads them again in the backward, so once a batch's forward is done no
    copy it loaded is alive (and the scores are the plain model's). `requires_grad` is given back to the
    parameters accelerate swapped in."""
    import gc

    from harmcore.core.offload import is_offloaded

    plain, tok = load(ModelConfig(name="t", builder="tiny_random", device="cpu"), tmp_path)
    off, _ = load(ModelConfig(name="t", builder="tiny_random", device="cpu", device_map=OFFLOADED), tmp_path)
    seen, alive_after_forward = [], []
    for m in off.modules():
        if getattr(getattr(m, "_hf_hook", None), "offload", False) and any(True for _ in m.parameters(False)):
            m._hf_hook.weights_map = _Recording(m._hf_hook.weights_map, seen)
    assert sum(is_offloaded(m) for m in off.modules() if hasattr(m, "weight")) >= 14  # 7 linears per block

    def forward_then_count(model, *args, **kwargs):
        seen.clear()
        losses = original(model, *args, **kwargs)
        gc.collect()
        if model is off:
            alive_after_forward.append((sum(not ref.expired() for ref in seen), len(seen)))
        return losses

    original = scoring.response_losses
    monkeypatch.setattr(scoring, "response_losses", forward_then_count)
    flags = {n: p.requires_grad for n, p in off.named_parameters()}
    for method in ("signed_snip", "snip"):
        want = scoring.compute(plain, EXAMPLES, method, tokenizer=tok, fmt=FMT, batch_size=1)
        got = scoring.compute(off, EXAMPLES, method, tokenizer=tok, fmt=FMT, batch_size=1)
        assert all(torch.allclose(got[n], want[n], rtol=1e-5, atol=1e-7) for n in want), method
    assert len(alive_after_forward) == 4 and all(loaded >= 16 for _, loaded in alive_after_forward)
    assert [alive for alive, _ in alive_after_forward] == [0, 0, 0, 0]
    assert flags == {n: p.requires_grad for n, p in off.named_parameters()} and all(flags.values())


def test_tied_embeddings_and_stored_views_offloaded_score_as_the_plain_model(tmp_path):
    """A head tied to the embeddings with either of the two offloaded (accelerate gives the offloaded
    one its own parameter at the first forward), and stored weights that are views into a larger
    buffer: gradient scores equal the plain model's and requires_grad is given back to every name."""
    from harmcore.core.offload import _weights_map
    from harmcore.models.builders import save_atomic, tiny_random_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tied = tiny_random_model(vocab_size=len(tok))
    tied.config.tie_word_embeddings = True
    tied.lm_head.weight = tied.model.embed_tokens.weight
    save_atomic(tied, tok, tmp_path / "tied")
    plain, tok = load(ModelConfig(name="t", path=str(tmp_path / "tied"), device="cpu"), tmp_path)
    assert plain.lm_head.weight is plain.model.embed_tokens.weight
    want = {m: scoring.compute(plain, EXAMPLES, m, tokenizer=tok, fmt=FMT) for m in ("signed_snip", "snip")}
    for away in ("model.embed_tokens", "lm_head"):
        spec = ModelConfig(name="t", path=str(tmp_path / "tied"), device="cpu", device_map={**OFFLOADED, away: "disk"})
        off, _ = load(spec, tmp_path)
        for method in want:
            got = scoring.compute(off, EXAMPLES, method, tokenizer=tok, fmt=FMT)
            assert all(torch.allclose(got[n], want[method][n], rtol=1e-5, atol=1e-7) for n in want[method]), away
        assert all(p.requires_grad for p in off.parameters())

    plain, tok = load(ModelConfig(name="t", builder="tiny_random", device="cpu"), tmp_path)
    off, _ = load(ModelConfig(name="t", builder="tiny_random", device="cpu", device_map=OFFLOADED), tmp_path)
    for m in off.modules():  # each stored weight a view 7 elements into a larger buffer
        stored = _weights_map(m)
        if stored is not None and getattr(m, "weight", None) is not None and m.weight.device.type == "meta":
            value = stored["weight"]
            buffer = torch.cat([torch.full((7,), 1e3), value.flatten()])
            stored.dataset.state_dict[stored.prefix + "weight"] = buffer[7:].view(value.shape)
    want = scoring.compute(plain, EXAMPLES, "snip", tokenizer=tok, fmt=FMT)
    got = scoring.compute(off, EXAMPLES, "snip", tokenizer=tok, fmt=FMT)
    assert all(torch.allclose(got[n], want[n], rtol=1e-5, atol=1e-7) for n in want)
