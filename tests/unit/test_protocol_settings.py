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


def test_render_gives_base_models_the_authors_text():
    from harmcore.generation.base import render
    from harmcore.models.config import ModelConfig

    assert render(None, "How?", "newline", "Step 1") == "How?\nStep 1"
    assert render(None, "How?", "qa", "Step 1") == "Q: How?\nA:Step 1"
    cfg = Config(
        model=ModelConfig(name="b", builder="tiny_random", prompt_format="qa"),
        generation=GenerationGroup(base_prompt="newline"),
    )
    assert cfg.model.prompt_format == "newline"  # generation.base_prompt=newline turns qa models into newline ones
    assert Config(model=ModelConfig(name="b", builder="tiny_random", prompt_format="qa")).model.prompt_format == "qa"


def test_own_answers_of_a_base_member_continue_the_prefixes_of_the_prefill_file(tmp_path):
    """data.pair_text=own: the job's model writes its calibration answers even with responses_from set;
    a model without a chat template continues data.prefill_tokens tokens of the file's answer, reading
    "{prompt}\\n{prefix}", and is scored with the prefix ending the prompt (as the authors' files hold it)."""
    import json

    from harmcore.measure.attacks import prefix_of
    from harmcore.models.config import ModelConfig
    from harmcore.run.context import JobContext
    from harmcore.run.prepare import prepare_data
    from harmcore.run.session import Session

    session = Session()
    instruct = ModelConfig(name="tiny_random_instruct", builder="tiny_random_seed1", device="cpu")

    def job_data(**data):
        cfg = Config(
            model=ModelConfig(name="tiny_random", builder="tiny_random", device="cpu", prompt_format="qa"),
            data=DataConfig(
                n_calibration=4, n_eval=4, response_tokens=6, drop_refusals=False, responses_from=instruct, **data
            ),
            generation=GenerationGroup(base_prompt="newline"),
        )
        ctx = JobContext.create(cfg, session)
        return ctx, prepare_data(ctx, ctx.model())

    _, shared = job_data()
    assert shared.responses_from == "tiny_random_instruct"  # harmcore's pairs: the counterpart's text
    ctx, own = job_data(pair_text="own")
    assert own.responses_from == "tiny_random"
    requests = own.calibration_requests
    answers = {r: f"Sure, here is a detailed plan number {i} that you asked for" for i, r in enumerate(requests[:3])}
    path = tmp_path / "anti.jsonl"
    path.write_text("".join(json.dumps({"prompt": p.upper(), "response": a}) + "\n" for p, a in answers.items()))
    ctx, prefilled = job_data(pair_text="own", prefill_path=str(path))
    lm = ctx.model()
    assert prefilled.calibration_requests == requests[:3]  # the prompt the file does not answer is left out
    gen = HFGenerator(lm.model, lm.tokenizer, "newline")
    for request, example in zip(requests[:3], prefilled.harm_calibration):
        prefix = prefix_of(lm.tokenizer, answers[request], 10)
        assert prefix and example.prompt == f"{request}\n{prefix}"
        assert example.response == gen.generate([Request(request, prefix)], Sampling(6))[0]
    assert prefilled.harm_calibration[0].response != own.harm_calibration[0].response
