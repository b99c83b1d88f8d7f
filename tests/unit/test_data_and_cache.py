import pytest
import torch

from harmcore.core.score_store import load_scores, save_scores, score_path
from harmcore.data.examples import Example, FormatSpec, collate, data_hash, leading_special_ids, tokenize
from harmcore.errors import HarmcoreError
from harmcore.generation.base import Request, Sampling, encode
from harmcore.generation.hf import HFGenerator
from harmcore.models.builders import tiny_tokenizer


@pytest.fixture
def bos_tok():
    """The tiny tokenizer made to put its BOS before every text by default, as Llama's and Mistral's do."""
    from tokenizers import processors

    tok = tiny_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    return tok


def test_raw_format_tokenizes_parts_separately(tiny_tok):
    ex = Example("Hi?", "Yes.")
    (t,) = tokenize(tiny_tok, [ex])
    assert tiny_tok.decode(t.prompt_ids) == "Hi?\n" and tiny_tok.decode(t.response_ids) == "Yes."
    (t2,) = tokenize(tiny_tok, [ex], FormatSpec(add_bos=True, add_eos=True))
    assert t2.prompt_ids[0] == tiny_tok.bos_token_id and t2.response_ids[-1] == tiny_tok.eos_token_id
    assert t2.prompt_ids[1:] == t.prompt_ids and t2.response_ids[:-1] == t.response_ids


def test_plain_prompts_start_with_the_tokenizers_default_leading_tokens(tiny_tok, bos_tok):
    bos = bos_tok.bos_token_id
    assert leading_special_ids(tiny_tok) == [] and leading_special_ids(bos_tok) == [bos]
    ex = Example("Hi?", "Yes.")
    (t,) = tokenize(bos_tok, [ex])  # raw: the prompt as tokenizer(prompt + "\n") gives it, the response bare
    assert list(t.prompt_ids) == bos_tok("Hi?\n")["input_ids"] and t.prompt_ids[0] == bos
    assert t.prompt_ids.count(bos) == 1 and t.response_ids == tokenize(tiny_tok, [ex])[0].response_ids
    (off,) = tokenize(bos_tok, [ex], FormatSpec(add_bos=False))
    assert off.prompt_ids == t.prompt_ids[1:]
    (plain,) = tokenize(tiny_tok, [ex])  # a tokenizer that adds nothing gets nothing
    assert plain.prompt_ids == off.prompt_ids
    # Q/A prompts (base models): exactly what tokenizer(text) gives, BOS once
    want = bos_tok("Q: Hi?\nA:")["input_ids"]
    assert encode(bos_tok, "Hi?", "qa") == want and encode(tiny_tok, "Hi?", "qa") == want[1:]
    chat = encode(bos_tok, "Hi?", "chat")  # a chat template writes its own special tokens: none added
    text = bos_tok.apply_chat_template([{"role": "user", "content": "Hi?"}], tokenize=False, add_generation_prompt=True)
    assert chat == bos_tok(text, add_special_tokens=False)["input_ids"]
    assert chat[0] != bos
    bos_tok.chat_template = None  # chat format without a template falls back to the same Q/A prompt
    (qa,) = tokenize(bos_tok, [ex], FormatSpec(kind="chat"))
    assert list(qa.prompt_ids) == want


def test_generation_feeds_a_base_model_its_bos(bos_tok, tiny_model):
    seen = []
    generate = tiny_model.generate

    def spy(**kwargs):
        seen.append(kwargs["input_ids"])
        return generate(**kwargs)

    tiny_model.generate = spy
    try:
        HFGenerator(tiny_model, bos_tok, "qa").generate([Request("Hi?")], Sampling(max_new_tokens=2))
    finally:
        del tiny_model.generate
    assert seen[0][0].tolist() == bos_tok("Q: Hi?\nA:")["input_ids"]


def test_chat_format_loss_covers_assistant_turn_and_end_token(tiny_tok):
    (t,) = tokenize(tiny_tok, [Example("Hi?", "Yes.")], FormatSpec(kind="chat"))
    assert tiny_tok.decode(t.prompt_ids) == "<|user|>\nHi?</s>\n<|assistant|>\n"
    assert tiny_tok.decode(t.response_ids) == "Yes.</s>\n"
    assert tiny_tok.eos_token_id in t.response_ids


def test_chat_format_without_template_uses_qa(tiny_tok):
    saved = tiny_tok.chat_template
    tiny_tok.chat_template = None
    try:
        (t,) = tokenize(tiny_tok, [Example("Hi?", "Yes.")], FormatSpec(kind="chat"))
    finally:
        tiny_tok.chat_template = saved
    assert tiny_tok.decode(t.prompt_ids) == "Q: Hi?\nA:" and tiny_tok.decode(t.response_ids) == " Yes."


def test_collate_labels_only_response(tiny_tok):
    toks = tokenize(tiny_tok, [Example("a", "bc"), Example("long prompt", "d")])
    b = collate(toks, pad_id=0)
    assert b.input_ids.shape == b.labels.shape == (2, 13)
    assert b.labels[0].tolist()[:2] == [-100, -100] and b.labels[0, 2:4].tolist() == list(toks[0].response_ids)
    assert (b.labels[0, 4:] == -100).all() and int(b.attention_mask[0].sum()) == 4
    assert b.n_tokens == [2, 1]


def test_truncation_keeps_prompt_and_rejects_empty_response(tiny_tok):
    (t,) = tokenize(tiny_tok, [Example("ab", "x" * 50)], FormatSpec(max_length=10))
    assert len(t.prompt_ids) + len(t.response_ids) == 10
    with pytest.raises(HarmcoreError, match="max_length"):
        tokenize(tiny_tok, [Example("a" * 20, "x")], FormatSpec(max_length=10))


def test_data_hash_changes_with_content():
    a = [Example("p", "r")]
    assert data_hash(a) == data_hash([Example("p", "r")]) != data_hash([Example("p", "r2")])


def test_score_cache_roundtrip_and_metadata_check(tmp_path):
    meta = {"method": "snip", "model": "m", "weights": "abc", "data": "d1", "code": "0.1"}
    path = score_path(tmp_path, meta)
    assert path != score_path(tmp_path, {**meta, "data": "d2"})
    scores = {"x": torch.randn(3, 4)}
    save_scores(scores, path, meta)
    assert torch.equal(load_scores(path, {"method": "snip", "data": "d1"})["x"], scores["x"])
    with pytest.raises(HarmcoreError, match="data='d1', expected 'd2'"):
        load_scores(path, {"data": "d2"})
    save_scores({"x": torch.tensor([float("nan")])}, tmp_path / "bad.safetensors", meta)
    with pytest.raises(HarmcoreError, match="NaN"):
        load_scores(tmp_path / "bad.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HarmcoreError, match="delete the file"):
        load_scores(tmp_path / "corrupt.safetensors")
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_huge_line_is_cut_before_the_tokenizer_sees_it(tiny_tok, monkeypatch):
    """Only max_length tokens are kept: a 5 MB response reaches the tokenizer cut to max_length x 64 chars."""
    from harmcore.data import examples

    seen = []
    encode = examples._encode
    monkeypatch.setattr(examples, "_encode", lambda tok, text: seen.append(len(text)) or encode(tok, text))
    (t,) = tokenize(tiny_tok, [Example("Tell me.", "word " * 1_000_000)], FormatSpec(max_length=32))
    assert len(t.prompt_ids) + len(t.response_ids) == 32
    assert max(seen) <= 32 * examples.MAX_CHARS_PER_TOKEN
