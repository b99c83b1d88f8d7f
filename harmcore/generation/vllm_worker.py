"""Runs inside vLLM's workers: swap a few weight matrices in place.

`LLM(..., worker_extension_cls="harmcore.generation.vllm_worker.WeightSwap")` mixes this class into
every worker; `llm.collective_rpc("harmcore_load", ...)` then calls it on each one (all
tensor-parallel ranks). Tensors arrive under their Hugging Face checkpoint names and go
through vLLM's own `reload_weights`, so vLLM handles its fused (qkv, gate_up), sharded
and, on CPU, repacked layouts. The caller must send every member of a fused group
(q, k and v together; gate and up together) with its bias: vLLM rebuilds a fused layer
from whatever it received, and a partial group would leave the rest undefined.

Kept free of harmcore imports: workers may be fresh processes.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

# vLLM warns once per layer it was not sent ("Failed to load weights", "weights were not
# loaded"): expected for a partial reload, so these loggers are quieted during one.
_RELOAD_LOGGERS = (
    "vllm.model_executor.model_loader.reload.inplace",
    "vllm.model_executor.model_loader.reload.layerwise",
)


@contextmanager
def _quiet_reload():
    loggers = [logging.getLogger(name) for name in _RELOAD_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class WeightSwap:
    """Worker mix-in (vLLM `worker_extension_cls`): in-place partial weight reloads."""

    def harmcore_packed_modules(self) -> dict[str, list[str]]:
        """The model's fused groups, e.g. {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}."""
        model = self.model_runner.get_model()
        return {k: list(v) for k, v in (getattr(model, "packed_modules_mapping", None) or {}).items()}

    def harmcore_load(self, tensors=None, path: str | None = None) -> int:
        """Load `tensors` (name -> tensor, checkpoint names) or the safetensors file at `path`.

        Returns the number of tensors loaded. Values are copied into vLLM's own storage.
        """
        if tensors is None:
            from safetensors.torch import load_file

            tensors = load_file(path)
        items = sorted(tensors.items())
        with _quiet_reload():
            self.reload_weights(weights_iterator=iter(items), is_checkpoint_format=True)
        return len(items)
