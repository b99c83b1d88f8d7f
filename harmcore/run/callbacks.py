"""Hydra callbacks: the sweep's reports when a multirun ends (conf/config.yaml names this class)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from harmcore.report.sweep import aggregate
from harmcore.run.config import LoggerConfig
from harmcore.run.failures import record_failed

log = logging.getLogger("harmcore.report")


class AggregateCallback(Callback):
    """Hydra callback: aggregate the sweep folder when a multirun ends, and the folder of a single
    run that walked a curve (`sparsities=[...]` without -m) when it ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        self._aggregate(Path(config.hydra.sweep.dir), config, "sweep")

    def on_run_end(self, config, **kwargs) -> None:
        if config.get("sparsities"):
            self._aggregate(Path(config.hydra.run.dir), config, "curve")

    @staticmethod
    def _aggregate(folder: Path, config, what: str) -> None:
        if not folder.exists():
            return
        lc = config.get("logger")
        logger_cfg = LoggerConfig(**{k: lc[k] for k in ("name", "project", "entity", "mode")}) if lc else None
        choices = OmegaConf.select(config, "hydra.runtime.choices") or {}
        summary = aggregate(folder, logger_cfg, choices.get("experiment"))
        # Jobs of other processes (submitit) failed there: make the sweep's exit status say so.
        for problem in summary["problems"]:
            record_failed(folder / problem["job"])
        log.info(
            "%s %s: %d points, %d failed, %d missing -> %s",
            what,
            folder,
            summary["n_points"],
            summary["n_failed"],
            summary["n_missing"],
            folder / "curve.csv",
        )
