"""What every stage of a job is given (`JobContext`), and the two model calls stages cache:
generations and per-example reference losses.

Both are keyed by the weights as they are at the time (dense, or the content hash of the
applied mask), so the dense baseline of a sweep is computed once and every point reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harmcore.cache_entries import one_per
from harmcore.core.losses import response_nll
from harmcore.data.examples import Example, FormatSpec, data_hash
from harmcore.files import default_cache_dir
from harmcore.generation.base import Generator, Request, Sampling
from harmcore.run.config import Config
from harmcore.run.session import LoadedModel, Session
from harmcore.run.stages import Stages

log = logging.getLogger("harmcore.job")


def cache_dir_of(cfg: Config) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def format_of(cfg: Config) -> FormatSpec:
    """How calibration and reference examples become token ids (data.format, data.max_length)."""
    return FormatSpec(kind=cfg.data.format, max_length=cfg.data.max_length, add_bos=cfg.data.add_bos)


@dataclass
class JobContext:
    """One job's settings, the process's session and the job's stages."""

    cfg: Config
    session: Session
    stages: Stages

    @classmethod
    def create(cls, cfg: Config, session: Session, job_dir: Path | None = None, label: str = "job") -> JobContext:
        return cls(cfg, session, Stages(cache_dir_of(cfg), job_dir, label))

    @property
    def cache_dir(self) -> Path:
        return self.stages.cache_dir

    @property
    def fmt(self) -> FormatSpec:
        return format_of(self.cfg)

    def model(self) -> LoadedModel:
        """The job's model (loaded once per session)."""
        start = time.perf_counter()
        lm = self.session.model(self.cfg.model, self.cache_dir)
        self.stages.record("load_model", "done", time.perf_counter() - start)
        return lm

    def responder(self, lm: LoadedModel) -> LoadedModel:
        """The model that writes calibration responses: the job's own, or `data.responses_from`."""
        return self.session.responder(lm, self.cfg.data.responses_from, self.cache_dir)

    def generator(self, lm: LoadedModel) -> Generator:
        return self.session.generator(lm, self.cfg, self.stages)

    def generate(
        self, lm: LoadedModel, prompts, sampling: Sampling, mask_key: str, stage: str, prefixes=None
    ) -> list[str]:
        """Responses of the model (dense, or masked as named by `mask_key`) to prompts, each continuing
        its prefix where `prefixes` gives one (prefilling); cached on disk."""
        prefixes = list(prefixes) if prefixes else [""] * len(prompts)
        meta = {
            **lm.weights_meta(mask_key),
            "prompts": hashlib.sha256(json.dumps([p.text for p in prompts]).encode()).hexdigest()[:16],
            "sampling": json.dumps(sampling.key(), sort_keys=True),
            "prompt_format": lm.spec.prompt_format,
            "backend": self.cfg.generation.backend,
        }
        if any(prefixes):  # entries without prefixes keep their key
            meta["prefixes"] = hashlib.sha256(json.dumps(prefixes).encode()).hexdigest()[:16]

        def compute():
            gen = self.generator(lm)
            tokens, start = gen.stats["tokens"], time.perf_counter()
            outputs = gen.generate([Request(p.text, x) for p, x in zip(prompts, prefixes, strict=True)], sampling)
            rate = (gen.stats["tokens"] - tokens) / max(time.perf_counter() - start, 1e-9)
            log.info("%s: %d generations, %.1f tok/s", stage, len(outputs), rate)
            return outputs

        return self.stages.cached("generations", meta, compute, stage, one_per(len(prompts)))

    def nll(self, lm: LoadedModel, examples: list[Example], mask_key: str, stage: str) -> list[float]:
        """Per-example response NLL (nats/token) of the model, dense or masked; cached, so a sweep's
        baseline is computed once."""
        fmt = self.fmt
        meta = {**lm.weights_meta(mask_key), "data": data_hash(examples), "format": json.dumps(asdict(fmt))}

        def compute():
            batch = self.cfg.scorer.batch_size
            return response_nll(lm.model, lm.tokenizer, examples, fmt, 4 if batch == "auto" else batch)

        return self.stages.cached("nll", meta, compute, stage, one_per(len(examples), (int, float)))
