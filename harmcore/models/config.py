"""The one description of a model: where it comes from, how to load it, and what it is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harmcore.errors import HarmcoreError

PROMPT_FORMATS = ("chat", "qa", "newline")


@dataclass
class ModelConfig:
    name: str = "???"  # short name: output folders, W&B groups
    path: str = ""  # hub id or local folder (set this to a local copy when offline)
    revision: str | None = None  # hub branch/tag/commit; pin it for reproducible caches
    # Built locally, `path` unused: a name of harmcore.models.builders.BUILDERS
    builder: str | None = None
    dtype: str = "float32"  # float32 on CPU; bfloat16 on GPU
    device: str = "auto"  # auto picks cuda when visible; with several GPUs, the layers are spread over them
    # An explicit placement, module name -> device (e.g. {model.layers.0: cuda:0, ..., lm_head: cuda:1}):
    # the model is dispatched with accelerate (hooks move activations between devices)
    device_map: Any = None  # typed loosely: Hydra merges a {module: device} override into it
    # harmcore's extension: with device=auto and GPUs, blocks that do not fit the GPUs are kept in host
    # memory and loaded onto a GPU for each forward (slower; a map's "cpu" beside GPUs and "disk" do the same)
    offload: bool = False
    trust_remote_code: bool = False  # never on unless you trust the repository's code
    aligned: bool = True  # instruct/chat-tuned (True) or base (False)
    counterpart: str | None = None  # config name of the unaligned (base) or aligned partner
    family: str = ""  # groups pairs and ladders in reports
    # chat: the chat template; qa: "Q: {prompt}\nA:" (base models); newline: "{prompt}\n", the text the
    # authors' code gives base models (generation.base_prompt=newline turns qa models into newline ones)
    prompt_format: str = "chat"

    def __post_init__(self) -> None:
        if self.device_map is not None and not hasattr(self.device_map, "items"):
            raise HarmcoreError(
                f"model.device_map={self.device_map!r}: give module name -> device, e.g. {{model.layers.0: cuda:0}}"
            )
        for module, where in (self.device_map or {}).items():
            if not re.fullmatch(r"cpu|disk|mps|cuda(:\d+)?|\d+", str(where)):
                raise HarmcoreError(f"model.device_map puts {module} on {where!r}: use cuda:N (or N), cpu, disk or mps")
        if self.offload and self.device != "auto" and not self.device_map:
            raise HarmcoreError(
                f"model.offload=true has no effect with model.device={self.device}: it spreads the model over the "
                "GPUs and host memory, so set model.device=auto (or place modules with model.device_map)"
            )
        if self.prompt_format not in PROMPT_FORMATS:
            raise HarmcoreError(f"model.prompt_format={self.prompt_format}: use one of {', '.join(PROMPT_FORMATS)}")
        if self.builder and self.path:
            raise HarmcoreError(
                f"model.path={self.path} has no effect: model {self.name} is built by harmcore "
                f"(model.builder={self.builder}); to load a folder set model.builder=null too"
            )
