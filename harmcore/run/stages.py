"""Cached stages: every stage of a job is done once, then read back.

One mechanism, two stores. `Stages.cached` keeps a stage's JSON-able result in the
content-addressed cache (`<cache_dir>/<kind>/<hash of its defining metadata>.json`), shared by
every job whose stage has the same inputs: calibration responses, generations, NLLs,
judgements. `Stages.marked` keeps it in the job folder (`<job>/stages/<name>.json`) for stages
whose outputs are files of that job (the EM recipe's fine-tunes and samples). Both hold a lock
while they compute, write atomically, and record what was computed and what was read back,
with wall times, for metrics.json.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from harmcore.cache_entries import ENTRY, Check, read_entry, value_digest
from harmcore.files import atomic_write_json, file_lock, key_of

log = logging.getLogger("harmcore.stages")


class Stages:
    """The stages of one job (or recipe): status and seconds per stage, and how they are cached."""

    def __init__(self, cache_dir: Path, job_dir: Path | None = None, label: str = "job"):
        self.cache_dir = Path(cache_dir)
        self.job_dir = Path(job_dir) if job_dir is not None else None
        self.label = label
        self.status: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def record(self, stage: str, status: str, seconds: float) -> None:
        """A stage run twice in one job (two engines started) reports the sum of its times."""
        self.status[stage] = status
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + seconds, 3)

    def total(self) -> float:
        return sum(self.seconds.values())

    def cached(self, kind: str, meta: dict, compute: Callable[[], object], stage: str, expect: Check | None = None):
        """`compute()`'s JSON-able result, stored under <cache_dir>/<kind>/ by the hash of `meta`.

        Locked so that concurrent jobs needing the same entry compute it once; written atomically
        with the sha256 of its value. An entry read back must decode, match its digest and pass
        `expect` (e.g. one string per prompt); one that does not is recomputed, with a warning.
        """
        path = self.cache_dir / kind / f"{key_of(meta)}.json"
        start, inner = time.perf_counter(), self.total()
        with file_lock(path.with_suffix(".lock")):
            if path.exists():
                value, problem = read_entry(path, expect)
                if problem is None:
                    self.record(stage, "cached", time.perf_counter() - start)
                    return value
                log.warning("%s: the cache entry %s %s: computing it again", stage, path, problem)
            value = compute()
            problem = expect(value) if expect else None
            if problem is not None:  # a bug, not a cache problem: never store it
                raise RuntimeError(f"{stage} computed a value that {problem}")
            atomic_write_json(path, {ENTRY: 1, "sha256": value_digest(value), "value": value})
        # stages recorded inside compute (a vLLM engine started for it) are not counted twice
        self.record(stage, "computed", time.perf_counter() - start - (self.total() - inner))
        return value

    def marked(self, name: str, compute: Callable[[], dict]) -> dict:
        """A stage of the job folder: its marker `<job>/stages/<name>.json` is read back when it
        exists; else `compute()` runs (writing the stage's files) and the marker is written last."""
        if self.job_dir is None:
            raise ValueError("marked stages need a job folder: Stages(cache_dir, job_dir)")
        marker = self.job_dir / "stages" / f"{name}.json"
        with file_lock(marker.with_suffix(".lock")):
            if marker.exists():
                self.status[name] = "resumed"
                log.info("stage %s: finished before, skipped", name)
                return json.loads(marker.read_text(encoding="utf-8"))
            start = time.perf_counter()
            result = compute()
            atomic_write_json(marker, result)
        self.record(name, "computed", time.perf_counter() - start)
        print(f"[{self.label}] stage {name} done", flush=True)  # the line tests and logs watch for
        return result
