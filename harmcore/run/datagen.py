"""Make calibration data: compliant harmful responses (and benign ones) for one model and domain.

Methods (`datagen.method`):

- ``self``: the model answers the prompts itself (greedy, `data.response_tokens` new tokens);
- ``prefill``: the model continues the first `datagen.prefill_tokens` tokens (its own
  tokenizer, cut back to a word boundary) of a reference answer to the same prompt (`datagen.reference_path`, e.g. the
  instruct model's self answers); the response is prefix + continuation. This is how the
  paper gets harmful answers from base models;
- ``counterpart``: the model named by `model.counterpart` answers (self-generation).

Prompts come from the harm domain minus its held-out evaluation split (the same
`sources.split` as the pipeline, with `data.n_eval` and `data.split_seed`), so no evaluation
prompt is ever used for scoring. Responses pass `calibration_files.filter_responses`
(refusals, degenerate text, duplicates). Benign examples are the answers of the same
responder to the benign calibration instructions (builtin set) or the dataset's own outputs
(alpaca / jsonl). Output: `harmful.jsonl` (prompt/response/category, read with
`data.harm_path`), `benign.jsonl` (Alpaca format, read with `data.benign_source=jsonl
data.benign_path=...`), each with `<file>.provenance.json`. Generations are cached like the
pipeline's, so a rerun costs no generation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from harmcore.cache_entries import one_per
from harmcore.data import calibration_files, sources
from harmcore.data.examples import Example
from harmcore.errors import HarmcoreError
from harmcore.files import key_of
from harmcore.generation.base import Request, Sampling
from harmcore.generation.hf import HFGenerator
from harmcore.measure.judges.refusal import RefusalKeywordJudge
from harmcore.run.config import Config
from harmcore.run.context import JobContext
from harmcore.run.options import option_config
from harmcore.run.provenance import provenance
from harmcore.run.session import LoadedModel, Session

log = logging.getLogger("harmcore.datagen")


def out_dir_of(cfg: Config) -> Path:
    g = cfg.datagen
    if g.out_dir:
        return Path(g.out_dir).expanduser()
    return Path(cfg.output_root) / "data" / cfg.model.name / cfg.harm_domain.name / g.method


def _prefill_prefixes(lm, prompts, reference_path: str, n_tokens: int) -> list[str | None]:
    refs = {calibration_files.normalise(e.prompt): e.response for e in calibration_files.read_examples(reference_path)}
    out = []
    for p in prompts:
        ref = refs.get(calibration_files.normalise(p.text))
        if ref is None:
            out.append(None)
            continue
        ids = lm.tokenizer(ref, add_special_tokens=False)["input_ids"]
        text = lm.tokenizer.decode(ids[:n_tokens], skip_special_tokens=True)
        if len(ids) > n_tokens and " " in text.strip():  # cut back to a word boundary: the continuation starts a word
            text = text[: text.rstrip().rfind(" ")]
        out.append(text.rstrip())
    return out


def _answers(ctx: JobContext, lm: LoadedModel, prompts, prefixes) -> list[str]:
    """Greedy answers (prefix + continuation where a prefix is given); cached by prompts, prefixes and weights."""
    cfg = ctx.cfg
    sampling = Sampling(max_new_tokens=cfg.data.response_tokens, temperature=0.0)
    meta = {
        **lm.identity(),
        "prompts": key_of({"p": [p.text for p in prompts], "x": prefixes}),
        "sampling": json.dumps(sampling.key(), sort_keys=True),
        "prompt_format": lm.spec.prompt_format,
    }

    def compute():
        gen = HFGenerator(lm.model, lm.tokenizer, lm.spec.prompt_format, cfg.generation.batch_size)
        outs = gen.generate([Request(p.text, x or "") for p, x in zip(prompts, prefixes)], sampling)
        # The generator strips its output; the prefix ends at a word boundary, so a space joins them.
        return [f"{x} {o}".strip() if x else o for x, o in zip(prefixes, outs)]

    return ctx.stages.cached("generations", meta, compute, "generate_data", one_per(len(prompts)))


def generate(cfg: Config, session: Session | None = None) -> dict:
    """Write harmful.jsonl and benign.jsonl (+ provenance) for cfg's model and harm domain; return the provenance."""
    if session is None:
        with Session() as own:
            return generate(cfg, own)
    g, d, dom = cfg.datagen, cfg.data, cfg.harm_domain
    if g.method == "prefill" and not g.reference_path:
        raise HarmcoreError("datagen.method=prefill needs datagen.reference_path=<JSONL of reference answers>")
    responder_spec = cfg.model
    if g.method == "counterpart":
        if not cfg.model.counterpart:
            raise HarmcoreError(f"model {cfg.model.name} names no counterpart: set model.counterpart=<model option>")
        responder_spec = option_config("model", cfg.model.counterpart)
    ctx = JobContext.create(cfg, session)
    lm = session.model(responder_spec, ctx.cache_dir)
    prompts = sources.harmful_prompts(dom.source, dom.path, dom.categories)
    n_rest = len(prompts) - min(d.n_eval, len(prompts) // 2)
    calib, held_out = sources.split(prompts, d.n_eval, min(g.n_examples or n_rest, n_rest), d.split_seed)
    prefixes: list[str | None] = [None] * len(calib)
    if g.method == "prefill":
        prefixes = _prefill_prefixes(lm, calib, g.reference_path, g.prefill_tokens)
    keep = [i for i, x in enumerate(prefixes) if g.method != "prefill" or x is not None]
    n_without_reference = len(prefixes) - len(keep)
    calib, prefixes = [calib[i] for i in keep], [prefixes[i] for i in keep]
    answers = _answers(ctx, lm, calib, prefixes)
    raw = [Example(p.text, a, p.category) for p, a in zip(calib, answers)]
    judge = RefusalKeywordJudge("corrected")
    is_refusal = (lambda r: judge.is_refusal(r)[0]) if d.drop_refusals else None
    harmful, dropped = calibration_files.filter_responses(raw, is_refusal, min_words=g.min_words)
    if not harmful:
        raise HarmcoreError(
            f"all {len(raw)} responses were refusals, degenerate or duplicates ({dropped}): "
            "try datagen.method=prefill, more data.response_tokens, or a lower datagen.min_words"
        )
    benign = _benign(ctx, lm, g.min_words)
    if not benign:
        log.warning("no benign response passed the filters: benign.jsonl is empty")
    out = out_dir_of(cfg)
    prov = {
        "model": cfg.model.name,
        "responder": responder_spec.name,
        "responder_id": lm.model_id,
        "responder_weights": lm.fingerprint,
        "harm_domain": dataclasses.asdict(dom),
        "method": g.method,
        "prefill_tokens": g.prefill_tokens if g.method == "prefill" else None,
        "reference_path": g.reference_path if g.method == "prefill" else None,
        "response_tokens": d.response_tokens,
        "split": {"n_eval": d.n_eval, "split_seed": d.split_seed, "held_out_prompts": [p.text for p in held_out]},
        "n_prompts": len(raw) + n_without_reference,  # calibration prompts, with or without a reference answer
        "n_without_reference": n_without_reference,
        "dropped": dropped,
        "provenance": provenance(cfg),
    }
    calibration_files.write_examples(out / "harmful.jsonl", harmful, prov)
    rows = [json.dumps({"instruction": e.prompt, "input": "", "output": e.response}) for e in benign]
    calibration_files.write_rows(out / "benign.jsonl", rows, prov)
    log.info("%d harmful (%s dropped) and %d benign examples -> %s", len(harmful), dropped, len(benign), out)
    return {**prov, "n_examples": len(harmful), "n_benign": len(benign), "out_dir": str(out)}


def _benign(ctx: JobContext, lm: LoadedModel, min_words: int) -> list[Example]:
    cfg = ctx.cfg
    d = cfg.data
    if d.benign_source in ("alpaca", "jsonl"):
        pairs = sources.alpaca_cleaned(d.benign_path)
        calib, _ = sources.split(pairs, d.n_eval, cfg.datagen.n_examples or len(pairs), d.split_seed)
        examples = [Example(p.text, r) for p, r in calib]
    else:
        prompts = sources.benign_builtin()
        calib, _ = sources.split(prompts, d.n_eval, cfg.datagen.n_examples or len(prompts), d.split_seed)
        answers = _answers(ctx, lm, calib, [None] * len(calib))
        examples = [Example(p.text, a) for p, a in zip(calib, answers)]
    kept, _ = calibration_files.filter_responses(examples, min_words=min_words)
    return kept
