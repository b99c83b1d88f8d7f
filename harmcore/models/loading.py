"""Loading causal LMs (hub id, local folder, or a model harmcore builds) in eval mode."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import torch

from harmcore.core.offload import offload_store
from harmcore.errors import HarmcoreError
from harmcore.files import HOST, alive, default_cache_dir
from harmcore.models.builders import build
from harmcore.models.config import ModelConfig

log = logging.getLogger("harmcore.models")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarmcoreError(f"model.device={device} but no CUDA device is visible: set model.device=cpu")
    return device


def source_path(spec: ModelConfig, cache_dir: Path | None = None) -> str:
    """The hub id or local folder the weights come from (built into the cache for `builder` models)."""
    path = spec.path
    if not path and not spec.builder:
        raise HarmcoreError(f"model {spec.name} has no path: set model.path to a hub id or a local folder")
    if spec.builder:
        return str(build(spec.builder, cache_dir or default_cache_dir()))
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise HarmcoreError(f"model.path={path} is not a directory: point model.path at a local model folder")
    return path


def _cannot_fetch(path: str) -> HarmcoreError:
    return HarmcoreError(
        f"cannot fetch model {path!r} (offline or gated?): download it and set model.path=/local/dir "
        f"(or set HF_TOKEN for gated models)"
    )


def check_reachable(spec: ModelConfig) -> None:
    """Before any work: with HF_HUB_OFFLINE set, a hub model must already be in the local hub cache
    (one line naming model.path otherwise). Online, the hub answers when the model loads."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")
    if spec.builder or not offline:
        return
    path = source_path(spec)
    if Path(path).expanduser().is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(path, "config.json", revision=spec.revision), str):
        raise _cannot_fetch(path)


# With several GPUs (and host memory, with model.offload), weights fill at most this share of each:
# scoring adds a float32 accumulator per weight beside it (twice a bf16 weight's bytes) and activations.
WEIGHT_SHARE = 0.3


def place(model, spec: ModelConfig, device: str, cache_dir: Path | None = None, host_free: int | None = None) -> None:
    """Put the model where the spec says: an explicit device map, spread over every visible GPU
    (device=auto with more than one, or with model.offload over the GPUs and host memory), or one
    device. Modules mapped to "cpu" beside GPUs, or to "disk", are offloaded: accelerate keeps their
    weights there and loads them onto the GPU for each forward. `host_free`: the host memory available
    before the model was read in (model.offload's budget; measured now when None)."""
    from accelerate import dispatch_model

    if spec.device_map:
        device_map = dict(spec.device_map)
    elif spec.device == "auto" and torch.cuda.is_available() and (torch.cuda.device_count() > 1 or spec.offload):
        device_map = _spread(model, spec, host_free)
    else:
        model.to(device)
        return
    places = {str(d) for d in device_map.values()}
    offload_dir = _offload_dir(cache_dir) if "disk" in places else None
    try:
        dispatch_model(model, device_map=device_map, offload_dir=offload_dir, force_hooks=True)
    except ValueError as err:  # accelerate's word for a map that leaves weights without a device
        if offload_dir is not None:
            shutil.rmtree(offload_dir, ignore_errors=True)
        said = str(err).splitlines()[0]
        raise HarmcoreError(
            f"model.device_map does not place {spec.name}: {said[:240]}{'...' if len(said) > 240 else ''} "
            "(a module's device covers its children; '' covers the whole model)"
        ) from None
    if offload_dir is not None:  # removed with what reads it: the store the offloaded modules' hooks share
        weakref.finalize(offload_store(model) or model, shutil.rmtree, offload_dir, True)
    log.info("%s placed on %s", spec.name, ", ".join(sorted(places)))


def _spread(model, spec: ModelConfig, host_free: int | None = None) -> dict:
    from accelerate import infer_auto_device_map

    n = torch.cuda.device_count()
    budget = {i: int(torch.cuda.mem_get_info(i)[0] * WEIGHT_SHARE) for i in range(n)}
    if spec.offload:
        budget["cpu"] = int((host_free if host_free is not None else _host_free()) * WEIGHT_SHARE)
    no_split = getattr(model, "_no_split_modules", None) or []
    device_map = infer_auto_device_map(model, max_memory=budget, no_split_module_classes=no_split)
    spill = {str(d) for d in device_map.values()} & ({"disk"} if spec.offload else {"cpu", "disk"})
    if spill:
        where = f"{n} GPU{'s' * (n > 1)}" + (" and host memory" if spec.offload else "")
        raise HarmcoreError(
            f"model {spec.name} does not fit in {WEIGHT_SHARE:.0%} of the free memory of {where} (the rest is for "
            "scoring): " + ("" if spec.offload else "set model.offload=true to keep some blocks in host memory, ")
            + "use more GPUs or a smaller dtype"
        )  # fmt: skip
    return device_map


def _host_free() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _offload_dir(cache_dir: Path | None) -> Path:
    """A folder of this process for a model's disk-offloaded weights (removed when nothing reads them,
    or at exit); folders that processes of this host left when they died are removed here (a
    cache shared by several hosts keeps the others')."""
    root = Path(cache_dir or default_cache_dir()) / "offload"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{glob.escape(HOST)}.*-*"):
        pid = old.name[len(HOST) + 1 :].partition("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{HOST}.{os.getpid()}-", dir=root))
    return path


def load(spec: ModelConfig, cache_dir: Path | None = None, rebuilt: bool = False):
    """Load (model, tokenizer) in eval mode; build embedded models into the cache on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.dtype not in DTYPES:
        raise HarmcoreError(f"unknown model.dtype {spec.dtype!r}: use one of {', '.join(DTYPES)}")
    path = source_path(spec, cache_dir)
    device = resolve_device(spec.device)
    kwargs = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    # before the model is read into host memory (mapped from its files or converted): what offloading may use
    host_free = _host_free() if spec.offload else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[spec.dtype], **kwargs)
    except Exception as err:  # transformers and safetensors raise their own types for broken files
        if spec.builder and not rebuilt:  # a model harmcore built, damaged in the cache: build it again
            log.warning("the built model in %s cannot be loaded (%s): building it again", path, type(err).__name__)
            shutil.rmtree(path, ignore_errors=True)
            return load(spec, cache_dir, rebuilt=True)
        if Path(path).expanduser().is_dir():
            raise HarmcoreError(f"cannot load the model in {path}: {str(err).splitlines()[0]}") from err
        if not isinstance(err, OSError | ValueError):
            raise
        raise _cannot_fetch(path) from err
    place(model, spec, device, cache_dir, host_free)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
