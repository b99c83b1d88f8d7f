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
    assert "200 harmful and 412 benign" in line and "not the 412 and 412 asked" in line
    assert "harm_domain=all has 313 prompts and 100 are held out" in line and "harm_domain=advbench" in line
    assert "harmful answers dropped as refusals or empty: 13" in line


def test_a_separate_preserve_size_is_what_the_benign_set_is_held_to(caplog):
    cfg = Config(data=DataConfig(n_calibration=24, n_eval=24, n_preserve=64))
    (line,) = _warnings(caplog, cfg, 313, 24, 0, 24, 40)
    assert (
        "24 harmful and 40 benign" in line and "not the 24 and 64 asked (data.n_calibration, data.n_preserve)" in line
    )
    assert _warnings(caplog, cfg, 313, 24, 0, 24, 64) == []


def test_the_preserve_set_gets_its_own_size_and_the_held_out_split_stays():
    from harmcore.models.config import ModelConfig
    from harmcore.run.prepare import prepare_data

    session = Session()

    def job_data(**data):
        model = ModelConfig(name="tiny_random", builder="tiny_random", device="cpu")
        cfg = Config(model=model, data=DataConfig(n_calibration=3, n_eval=4, response_tokens=4, **data))
        ctx = JobContext.create(cfg, session)
        return prepare_data(ctx, ctx.model())

    same, more = job_data(), job_data(n_preserve=6)
    assert len(same.benign_calibration) == 3 and len(more.benign_calibration) == 6
    assert [e.prompt for e in more.benign_calibration[:3]] == [e.prompt for e in same.benign_calibration]
    assert more.benign_eval == same.benign_eval and len(more.harm_calibration) == len(same.harm_calibration)


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
