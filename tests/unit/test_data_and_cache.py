import pytest
import torch

from harmcore.cache import load_scores, save_scores, score_path
from harmcore.data import Example, FormatSpec, collate, data_hash, tokenize
from harmcore.errors import HarmcoreError


def test_raw_format_tokenizes_parts_separately(tiny_tok):
    ex = Example("Hi?", "Yes.")
    (t,) = tokenize(tiny_tok, [ex])
    assert tiny_tok.decode(t.prompt_ids) == "Hi?\n" and tiny_tok.decode(t.response_ids) == "Yes."
    (t2,) = tokenize(tiny_tok, [ex], FormatSpec(add_bos=True, add_eos=True))
    assert t2.prompt_ids[0] == tiny_tok.bos_token_id and t2.response_ids[-1] == tiny_tok.eos_token_id
    assert t2.prompt_ids[1:] == t.prompt_ids and t2.response_ids[:-1] == t.response_ids


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
