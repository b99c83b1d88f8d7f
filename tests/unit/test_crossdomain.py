"""Cross-domain evaluation sets: the held-out split of B without A's prompts."""

import pytest

from harmcore.data import sources
from harmcore.data.calibration_files import normalise
from harmcore.errors import HarmcoreError
from harmcore.run.config import DataConfig
from harmcore.run.options import domain_config
from harmcore.run.prepare import domain_prompts, eval_prompts

D = DataConfig(n_calibration=8, n_eval=10, split_seed=0)


def test_domain_config_reads_the_option():
    dom = domain_config("violence")
    assert dom.name == "violence" and dom.source == "strongreject" and dom.categories == ["Violence"]
    with pytest.raises(HarmcoreError, match="Did you mean 'violence'"):
        domain_config("violense")


def test_same_domain_is_the_usual_split():
    dom = domain_config("violence")
    calib, held_out = sources.split(domain_prompts(dom), D.n_eval, D.n_calibration, D.split_seed)
    got, removed = eval_prompts(dom, dom, D)
    assert got == held_out and removed == 0
    assert not {p.text for p in got} & {p.text for p in calib}


def test_other_domain_drops_prompts_of_the_scoring_domain():
    a, b = domain_config("violence"), domain_config("sexual_content")
    _, b_held_out = sources.split(domain_prompts(b), D.n_eval, D.n_calibration, D.split_seed)
    got, removed = eval_prompts(a, b, D)
    assert got == b_held_out and removed == 0  # StrongREJECT categories share no prompt
    # a scoring domain that holds all of B leaves nothing to evaluate; `exclude` removes named prompts
    everything = domain_config("all")
    with pytest.raises(HarmcoreError, match="inside the scoring domain"):
        eval_prompts(everything, b, D)
    got, removed = eval_prompts(a, b, D, exclude=[b_held_out[0].text.upper()])
    assert removed == 1 and normalise(b_held_out[0].text) not in {normalise(p.text) for p in got}
