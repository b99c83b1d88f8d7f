"""What one process keeps between the jobs it runs: the `Session`.

With Hydra's basic launcher every job of a sweep runs in one process, so the model is loaded
once, scores are read once and one vLLM engine serves every point. The session owns all of
that, explicitly: the entry point makes one and passes it to every job; a test makes its own.

    model       the job's model (one at a time; loading another drops scores and engines)
    responder   the model that writes calibration responses when it is not the job's own
    scores      score sets by cache path, least recently used dropped first
    selectors   set-difference selectors, so the points of a sweep share sorted candidates
    engines     vLLM engines, one per (model, engine settings), following the HF model's masks
    measure     what the measurement suite keeps (loaded judge models, template digests)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

import torch

from harmcore.core.offload import offloaded_params
from harmcore.core.selection import SetDifference
from harmcore.core.weights import fingerprint
from harmcore.data.examples import leading_special_ids
from harmcore.errors import HarmcoreError
from harmcore.generation import vllm_engine
from harmcore.generation.base import Generator
from harmcore.generation.hf import HFGenerator
from harmcore.models import loading
from harmcore.models.config import ModelConfig

log = logging.getLogger("harmcore.session")

# Each score set is a model-sized fp32 copy: a cross-domain sweep keeps the preserve set and
# the last harm sets (least recently used dropped first), not one per domain seen. A job that
# intersects domain masks keeps one more per domain, so its sweep points share them.
MAX_SCORE_SETS = 3
MAX_SELECTORS = 2


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    spec: ModelConfig
    fingerprint: str  # of the dense weights, taken at load time
    _lead: list[int] | None = field(default=None, repr=False)

    @property
    def model_id(self) -> str:
        return f"{self.spec.path or self.spec.builder}@{self.spec.revision or 'default'}"

    def prompt_lead(self) -> dict:
        """The special tokens before every plain (Q/A, raw) prompt, in cache keys when there are any."""
        if self._lead is None:
            self._lead = leading_special_ids(self.tokenizer)
        return {"prompt_lead": self._lead} if self._lead else {}

    def identity(self) -> dict:
        """The cache identity of the dense weights: model id, fingerprint and prompt lead."""
        return {"model": self.model_id, "weights": self.fingerprint, **self.prompt_lead()}

    def made_on(self) -> dict[str, str]:
        """What a mask saved for these weights records of them (checked when it is applied elsewhere)."""
        return {"model": self.model_id, "weights": self.fingerprint}

    def weights_meta(self, mask_key: str) -> dict:
        """The cache identity of the weights as they are now: dense, or masked by `mask_key`."""
        return {"model": self.model_id, "weights": self.fingerprint, "mask": mask_key, **self.prompt_lead()}


def load_model(spec: ModelConfig, cache_dir) -> LoadedModel:
    start = time.perf_counter()
    model, tok = loading.load(spec, cache_dir)
    log.info("loaded %s in %.1fs", spec.name, time.perf_counter() - start)
    return LoadedModel(model, tok, spec, fingerprint(model))


def remember(store: dict, key, value, limit: int) -> None:
    """Insert `value` as the most recent entry, dropping the least recent beyond `limit`."""
    store.pop(key, None)
    while len(store) >= limit:
        store.pop(next(iter(store)))
    store[key] = value


def _key(*objs) -> str:
    return json.dumps([asdict(o) for o in objs], sort_keys=True)


class Session:
    """The models, scores, selectors and engines one process keeps between jobs (see module docstring)."""

    def __init__(self) -> None:
        self._model: dict[str, LoadedModel] = {}
        self._responder: dict[str, LoadedModel] = {}
        self.scores: dict[str, dict[str, torch.Tensor]] = {}
        self.selectors: dict[tuple, SetDifference] = {}
        self.engines: dict[str, Generator] = {}
        # Per live HF model (by id): parameters whose values now differ from its checkpoint (a mask
        # is applied); an engine started from the checkpoint at such a moment is told to sync them.
        self.modified: dict[int, set[str]] = {}
        self.measure: dict = {}

    def __reduce__(self):
        # A session is the state of one process: it pickles as a new, empty one. (submitit pickles
        # the entry point's function by value, with its globals, into every (re)submission file.)
        return (Session, ())

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def model(self, spec: ModelConfig, cache_dir) -> LoadedModel:
        """The loaded model of `spec`; loading another one first drops the old one's scores and engines."""
        key = _key(spec)
        if key not in self._model:
            self._model.clear()
            self.scores.clear()
            self.selectors.clear()
            self.close_engines()
            self._model[key] = load_model(spec, cache_dir)
        return self._model[key]

    def responder(self, lm: LoadedModel, spec: ModelConfig | None, cache_dir) -> LoadedModel:
        """The model that writes calibration responses: `lm` itself, or `spec` held in a second slot
        (its answers are cached, but their cache key needs its weights' fingerprint)."""
        if spec is None or asdict(spec) == asdict(lm.spec):
            return lm
        key = _key(spec)
        if key not in self._responder:
            self._responder.clear()
            self._responder[key] = load_model(spec, cache_dir)
        return self._responder[key]

    def generator(self, lm: LoadedModel, cfg, stages) -> Generator:
        """The job's generator: HF on the live model, or this session's vLLM engine for the model.

        A vLLM engine is started once per model and settings and serves every job of the session;
        it follows the HF model's weights through `weights_changed`.
        """
        g = cfg.generation
        if g.backend == "hf":
            return HFGenerator(lm.model, lm.tokenizer, lm.spec.prompt_format, g.batch_size, progress=True)
        spec = lm.spec
        if offloaded_params(lm.model):
            raise HarmcoreError(
                f"generation=vllm needs the whole of {spec.name} on GPUs, but some of its blocks are offloaded "
                "(model.offload, or cpu/disk in model.device_map): use generation=hf, or more GPUs"
            )
        engine_cfg = asdict(g.vllm)
        if engine_cfg["tensor_parallel_size"] == "auto":  # the GPUs the HF model is spread over
            engine_cfg["tensor_parallel_size"] = vllm_engine.matching_tensor_parallel(lm.model)
        settings = vllm_engine.EngineSettings(
            dtype=spec.dtype, seed=cfg.seed, trust_remote_code=spec.trust_remote_code, **engine_cfg
        )
        key = _key(spec, settings)
        start = time.perf_counter()
        if key in self.engines:
            stages.status.setdefault("vllm_engine", "reused")
            return self.engines[key]
        self.close_engines()
        path = loading.source_path(spec, stages.cache_dir)
        engine = vllm_engine.VLLMGenerator(path, lm.tokenizer, lm.model, spec.prompt_format, settings, spec.revision)
        engine.progress = True
        engine.weights_changed(self.modified.get(id(lm.model), set()))
        self.engines[key] = engine
        stages.record("vllm_engine", "started", time.perf_counter() - start)
        log.info("vLLM engine for %s started in %.1fs", spec.name, engine.startup_seconds)
        return engine

    def weights_changed(self, lm: LoadedModel, names: list[str], restored: bool = False) -> None:
        """Tell the engines serving `lm` that these parameters changed (masked, or `restored` to the checkpoint).

        Engines are looked up now, not kept by the caller: another model's engine (the calibration
        responder's) may have replaced the one a job started with, and the new one starts from the
        checkpoint, so it is told what still differs from it when it starts.
        """
        modified = self.modified.setdefault(id(lm.model), set())
        if restored:
            modified.difference_update(names)
        else:
            modified.update(names)
        for engine in self.engines.values():
            if getattr(engine, "source", None) is lm.model:
                engine.weights_changed(names)

    def close_engines(self) -> None:
        """Shut down every vLLM engine of this session."""
        while self.engines:
            self.engines.popitem()[1].close()

    def close(self) -> None:
        """Shut down the engines and drop every model and score set."""
        self.close_engines()
        self._model.clear()
        self._responder.clear()
        self.scores.clear()
        self.selectors.clear()
        self.modified.clear()
        self.measure.clear()
