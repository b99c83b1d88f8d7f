"""Settings the paper's protocol needs: calibration text without BOS, the model's own decoding, seeded."""

from transformers import GenerationConfig

from harmcore.data.examples import Example, tokenize
from harmcore.generation.base import Request, Sampling, model_decoding, sampling_for
from harmcore.generation.hf import HFGenerator
from harmcore.run.config import Config, DataConfig
from harmcore.run.config import GenerationConfig as GenerationGroup
from harmcore.run.context import format_of


def test_add_bos_false_keeps_the_bos_out_of_raw_calibration_text(tiny_tok):
    from tokenizers import processors

    tiny_tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    ex = Example("How?", "Like this.")
    default = tokenize(tiny_tok, [ex], format_of(Config()))[0]
    paper = tokenize(tiny_tok, [ex], format_of(Config(data=DataConfig(add_bos=False))))[0]
    assert default.prompt_ids[0] == 1 and paper.prompt_ids == default.prompt_ids[1:]  # tokenizer(text) adds it
    assert 1 not in paper.prompt_ids and paper.response_ids == default.response_ids


def test_model_decoding_follows_the_models_generation_config(tiny_model, tiny_tok):
    tiny_model.generation_config = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9)
    s = model_decoding(tiny_model, 256, seed=3)
    assert s == Sampling(256, 0.6, 0.9, 3, 50)  # transformers' default top_k where the config sets none
    assert sampling_for(GenerationGroup(decoding="model", max_new_tokens=256), tiny_model, 3) == s
    assert sampling_for(GenerationGroup(max_new_tokens=64), tiny_model, 3) == Sampling(64, 0.0, 1.0, 3)
    tiny_model.generation_config = GenerationConfig(do_sample=False)
    assert model_decoding(tiny_model, 256, seed=3).temperature == 0.0


def test_sampled_decoding_is_reproducible_with_its_seed(tiny_model, tiny_tok):
    gen = HFGenerator(tiny_model, tiny_tok, "chat")
    requests = [Request("Tell me a story."), Request("Name a colour.")]
    a = gen.generate(requests, Sampling(16, 1.0, 0.95, seed=1, top_k=50))
    assert gen.generate(requests, Sampling(16, 1.0, 0.95, seed=1, top_k=50)) == a
    others = [gen.generate(requests, Sampling(16, 1.0, 0.95, seed=s, top_k=50)) for s in (2, 3, 4)]
    assert any(o != a for o in others)  # the seed decides


def test_cache_keys_of_older_decodings_stay_the_same():
    assert "top_k" not in Sampling(64).key() and Sampling(64, top_k=50).key()["top_k"] == 50
