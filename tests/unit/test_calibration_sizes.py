"""The warning a job logs when it scores on fewer calibration examples than data.n_calibration."""

import logging

from harmcore import pipeline
from harmcore.config import Config, DataConfig, HarmDomainConfig


def _warnings(caplog, cfg, *counts):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harmcore.pipeline"):
        pipeline._warn_short_calibration(cfg, *counts)
    return [r.getMessage() for r in caplog.records]


def test_a_small_domain_and_dropped_refusals_are_named(caplog):
    cfg = Config(data=DataConfig(n_calibration=412, n_eval=100), harm_domain=HarmDomainConfig(name="all"))
    # StrongREJECT: 313 prompts, 100 held out -> 213 calibration prompts, 13 answers refused
    (line,) = _warnings(caplog, cfg, 313, 213, 13, 200, 412)
    assert "200 harmful and 412 benign" in line and "412 each of data.n_calibration" in line
    assert "harm_domain=all has 313 prompts and 100 are held out" in line and "harm_domain=advbench" in line
    assert "13 harmful answers were refusals or empty" in line


def test_a_full_set_says_nothing_and_a_file_is_not_blamed_on_the_domain(caplog):
    cfg = Config(data=DataConfig(n_calibration=24, n_eval=24))
    assert _warnings(caplog, cfg, 313, 24, 0, 24, 24) == []
    cfg = Config(data=DataConfig(n_calibration=24, n_eval=24, harm_path="/data/harmful.jsonl"))
    (line,) = _warnings(caplog, cfg, 313, 10, 0, 10, 24)
    assert "10 harmful and 24 benign" in line and "held out" not in line
