"""Calibration sets of the reverse direction (`data.target`): whose weights are scored as the
"harm" side of the set difference (benign data is still preserved).

- ``harm``: compliant answers to harmful requests (the default; the paper's main run);
- ``detection``: "is this request harmful? answer yes or no" over the harmful calibration
  requests (gold answer "Yes") and the benign calibration instructions (gold answer "No"); with
  `own_answers` (the paper's), the model's own answers to that question, refusals dropped;
- ``explanation``: "analyze why this request is harmful" over the harmful calibration
  requests, with the model's own explanations (refusals dropped when data.drop_refusals);
- ``refusal``: the harmful calibration requests with the model's own refusals, or harmcore's
  refusal phrasings when the model gives none.

The sweep over targets is reported by harmcore.report.dissociation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harmcore.data.examples import Example
from harmcore.data.refusals import own_refusal_examples
from harmcore.measure import recognition
from harmcore.measure.judges.refusal import RefusalKeywordJudge

YES, NO = "Yes", "No"


def target_examples(
    target: str,
    harmful: Sequence[Example],
    responses: Sequence[str],
    benign_prompts: Sequence[str],
    generate: Callable[[list[str]], list[str]],
    drop_refusals: bool = True,
    seed: int = 0,
    templates: tuple[str, str] = (recognition.DETECT, recognition.EXPLAIN),
    own_answers: bool = False,
) -> tuple[list[Example], int]:
    """(calibration examples for `target`, how many were dropped).

    `harmful` holds the harmful calibration requests (as Examples with any response) and
    `responses` the model's own answers to them; `generate(prompts)` answers new prompts.
    `templates`: the detection and explanation questions ({prompt}: the request).
    """
    judge = RefusalKeywordJudge("corrected")
    prompts = [e.prompt for e in harmful]
    detect, explain = templates
    if target == "detection" and own_answers:
        asked = [detect.format(prompt=p) for p in [*prompts, *benign_prompts]]
        domains = [e.domain for e in harmful] + [None] * len(benign_prompts)
        out = [Example(a, text, dom) for a, text, dom in zip(asked, generate(asked), domains)
               if text.strip() and not (drop_refusals and recognition.paper_refused(text, "detection"))]  # fmt: skip
        return out, len(asked) - len(out)
    if target == "detection":
        yes = [Example(detect.format(prompt=p), YES, e.domain) for p, e in zip(prompts, harmful)]
        return yes + [Example(detect.format(prompt=p), NO) for p in benign_prompts], 0
    if target == "explanation":
        asked = [explain.format(prompt=p) for p in prompts]
        out = []
        for a, text, e in zip(asked, generate(asked), harmful):
            if text.strip() and not (drop_refusals and judge.is_refusal(text)[0]):
                out.append(Example(a, text, e.domain))
        return out, len(asked) - len(out)
    if target == "refusal":
        # A prompt the model refused keeps its own refusal; the others borrow one of the
        # model's refusals (harmcore's phrasings when it refused nothing).
        own = {p: r for p, r in zip(prompts, responses) if r.strip() and judge.is_refusal(r)[0]}
        paired = own_refusal_examples(prompts, own, seed)
        return [Example(e.prompt, x.response, e.domain) for e, x in zip(harmful, paired)], 0
    raise ValueError(f"no calibration recipe for target {target!r}")
