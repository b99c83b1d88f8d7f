"""Config schemas of the measurement suite: judges, utility evals and jailbreak attacks.

Each part is a plug-in of the `eval` config group (see conf/eval/full.yaml): it runs
when its `enabled` flag is set (the endpoint judge also needs a `base_url`). These are
plain dataclasses; `harmcore.run.config.EvalConfig` nests them. Secrets never live here:
the endpoint judge reads its API key from the environment variable named by `api_key_env`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harmcore.errors import HarmcoreError
from harmcore.measure.judges.endpoint import ENDPOINT_JUDGES, parse_scale

ATTACKS = ("prefill", "refusal_ablation", "lora")  # combine with '+', e.g. lora+prefill
BUILTIN_ENDPOINT_JUDGES = tuple(ENDPOINT_JUDGES)


def parse_attack(name: str) -> tuple[str, ...]:
    """'lora+prefill' -> ('lora', 'prefill'); an unknown part is one clear error."""
    parts = tuple(p.strip() for p in str(name).split("+"))
    for part in parts:
        if part not in ATTACKS:
            raise HarmcoreError(f"eval.attacks.attacks has {name!r}: combine {', '.join(ATTACKS)} with '+'")
    if len(set(parts)) != len(parts):
        raise HarmcoreError(f"eval.attacks.attacks has {name!r}: name each attack once")
    return parts


def _positive(name: str, value: float) -> None:
    if value is None or value <= 0:
        raise HarmcoreError(f"{name}={value}: use a positive number")


@dataclass
class StrongRejectConfig:
    """The StrongREJECT fine-tuned classifier (Souly et al. 2024): a LoRA on gemma-2b."""

    enabled: bool = False
    model: str = "google/gemma-2b"  # base judge model: hub id or local folder
    adapter: str | None = "qylu4156/strongreject-15k-v1"  # PEFT adapter (hub id or folder); null = none
    revision: str | None = None  # hub revision of `model`
    # judge_templates.json of dsbowen/strong_reject: a local copy, or null = its published URL
    template_path: str | None = None
    template_sha256: str | None = None  # optional pin of the template text's sha256
    max_response_length: int = 512  # response tokens kept (the reference's default)
    batch_size: int = 8  # judge prompts per forward pass; does not change the scores
    dtype: str = "float32"  # bfloat16 on GPU
    device: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _positive("eval.strongreject.max_response_length", self.max_response_length)
        _positive("eval.strongreject.batch_size", self.batch_size)


@dataclass
class EndpointJudgeConfig:
    """LLM judges through any OpenAI-compatible endpoint (OpenAI, vLLM, a proxy)."""

    enabled: bool = False
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1; null = the judge does not run
    model: str = "gpt-4o-mini"  # the judge model's name at the endpoint (StrongREJECT's default judge)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key (never put keys in configs)
    # strongreject_rubric | coherence, usefulness (0-100) | refusal_judge (yes/no: a model-based refusal
    # rate) | any name in `templates`
    judges: list[str] = field(default_factory=lambda: ["strongreject_rubric"])
    # Extra score judges: name -> prompt template file with {prompt} and {response} (e.g. EM "aligned"; the
    # authors' safety-usefulness, coherency and Alpaca-usefulness prompts); {prefix} too splits a prefilled
    # answer ("prefix|||continuation") into the prefix and the continuation judged as the response
    templates: dict[str, str] = field(default_factory=dict)
    # Their scales, "lo-hi" (default 0-100): e.g. {alpaca_usefulness: 1-10, coherency: 0-1}
    template_scales: dict[str, str] = field(default_factory=dict)
    # Template judges that leave refusals unjudged (the authors' refusal phrases), e.g. [coherency]
    skip_refusals: list[str] = field(default_factory=list)
    score_mode: str = "text"  # 0-100 judges: text (parse the answer) | logprobs (weighted mean of top-20 tokens)
    # The rubric answer's reading: strict (each "k.b" answer line, in range) | official (the StrongREJECT
    # package's first "k.b <digit>" anywhere); metrics count the answers the two read differently
    rubric_parser: str = "strict"
    temperature: float = 0.0
    max_tokens: int = 1000  # StrongREJECT's judge setting
    timeout_s: float = 60.0  # per request
    retries: int = 3  # attempts after the first one, with exponential back-off
    concurrency: int = 8  # requests in flight at once
    extra_body: dict[str, Any] = field(default_factory=dict)  # sent with every request (e.g. vLLM structured_outputs)
    cache_path: str | None = None  # judgement cache (JSONL); null = <cache_dir>/judgements/<model>.jsonl

    def __post_init__(self) -> None:
        known = (*BUILTIN_ENDPOINT_JUDGES, *self.templates)
        for name in self.judges:
            if name not in known:
                raise HarmcoreError(f"eval.endpoint.judges has {name!r}: use one of {', '.join(known)}")
        for name, scale in self.template_scales.items():
            if name not in self.templates:
                raise HarmcoreError(f"eval.endpoint.template_scales.{name}: no template of that name in templates")
            parse_scale(scale, f"eval.endpoint.template_scales.{name}")
        for name in self.skip_refusals:
            if name not in self.templates:
                raise HarmcoreError(f"eval.endpoint.skip_refusals has {name!r}: not a judge of eval.endpoint.templates")
        if self.score_mode not in ("text", "logprobs"):
            raise HarmcoreError(f"eval.endpoint.score_mode={self.score_mode}: use text or logprobs")
        if self.rubric_parser not in ("strict", "official"):
            raise HarmcoreError(f"eval.endpoint.rubric_parser={self.rubric_parser}: use strict or official")
        _positive("eval.endpoint.timeout_s", self.timeout_s)
        _positive("eval.endpoint.concurrency", self.concurrency)
        if self.retries < 0:
            raise HarmcoreError(f"eval.endpoint.retries={self.retries}: use 0 or more")


@dataclass
class UtilityConfig:
    """Capability measurements on the live (dense or pruned) model."""

    enabled: bool = False
    # Perplexity: wikitext (WikiText-2 test via datasets; needs the hub) or a local text file.
    perplexity_source: str | None = "wikitext"  # wikitext | a path to a .txt file | null = skip
    seqlen: int = 512  # window length in tokens (paper-style evals use the model's context, e.g. 2048)
    stride: int | None = None  # tokens between window starts; null = seqlen (non-overlapping)
    max_tokens: int | None = 16384  # evaluate at most this many corpus tokens; null = all
    # The last window, shorter than seqlen: score (harmcore) | drop (the authors' eval_ppl: whole windows only)
    perplexity_tail: str = "score"
    # lm-evaluation-harness zero-shot tasks (e.g. boolq, rte, hellaswag, winogrande, arc_challenge, openbookqa)
    lm_eval_tasks: list[str] = field(default_factory=list)
    lm_eval_include_path: str | None = None  # a folder of extra task YAMLs (e.g. offline local tasks)
    lm_eval_include_defaults: bool = True  # index lm-eval's own tasks (false: only include_path)
    lm_eval_limit: int | None = 100  # items per task; null = all
    lm_eval_batch_size: int = 8
    # harmcore: zero-shot, no chat template | paper: chat models zero-shot through their chat template,
    # base models 3-shot (the authors' eval_zero_shot), few-shot examples drawn with the job's seed
    lm_eval_protocol: str = "harmcore"
    # Open QA by alias substring match: a JSONL of {"question": ..., "answers": [...]}, or trivia_qa (hub)
    qa_source: str | None = None
    qa_limit: int = 1000  # the paper's TriviaQA size
    qa_max_new_tokens: int = 32
    # harmcore: greedy, QA_TEMPLATE, whole-word alias match | paper: the authors' TriviaQA (shuffled with
    # random.Random(42), the bare question, sampled as the model's generation_config says, 100 new tokens
    # for chat models and 50 for base ones prompted "Q: {question}\nA:", their first line, alias substring)
    qa_protocol: str = "harmcore"
    # Endpoint judges (eval.endpoint; needs its base_url) of the model's answers to the held-out
    # benign instructions (Alpaca-cleaned or built-in): usefulness, coherence (0-100), or a name in
    # eval.endpoint.templates. Answers: greedy, generation.max_new_tokens, cached per mask.
    benign_judges: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _positive("eval.utility.seqlen", self.seqlen)
        if self.perplexity_tail not in ("score", "drop"):
            raise HarmcoreError(f"eval.utility.perplexity_tail={self.perplexity_tail}: use score or drop")
        if self.stride is not None:
            _positive("eval.utility.stride", self.stride)
        _positive("eval.utility.lm_eval_batch_size", self.lm_eval_batch_size)
        _positive("eval.utility.qa_limit", self.qa_limit)
        if self.lm_eval_protocol not in ("harmcore", "paper"):
            raise HarmcoreError(f"eval.utility.lm_eval_protocol={self.lm_eval_protocol}: use harmcore or paper")
        if self.qa_protocol not in ("harmcore", "paper"):
            raise HarmcoreError(f"eval.utility.qa_protocol={self.qa_protocol}: use harmcore or paper")


@dataclass
class CollateralConfig:
    """Collateral damage: does pruning make the model refuse benign requests near a harm domain (the
    authors' financial-advice prompts)?"""

    # A .txt file of one prompt per line, or JSONL/CSV with a prompt column; null = not measured
    path: str | None = None
    max_new_tokens: int = 256  # the authors' pipeline length; decoding as generation.decoding says

    def __post_init__(self) -> None:
        _positive("eval.collateral.max_new_tokens", self.max_new_tokens)


# Keys of eval.attacks added later: at these values, settings hashes and cached attack answers of
# earlier runs stay as they were.
LATER_DEFAULTS = {"lora_schedule": "constant", "lora_warmup_ratio": 0.0, "lora_weight_decay": 0.0,
                  "lora_data_path": None, "prefill_path": None, "prefill_judged": "continuation",
                  "ablation_on": "dense", "ablation_n": None, "ablation_data_path": None,
                  "lora_format": "data"}  # fmt: skip


@dataclass
class AttackConfig:
    """Jailbreaks applied to the pruned model: does harm stay low when refusal is bypassed?"""

    # Any of: prefill, refusal_ablation, lora, and '+'-joined combinations (e.g. lora+prefill).
    attacks: list[str] = field(default_factory=list)
    prefill_tokens: int = 10  # tokens of a harmful reference answer given as the assistant prefix
    # Where the harmful answers come from: null = the job's held-out reference answers (the prompts the
    # writer of the calibration data complied with); a CSV/JSONL of prompt/response (or the authors'
    # clean_prompt/clean_response) gives an answer to every held-out prompt it holds
    prefill_path: str | None = None
    # What the judges read: continuation | prefix_and_continuation ("prefix|||continuation", the paper's)
    prefill_judged: str = "continuation"
    # Refusal ablation (Wei et al.): set difference of abs-SNIP scores on refusal vs benign data
    ablation_q: float = 1e-2
    ablation_p: float = 1e-2
    # The model the refusal scores are taken on: dense (one ablation mask for both variants) | each (the
    # model the attack runs on: the pruned model for the pruned variant, as the paper)
    ablation_on: str = "dense"
    ablation_n: int | None = None  # refusal and benign examples scored (paper: 128 each); null = all there are
    # The refusal examples: null = the model's own refusals to its harmful calibration prompts; a CSV/JSONL
    # of prompt/response refusals (the authors': AdvBench prompts with an aligned model's refusals)
    ablation_data_path: str | None = None
    # Harmful LoRA fine-tuning (paper: r 128, alpha 16, lr 2e-4, 5 epochs, batch 5)
    lora_r: int = 128
    lora_alpha: int = 16
    lora_lr: float = 2e-4
    lora_epochs: int = 5
    lora_batch_size: int = 5
    # Prune the merged model again with the harm mask? Off (as the paper): the attack tests whether
    # fine-tuning regrows what pruning removed, which re-masking would hide; on: a stricter variant
    lora_reapply_mask: bool = False
    lora_seed: int = 0
    # The learning-rate schedule (harmcore.training.lora): constant | linear (paper: linear, warmup
    # ratio 0.05, AdamW weight decay 0.01, as their SFTTrainer config)
    lora_schedule: str = "constant"
    lora_warmup_ratio: float = 0.0
    lora_weight_decay: float = 0.0
    # Training pairs: null = the job's compliant calibration pairs; or a CSV/JSONL of prompt/response
    # rows (also the authors' red-teaming CSV: text, rejected_response, and harmful = 1 rows only)
    lora_data_path: str | None = None
    # How the pairs are written for training: data (the job's data.format) | chat (the model's chat
    # template, loss on the answer only: the paper's SFTTrainer prompt/completion messages)
    lora_format: str = "data"

    def __post_init__(self) -> None:
        for name in self.attacks:
            parse_attack(name)
        _positive("eval.attacks.prefill_tokens", self.prefill_tokens)
        if self.ablation_on not in ("dense", "each"):
            raise HarmcoreError(f"eval.attacks.ablation_on={self.ablation_on}: use dense or each")
        if self.ablation_n is not None:
            _positive("eval.attacks.ablation_n", self.ablation_n)
        if self.prefill_judged not in ("continuation", "prefix_and_continuation"):
            raise HarmcoreError(
                f"eval.attacks.prefill_judged={self.prefill_judged}: use continuation or prefix_and_continuation"
            )
        _positive("eval.attacks.lora_r", self.lora_r)
        _positive("eval.attacks.lora_epochs", self.lora_epochs)
        _positive("eval.attacks.lora_batch_size", self.lora_batch_size)
        _positive("eval.attacks.lora_lr", self.lora_lr)
        if self.lora_format not in ("data", "chat"):
            raise HarmcoreError(f"eval.attacks.lora_format={self.lora_format}: use data or chat")
        if self.lora_schedule not in ("constant", "linear"):
            raise HarmcoreError(f"eval.attacks.lora_schedule={self.lora_schedule}: use constant or linear")
        if not 0.0 <= self.lora_warmup_ratio < 1.0:
            raise HarmcoreError(f"eval.attacks.lora_warmup_ratio={self.lora_warmup_ratio} is outside [0, 1)")
        if not self.lora_weight_decay >= 0.0:
            raise HarmcoreError(f"eval.attacks.lora_weight_decay={self.lora_weight_decay}: use a value >= 0")
        for key in ("ablation_q", "ablation_p"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise HarmcoreError(f"eval.attacks.{key}={getattr(self, key)} is outside [0, 1): it is a fraction")


@dataclass
class RecognitionConfig:
    """Recognising and explaining harm (dissociation from generating it), before and after pruning."""

    enabled: bool = False
    # JSONL of {"prompt", "harmful": true|false}: harmful requests and benign look-alikes; null = built in
    path: str | None = None
    detection_tokens: int = 16  # new tokens for the yes/no answer
    first_words: int = 5  # yes/no must appear among the answer's first words
    explanation: bool = True  # "analyze why this request is harmful", judged 1-5 (needs eval.endpoint.base_url)
    explanation_tokens: int = 128
    # The questions asked ({prompt}: the request); null = harmcore's (harmcore.measure.recognition)
    detect_template: str | None = None
    explain_template: str | None = None
    # How answers are read: harmcore (yes/no among the first words, then a first-sentence statement;
    # the corrected refusal rule) | paper (the authors' count_yes / count_no on the first 30 characters
    # and their detection and explanation refusal phrases)
    reading: str = "harmcore"
    # The explanation judge's prompt ({prompt}, {response}; e.g. the authors' rubric, from a file);
    # null = harmcore's 1-5 prompt. Its answer is read as a 1-5 score (a JSON {"score": n} too)
    explanation_judge_path: str | None = None

    def __post_init__(self) -> None:
        if self.reading not in ("harmcore", "paper"):
            raise HarmcoreError(f"eval.recognition.reading={self.reading}: use harmcore or paper")
        for key in ("detect_template", "explain_template"):
            value = getattr(self, key)
            if value is not None and "{prompt}" not in value:
                raise HarmcoreError(f"eval.recognition.{key} has no {{prompt}}: the request goes there")
        _positive("eval.recognition.detection_tokens", self.detection_tokens)
        _positive("eval.recognition.first_words", self.first_words)
        _positive("eval.recognition.explanation_tokens", self.explanation_tokens)
