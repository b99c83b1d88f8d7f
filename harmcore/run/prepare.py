"""A job's data: calibration sets to score, held-out prompts to evaluate, reference answers.

    harmful prompts of harm_domain -> split (data.n_eval held out, data.split_seed)
      calibration part -> the responder's greedy answers (refusals dropped), a calibration
                          file (data.harm_path) or gold answers (a QA domain)
      held-out part    -> evaluation prompts (or eval_domain's, minus every prompt of harm_domain)
    benign instructions -> the same split; answered by the responder, or a dataset's own outputs
    data.target != harm -> the calibration set of the reverse direction (harmcore.run.targets)

No evaluation prompt is ever used for scoring. Every generation is a cached stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from harmcore.data import calibration_files, qa, sources
from harmcore.data.examples import Example, fitting
from harmcore.errors import HarmcoreError
from harmcore.generation.base import Sampling
from harmcore.measure import recognition
from harmcore.measure.attacks import prefix_of
from harmcore.measure.judges.refusal import RefusalKeywordJudge
from harmcore.run.config import Config, DataConfig, HarmDomainConfig
from harmcore.run.context import JobContext
from harmcore.run.options import domain_config
from harmcore.run.session import LoadedModel
from harmcore.run.targets import target_examples

log = logging.getLogger("harmcore.job")


@dataclass
class JobData:
    harm_calibration: list[Example]
    benign_calibration: list[Example]
    harm_eval: list[sources.Prompt]
    benign_eval: list[sources.Prompt]
    n_harm_dropped: int = 0
    responses_from: str = ""  # the model that wrote the calibration responses (or the file they came from)
    n_eval_overlap_removed: int = 0  # eval_domain prompts left out because they belong to the scoring domain
    n_eval_near_duplicates_removed: int = 0  # ... of those, left out as near-duplicates (data.near_duplicate_ratio)
    # The harmful requests behind harm_calibration (with data.target != harm its prompts wrap them)
    calibration_requests: list[str] = field(default_factory=list)
    # Compliant harmful (prompt, response) calibration pairs: harm_calibration itself for data.target=harm;
    # the harmful fine-tuning attack trains on them whatever the target
    harmful_pairs: list[Example] = field(default_factory=list)
    # The calibration writer's refusals to harmful calibration prompts (left out of scoring; the
    # refusal-ablation attack's data); empty when the harmful answers come from a file or gold answers
    own_refusals: list[Example] = field(default_factory=list)


def prepare_data(ctx: JobContext, lm: LoadedModel) -> JobData:
    """The calibration and evaluation data of a job (see the module docstring)."""
    cfg = ctx.cfg
    dom, d = cfg.harm_domain, cfg.data
    harmful = sources.harmful_prompts(dom.source, dom.path, dom.categories)
    harm_calib, harm_eval = sources.split(harmful, d.n_eval, d.n_calibration, d.split_seed)
    n_overlap = n_near = 0
    own_refusals: list[Example] = []
    request_of: dict[str, str] = {}  # a calibration example's prompt -> the harmful request it answers
    # With a reverse target and the recognition evaluation on, none of its prompts (harmful or benign
    # look-alike) is ever used for scoring: the detection target asks about both kinds of request.
    banned: set[str] = set()
    if d.target != "harm" and cfg.eval.recognition.enabled:
        banned = {calibration_files.normalise(t) for t, _ in recognition.load_items(cfg.eval.recognition.path)}
    if cfg.eval_prompts_path:
        harm_eval, n_overlap, n_near = file_eval_prompts(dom, cfg.eval_prompts_path, d)
    elif cfg.eval_domain:
        harm_eval, n_overlap, n_near = eval_prompts(dom, domain_config(cfg.eval_domain), d)
    sampling = Sampling(max_new_tokens=d.response_tokens, temperature=0.0)
    if d.target != "harm" and (dom.source == "qa" or d.harm_path):
        raise HarmcoreError(
            f"data.target={d.target} builds its calibration data from a harm domain's requests: "
            "leave data.harm_path unset and use a harmful harm_domain"
        )
    if dom.source == "qa":  # control task: questions with their gold answers
        harm_examples, dropped = qa.calibration_examples(dom.path, [p.text for p in harm_calib]), 0
        source = "gold answers"
    elif d.harm_path:  # no evaluation prompt is ever used for scoring
        from_file = calibration_files.read_examples(d.harm_path)
        harm_examples, dropped = calibration_files.without_prompts(from_file, [p.text for p in harm_eval])
        harm_examples, source = harm_examples[: d.n_calibration], d.harm_path
        if not harm_examples:
            raise HarmcoreError(
                f"every example of data.harm_path={d.harm_path} has an evaluation prompt: "
                "make the file with the same data.n_eval and data.split_seed"
            )
    else:
        writer = lm if d.pair_text == "own" else ctx.responder(lm)
        source = writer.spec.name
        harm_calib = [p for p in harm_calib if calibration_files.normalise(p.text) not in banned]
        harm_calib, prefixes = calibration_prefixes(writer, harm_calib, d)
        responses = ctx.generate(writer, harm_calib, sampling, "dense", "calibration_harmful", prefixes)
        judge = RefusalKeywordJudge("corrected")
        harm_examples, dropped = [], 0
        for p, r, x in zip(harm_calib, responses, prefixes):
            refused = bool(r.strip()) and judge.is_refusal(r)[0]
            if refused:
                own_refusals.append(Example(p.text, r, p.category))
            if not r.strip() or (d.drop_refusals and refused):
                dropped += 1
                continue
            # a prefilled answer is scored as the authors' files hold it: the prefix ends the prompt
            prompt = f"{p.text}\n{x}" if x else p.text
            request_of[prompt] = p.text
            harm_examples.append(Example(prompt, r, p.category))
    if not harm_examples and d.target == "harm":
        raise HarmcoreError(
            f"all {len(harm_calib)} self-generated harmful responses were refusals or empty: "
            "set data.drop_refusals=false or give harmful responses from another source"
        )
    n_benign = d.n_preserve or d.n_calibration  # the preserve set's size
    if d.benign_source == "alpaca" or (d.benign_source == "jsonl"):
        pairs = sources.alpaca_cleaned(d.benign_path)
        benign_calib, benign_eval_pairs = sources.split(pairs, d.n_eval, n_benign, d.split_seed)
        benign_examples = [Example(p.text, r) for p, r in benign_calib]
        benign_eval = [p for p, _ in benign_eval_pairs]
    else:
        benign = sources.benign_builtin()
        benign_calib_prompts, benign_eval = sources.split(benign, d.n_eval, n_benign, d.split_seed)
        writer = lm if d.pair_text == "own" else ctx.responder(lm)
        answers = ctx.generate(writer, benign_calib_prompts, sampling, "dense", "calibration_benign")
        benign_examples = [Example(p.text, r) for p, r in zip(benign_calib_prompts, answers) if r.strip()]
    benign_examples = [e for e in benign_examples if calibration_files.normalise(e.prompt) not in banned]
    compliant = harm_examples
    if d.target != "harm":  # the reverse direction: prune the weights of detection, explanation or refusal

        def answer(texts: list[str]) -> list[str]:
            asked = [sources.Prompt(t) for t in texts]
            return ctx.generate(writer, asked, sampling, "dense", f"calibration_{d.target}")

        requests = [Example(p.text, "", p.category) for p in harm_calib]
        benign_prompts = [e.prompt for e in benign_examples]
        rc = cfg.eval.recognition
        templates = (rc.detect_template or recognition.DETECT, rc.explain_template or recognition.EXPLAIN)
        harm_examples, dropped = target_examples(
            d.target, requests, responses, benign_prompts, answer, d.drop_refusals, cfg.seed, templates,
            own_answers=rc.reading == "paper",
        )  # fmt: skip
        if not harm_examples:
            raise HarmcoreError(f"data.target={d.target}: every calibration answer was a refusal or empty")
    fmt = ctx.fmt
    fit_harm, fit_benign = fitting(lm.tokenizer, harm_examples, fmt), fitting(lm.tokenizer, benign_examples, fmt)
    too_long = len(harm_examples) - len(fit_harm) + len(benign_examples) - len(fit_benign)
    if too_long:
        log.warning("%d calibration examples do not fit data.max_length=%d: left out", too_long, d.max_length)
    if not fit_harm or not fit_benign:
        raise HarmcoreError(f"no calibration example fits data.max_length={d.max_length}: raise it")
    _warn_short_calibration(cfg, len(harmful), len(harm_calib), dropped, len(fit_harm), len(fit_benign))
    if d.target == "harm":
        requests = [request_of.get(e.prompt, e.prompt) for e in fit_harm]
    else:
        requests = [p.text for p in harm_calib]
    pairs = fit_harm if d.target == "harm" else fitting(lm.tokenizer, compliant, fmt)
    return JobData(
        fit_harm, fit_benign, harm_eval, benign_eval, dropped, source, n_overlap, n_near, requests, pairs, own_refusals
    )


def calibration_prefixes(writer: LoadedModel, prompts: list, d: DataConfig) -> tuple[list, list[str]]:
    """(prompts, prefixes) of the harmful calibration answers. A model without a chat template, given
    data.prefill_path, continues the first data.prefill_tokens tokens of that file's answer to each
    prompt (the paper's base models); prompts the file does not answer are left out. Otherwise no prefixes."""
    if not d.prefill_path or writer.spec.prompt_format == "chat":
        return prompts, [""] * len(prompts)
    norm = calibration_files.normalise
    answers = {norm(p): r for p, r in sources.training_pairs(d.prefill_path, "data.prefill_path")}
    kept = [p for p in prompts if norm(p.text) in answers]
    if not kept:
        raise HarmcoreError(
            f"data.prefill_path={d.prefill_path} answers none of the {len(prompts)} harmful calibration prompts: "
            "give the file of harmful answers to this harm_domain's prompts"
        )
    if len(kept) < len(prompts):
        log.warning(
            "data.prefill_path answers %d of %d calibration prompts: the rest are left out", len(kept), len(prompts)
        )
    prefixes = [prefix_of(writer.tokenizer, answers[norm(p.text)], d.prefill_tokens) for p in kept]
    return kept, prefixes


def _warn_short_calibration(cfg: Config, n_prompts: int, n_calib: int, dropped: int, n_harm: int, n_benign: int):
    """One warning when a set is scored on fewer examples than data.n_calibration asks for, with why."""
    d = cfg.data
    if n_harm >= d.n_calibration and n_benign >= (d.n_preserve or d.n_calibration):
        return
    why = []
    if not d.harm_path and n_calib < d.n_calibration:
        why.append(
            f"harm_domain={cfg.harm_domain.name} has {n_prompts} prompts and {n_prompts - n_calib} are held out "
            "for evaluation (use a larger domain, e.g. harm_domain=advbench, or a file: data.harm_path)"
        )
    if dropped:
        why.append(f"harmful answers dropped as refusals or empty: {dropped} (data.drop_refusals)")
    log.warning(
        "scoring on %d harmful and %d benign calibration examples, not the %d and %d asked "
        "(data.n_calibration, data.n_preserve)%s",
        n_harm,
        n_benign,
        d.n_calibration,
        d.n_preserve or d.n_calibration,
        (": " + "; ".join(why)) if why else "",
    )


def references_writer(ctx: JobContext, lm: LoadedModel) -> LoadedModel:
    """The model whose answers are the held-out references (a calibration file: the job's own)."""
    return lm if ctx.cfg.data.harm_path else ctx.responder(lm)


def reference_sets(ctx: JobContext, lm: LoadedModel, data: JobData) -> dict[str, list[Example]]:
    """Held-out references: answers to the eval prompts by the model that wrote the calibration data.

    That is the dense model itself, or `data.responses_from` (so both members of a pair are
    measured on identical text, and an aligned model that refuses is measured, and prefilled,
    on a counterpart's harmful answers). harm: the compliant answers to held-out harmful
    prompts; benign: the answers to held-out benign instructions. The job's model's loss on
    them rises when pruning removes the ability.
    """
    cfg = ctx.cfg
    if not cfg.eval.response_nll:
        return {}
    g = cfg.generation
    sampling = Sampling(g.max_new_tokens, 0.0, 1.0, cfg.seed)
    judge = RefusalKeywordJudge("corrected")
    writer = references_writer(ctx, lm)
    harm = ctx.generate(writer, data.harm_eval, sampling, "dense", "references_harmful")
    benign = ctx.generate(writer, data.benign_eval, sampling, "dense", "references_benign")
    fmt = ctx.fmt
    harm_refs = [Example(p.text, r) for p, r in zip(data.harm_eval, harm) if r.strip() and not judge.is_refusal(r)[0]]
    benign_refs = [Example(p.text, r) for p, r in zip(data.benign_eval, benign) if r.strip()]
    return {"harm": fitting(lm.tokenizer, harm_refs, fmt), "benign": fitting(lm.tokenizer, benign_refs, fmt)}


# ---------------------------------------------------------------------------------------
# Cross-domain evaluation prompts


def domain_prompts(dom: HarmDomainConfig) -> list[sources.Prompt]:
    return sources.harmful_prompts(dom.source, dom.path, dom.categories)


def eval_prompts(
    scoring: HarmDomainConfig, evaluation: HarmDomainConfig, d: DataConfig, exclude: list[str] = ()
) -> tuple[list[sources.Prompt], int, int]:
    """(B's held-out prompts without A's prompts, how many were removed, how many of those as near-duplicates);
    `exclude` adds prompts to leave out."""
    b_calib, b_eval = sources.split(domain_prompts(evaluation), d.n_eval, d.n_calibration, d.split_seed)
    if scoring.name == evaluation.name:
        # the usual split: calibration prompts are never evaluated
        banned = [p.text for p in b_calib]
    else:
        banned = [p.text for p in domain_prompts(scoring)]
    return _without(b_eval, [*banned, *exclude], d, f"eval_domain={evaluation.name}", scoring.name)


def file_eval_prompts(scoring: HarmDomainConfig, path: str, d: DataConfig) -> tuple[list[sources.Prompt], int, int]:
    """Every prompt of the file at `path` (the authors' B-not-A subsets) without A's; counts as `eval_prompts`."""
    prompts = sources.jsonl_prompts(path, "eval_prompts_path")
    return _without(prompts, [p.text for p in domain_prompts(scoring)], d, f"eval_prompts_path={path}", scoring.name)


def _without(prompts, banned: list[str], d: DataConfig, what: str, scoring: str):
    exact = {calibration_files.normalise(t) for t in banned}
    kept = [p for p in prompts if calibration_files.normalise(p.text) not in exact]
    n_exact = len(prompts) - len(kept)
    if d.near_duplicate_ratio is not None:
        near = calibration_files.near_duplicates([p.text for p in kept], banned, d.near_duplicate_ratio)
        kept = [p for p, dup in zip(kept, near) if not dup]
    if not kept:
        raise HarmcoreError(
            f"every evaluation prompt of {what} also belongs to harm_domain={scoring} (or to its calibration set, "
            "or is a near-duplicate of one): evaluate on prompts that are not inside the scoring domain"
        )
    return kept, len(prompts) - len(kept), len(prompts) - len(kept) - n_exact
