"""The warnings a job logs when its data or its mask is not what the settings suggest."""

import logging

import torch

from harmcore.run.config import Config, DataConfig, HarmDomainConfig, PruningConfig
from harmcore.run.context import JobContext
from harmcore.run.prepare import _warn_short_calibration
from harmcore.run.scores import select
from harmcore.run.session import Session


def _warnings(caplog, cfg, *counts):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harmcore.job"):
        _warn_short_calibration(cfg, *counts)
    return [r.getMessage() for r in caplog.records]


def test_a_small_domain_and_dropped_refusals_are_named(caplog):
    cfg = Config(data=DataConfig(n_calibration=412, n_eval=100), harm_domain=HarmDomainConfig(name="all"))
    # StrongREJECT: 313 prompts, 100 held out -> 213 calibration prompts, 13 answers refused
    (line,) = _warnings(caplog, cfg, 313, 213, 13, 200, 412)
    assert "200 harmful and 412 benign" in line and "412 each of data.n_calibration" in line
    assert "harm_domain=all has 313 prompts and 100 are held out" in line and "harm_domain=advbench" in line
    assert "harmful answers dropped as refusals or empty: 13" in line


def test_a_full_set_says_nothing_and_a_file_is_not_blamed_on_the_domain(caplog):
    cfg = Config(data=DataConfig(n_calibration=24, n_eval=24))
    assert _warnings(caplog, cfg, 313, 24, 0, 24, 24) == []
    cfg = Config(data=DataConfig(n_calibration=24, n_eval=24, harm_path="/data/harmful.jsonl"))
    (line,) = _warnings(caplog, cfg, 313, 10, 0, 10, 24)
    assert "10 harmful and 24 benign" in line and "held out" not in line


def test_a_mask_that_prunes_nothing_says_which_q_would(caplog):
    gen = torch.Generator().manual_seed(0)
    harm = {f"m{i}": torch.rand(64, 4096, generator=gen) for i in range(2)}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harmcore.job"):
        row_cfg = Config(sparsity=1e-5, pruning=PruningConfig(p=0.0, ranking="per_row"))
        per_row = select(JobContext(row_cfg, Session(), None), harm, None)
        per_matrix = select(
            JobContext(Config(sparsity=1e-5, pruning=PruningConfig(p=0.0)), Session(), None), harm, None
        )
    assert per_row.n_pruned == 0 and per_matrix.n_pruned == 2 * int(1e-5 * 64 * 4096)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "sparsity=1e-05 prunes no weight with pruning.ranking=per_row" in line
    assert "the largest row has 4096 weights, so q >= 0.000244 is needed" in line
