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


def test_a_device_map_is_where_layers_go_not_what_the_job_computes():
    from harmcore.run.config import Config
    from harmcore.run.hashing import config_hash

    placed = Config(model=ModelConfig(name="m", builder="tiny_random", device_map={"model.layers.0": "cuda:1"}))
    assert config_hash(placed) == config_hash(Config(model=ModelConfig(name="m", builder="tiny_random")))
    from harmcore.errors import HarmcoreError

    with pytest.raises(HarmcoreError, match="model.device_map='everywhere': give module name -> device"):
        ModelConfig(name="m", builder="tiny_random", device_map="everywhere")
