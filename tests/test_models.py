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
