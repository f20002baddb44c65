"""course_lib.qlora on CPU: tiny Llama models in 4-bit NF4, the smoke path, and every bad-input message."""

import pytest
import torch

from course_lib import models, qlora


def test_presets_and_auto_on_cpu(monkeypatch, capsys):
    monkeypatch.setattr(qlora, "bnb_status", lambda: (False, "no CUDA GPU is visible to PyTorch"))
    assert qlora.choose_preset("auto").name == "smoke"
    assert "smoke" in capsys.readouterr().out
    with pytest.raises(qlora.GPUNeededError, match="T4 GPU.*'smoke'"):
        qlora.choose_preset("synthetic-7b")
    with pytest.raises(ValueError, match="unknown preset 'x7b'"):
        qlora.choose_preset("x7b")


def test_bnb_status_messages(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert qlora.bnb_status() == (False, "no CUDA GPU is visible to PyTorch")
    from bitsandbytes import cextension

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cextension, "BNB_BACKEND", "CPU")
    ok, why = qlora.bnb_status()
    assert not ok and "CPU library, not its CUDA one" in why and "pip install -U bitsandbytes" in why


def test_training_arguments_cpu_and_bf16_on_t4(monkeypatch, capsys, tmp_path):
    args = qlora.training_arguments(tmp_path, torch.device("cpu"), torch.float32, steps=2, lr=1e-3, batch_size=1)
    assert args.optim.value == "adamw_torch" and not args.fp16 and not args.bf16
    assert "paged optimizers need CUDA" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    with pytest.raises(ValueError, match="Tesla T4.*fp16=True"):
        qlora.training_arguments(tmp_path, torch.device("cuda", 0), torch.bfloat16, steps=2, lr=1e-3, batch_size=1)


def test_predictions_and_too_large():
    c7 = models.synthetic_config("llama-2-7b")
    default, lean = (qlora.predict_peak(c7, p) for p in qlora.PREPS)
    assert lean.total_bytes < 0.9 * default.total_bytes
    assert default.total_bytes < 15 * 2**30
    # fp32 compute (a CPU): nothing to keep lean, the two coincide in weights
    assert qlora.predict_peak(c7, "lean", compute_dtype=torch.float32).weights == \
        qlora.predict_peak(c7, "default", compute_dtype=torch.float32).weights
    with pytest.raises(ValueError, match="prep must be one of"):
        qlora.predict_peak(c7, "tiny")
    big = qlora.predict_peak(models.synthetic_config("llama-2-70b"), "default")
    with pytest.raises(qlora.ModelTooLargeError, match="70B is predicted.*is available. Ways out"):
        qlora.check_fits(big, 15 * 2**30, "70B")


@pytest.fixture(scope="module")
def tiny_4bit(tmp_path_factory, chat_tokenizer):
    folder = tmp_path_factory.mktemp("tiny")
    models.tiny_model("llama").save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    preset = qlora.Preset("tiny", str(folder), needs_gpu=False, seq_len=16, batch_size=2, steps=2, lr=1e-3)
    return preset


def test_smoke_path_lean_then_default(tiny_4bit):
    from peft import get_peft_model

    device, dtype = qlora.setup_device(tiny_4bit)
    model, _ = qlora.load_4bit(tiny_4bit, device, dtype)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    model = qlora.prepare(model, "lean")
    peft_model = get_peft_model(model, qlora.lora_config(4, 8, ("q_proj", "v_proj")))
    data = qlora.random_token_dataset(model.config.vocab_size, 16, 4)
    assert len(data) == 4 and len(data[0]["input_ids"]) == 16
    result = qlora.train(peft_model, data, device, dtype, steps=2, lr=1e-3, batch_size=2)
    assert result.steps == 2 and len(result.history) == 2 and result.tokens == 64
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.history)
    caveat = qlora.merge_caveat(peft_model)
    assert caveat["weight_shape"] == (64, 64) and "share of ΔW kept after re-quantizing to NF4" in caveat
    model = qlora.prepare(peft_model.unload(), "default")
    assert model.get_input_embeddings().weight.dtype == torch.float32
    with pytest.raises(ValueError, match="prep must be one of"):
        qlora.prepare(model, "fast")
    with pytest.raises(ValueError, match="no LoRA layer on a 4-bit"):
        qlora.merge_caveat(models.tiny_model("llama"))


def test_merge_unquantized_refuses_synthetic():
    with pytest.raises(ValueError, match="synthetic preset"):
        qlora.merge_unquantized(qlora.PRESETS["synthetic-7b"], "/nonexistent")
