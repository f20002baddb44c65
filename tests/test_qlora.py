"""course_lib.qlora on CPU: tiny Llama models in 4-bit NF4, the smoke path, and every bad-input message."""

from dataclasses import replace

import pytest
import torch

from course_lib import data, memory, models, qlora, training


def test_presets_and_auto_on_cpu(monkeypatch, capsys):
    monkeypatch.setattr(qlora, "bnb_status", lambda: (False, "no CUDA GPU is visible to PyTorch"))
    assert qlora.choose_preset("auto").name == "smoke"
    assert "smoke" in capsys.readouterr().out
    with pytest.raises(qlora.GPUNeededError, match="T4 GPU.*'smoke'"):
        qlora.choose_preset("synthetic-7b")
    with pytest.raises(ValueError, match="unknown preset 'x7b'"):
        qlora.choose_preset("x7b")


def _a_gpu(monkeypatch, name="Tesla T4", capability=(7, 5), arch_list=("sm_75", "sm_80", "sm_86", "sm_90")):
    """torch as it looks with a CUDA GPU (on this CPU machine: the calls bnb_status and gpu_problem make)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))
    monkeypatch.setattr(torch.version, "cuda", "12.8")


def test_bnb_status_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert qlora.bnb_status() == (False, "no CUDA GPU is visible to PyTorch")


def test_bnb_status_sees_the_stand_in_bitsandbytes_puts_in_place_of_a_failed_cuda_library(monkeypatch):
    """bitsandbytes 0.50.2 (cextension.py): BNB_BACKEND is "CUDA" whenever torch sees a GPU; when its CUDA library
    then fails to load, cextension.lib is an ErrorHandlerMockBNBNativeLibrary that raises at the first 4-bit
    call. Here that very object, built from the error bitsandbytes reports for a missing CUDA runtime."""
    from bitsandbytes import cextension

    _a_gpu(monkeypatch)
    monkeypatch.setattr(cextension, "BNB_BACKEND", "CUDA")  # what bitsandbytes sets: it says nothing
    stand_in = cextension.ErrorHandlerMockBNBNativeLibrary(
        "libcudart.so.12: cannot open shared object file: No such file or directory")
    with pytest.raises(RuntimeError, match="Native code method attempted to call"):
        stand_in.cquantize_blockwise_fp16_nf4()  # the failure the course must report before it happens
    monkeypatch.setattr(cextension, "lib", stand_in)
    ok, why = qlora.bnb_status()
    assert not ok and "could not load its CUDA library (libcudart.so.12: cannot open shared object file" in why
    assert "CUDA 12.8: pip install -U bitsandbytes" in why and "restart the session" in why
    with pytest.raises(qlora.GPUNeededError, match="could not load its CUDA library.*Runtime > Change runtime"):
        qlora.choose_preset("t4")


def test_bnb_status_names_a_cpu_library_on_a_gpu_machine(monkeypatch):
    from bitsandbytes import cextension

    _a_gpu(monkeypatch)
    assert type(cextension.lib).__name__ == "BNBNativeLibrary"  # this CPU machine: the real CPU library object
    ok, why = qlora.bnb_status()
    assert not ok and "loaded its CPU library, not a CUDA one" in why and "pip install -U bitsandbytes" in why


def test_bnb_status_runs_a_4bit_op_once_the_cuda_library_loaded(monkeypatch):
    from bitsandbytes import cextension

    _a_gpu(monkeypatch)
    loaded = object.__new__(cextension.CudaBNBNativeLibrary)  # its class says compiled_with_cuda; no CDLL here
    monkeypatch.setattr(cextension, "lib", loaded)
    monkeypatch.setattr(qlora, "_tiny_4bit_roundtrip", lambda: None)
    assert qlora.bnb_status() == (True, "bitsandbytes 0.50.2 with its CUDA library, on Tesla T4")

    def fails():
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(qlora, "_tiny_4bit_roundtrip", fails)
    ok, why = qlora.bnb_status()
    assert not ok and "4-bit quantize/dequantize on Tesla T4 failed (RuntimeError: CUDA error: no kernel image" in why


@pytest.mark.parametrize("name, capability, arch_list, message", [
    ("Tesla P100-PCIE-16GB", (6, 0), ("sm_50", "sm_60", "sm_70", "sm_75"),
     "Tesla P100-PCIE-16GB has compute capability 6.0; the course's GPU code (bitsandbytes 4-bit) needs 7.5 or newer"),
    ("Tesla K80", (3, 7), ("sm_75", "sm_80"), "Tesla K80 has compute capability 3.7;"),
    ("NVIDIA B200", (10, 0), ("sm_75", "sm_80", "sm_86", "sm_90"),
     "NVIDIA B200 (compute capability 10.0) is not a GPU this PyTorch build has kernels for"),
])
def test_an_old_or_unbuilt_gpu_is_named_with_the_way_out(monkeypatch, name, capability, arch_list, message):
    from course_lib import hardware

    _a_gpu(monkeypatch, name, capability, arch_list)
    assert message in hardware.gpu_problem() and "Runtime > Change runtime type > T4 GPU" in hardware.gpu_problem()
    ok, why = qlora.bnb_status()
    assert not ok and message in why


@pytest.mark.parametrize("capability, arch_list, runs", [
    ((7, 5), ["sm_75", "sm_80"], True),
    ((8, 9), ["sm_75", "sm_80", "sm_86", "sm_90"], True),  # an L4 runs sm_86 binaries
    ((8, 0), ["sm_86", "sm_90"], False),  # an sm_86 binary needs 8.6 or newer in the 8.x family
    ((12, 0), ["sm_90", "compute_90"], True),  # PTX, compiled by the driver for a newer GPU
    ((10, 0), ["sm_90", "sm_90a"], False),
])
def test_arch_list_rule(capability, arch_list, runs):
    from course_lib import hardware

    assert hardware.arch_runs_on(capability, arch_list) is runs


def test_a_supported_gpu_has_no_problem(monkeypatch):
    from course_lib import hardware

    _a_gpu(monkeypatch, "NVIDIA L4", (8, 9))
    assert hardware.gpu_problem() is None


def test_training_arguments_cpu_and_bf16_on_t4(monkeypatch, tmp_path):
    args = training.training_arguments(tmp_path, steps=2, lr=1e-3, batch_size=1)
    assert "paged" not in args.optim.value and not args.fp16 and not args.bf16 and args.use_cpu
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    with pytest.raises(ValueError, match="Tesla T4.*fp16=True"):
        training.training_arguments(tmp_path, steps=2, lr=1e-3, batch_size=1, device=torch.device("cuda", 0),
                                    compute_dtype=torch.bfloat16)


def test_t4_preset_is_the_committed_gpu_run_with_another_model():
    """The notebook's committed GPU run and a Colab student's t4 run execute the same code and settings."""
    t4, committed = qlora.PRESETS["t4"], qlora.PRESETS["t4-smollm2-135m"]
    assert committed.model == models.DEFAULT_MODEL and t4.model != committed.model
    assert replace(committed, name="t4", model=t4.model) == t4


def test_prep_is_fp32_residual_on_fp16_gpus():
    assert qlora.choose_prep(torch.device("cuda", 0), torch.float16) == "default"
    assert qlora.choose_prep(torch.device("cuda", 0), torch.bfloat16) == "lean"
    assert qlora.choose_prep(torch.device("cpu"), torch.float32) == "lean"


def test_predict_peak_is_the_memory_model_with_the_preparation_named():
    c7 = models.synthetic_config("llama-3.2-1b")  # a large vocabulary: the loss is the peak
    kw = dict(batch_size=2, seq_len=256, compute_dtype=torch.float16)
    default = memory.estimate_training_memory(c7, "qlora", autocast=True, **kw)
    assert qlora.predict_peak(c7, "default", **kw).total_bytes == default.total_bytes
    lean = memory.estimate_training_memory(c7, "qlora", upcast_non_quantized=False, **kw)
    assert qlora.predict_peak(c7, "lean", **kw).total_bytes == lean.total_bytes
    # under autocast the fp32 head of the default preparation is copied to fp16 for its matmul: one V x h more
    plain = memory.estimate_training_memory(c7, "qlora", **kw)
    assert default.peak_phase == plain.peak_phase == "loss (logits backward)"
    assert default.logits - plain.logits == memory._alloc(2 * c7.vocab_size * c7.hidden_size)


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
    rows = data.random_token_rows(model.config.vocab_size, 16, 4)
    assert len(rows) == 4 and len(rows[0]["input_ids"]) == 16
    result = training.train(peft_model, rows, steps=2, lr=1e-3, batch_size=2)
    assert result.steps == 2 and len(result.history) == 2 and result.tokens == 64
    assert result.max_batch_shape == (2, 16) and len(result.step_seconds) == 2 and result.step_tokens == [32, 32]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.history)
    # the coarser the format, the more of the update is lost to rounding: fp16 (11 bits) < bf16 (8) < NF4
    share = qlora.merge_precision(peft_model)
    assert share["float16"]["error"] < share["bfloat16"]["error"] < share["nf4"]["error"]
    assert share["float16"]["error"] < 0.05 and abs(share["float16"]["kept"] - 1) < 0.05
    with pytest.raises(ValueError, match="unknown format"):
        qlora.merge_precision(peft_model, formats=("int3",))
    model = qlora.prepare(peft_model.unload(), "default")
    assert model.get_input_embeddings().weight.dtype == torch.float32
    with pytest.raises(ValueError, match="prep must be one of"):
        qlora.prepare(model, "fast")
    with pytest.raises(ValueError, match="no LoRA layer found"):
        qlora.lora_updates(models.tiny_model("llama"))


def test_a_small_update_rounds_back_onto_the_nf4_grid_it_started_from():
    # notebook 07's merged weights stored in NF4 keep ~0 of the update: W was already on the NF4 grid
    import bitsandbytes.functional as F

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(256, 256, generator=gen) * 0.02
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
    on_grid = F.dequantize_4bit(packed, state).float()
    delta = torch.randn(256, 256, generator=gen) * 0.02 * 0.01  # 1% of a weight: far under half an NF4 level
    grid = qlora.update_shares([(on_grid, delta)], ("nf4", "float32"))
    off = qlora.update_shares([(w, delta)], ("nf4",))
    assert grid["nf4"]["unchanged"] == 1.0 and grid["nf4"]["kept"] < 0.1  # every code rounds back
    assert 0.8 < off["nf4"]["kept"] < 1.2 and off["nf4"]["unchanged"] < 1.0  # off the grid: unbiased on average
    assert grid["float32"]["kept"] == pytest.approx(1, abs=1e-3) and grid["float32"]["unchanged"] < 0.01


def test_dequantized_merge_reproduces_the_trained_4bit_model(tiny_4bit, tmp_path):
    """The adapter learned to correct Q(W): merged into the dequantized 4-bit weights it gives the same outputs as
    4-bit base + adapter; merged into the original weights it does not."""
    from peft import get_peft_model

    device, dtype = qlora.setup_device(tiny_4bit)
    model, _ = qlora.load_4bit(tiny_4bit, device, dtype)
    peft_model = get_peft_model(qlora.prepare(model, "lean"), qlora.lora_config(4, 8, ("q_proj", "v_proj")))
    training.train(peft_model, data.random_token_rows(peft_model.config.vocab_size, 16, 8), steps=4, lr=1e-2,
                   batch_size=2)
    folder = training.save_adapter(peft_model, tmp_path / "adapter")
    ids = torch.tensor([data.random_token_rows(peft_model.config.vocab_size, 16, 1, seed=1)[0]["input_ids"]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        dequant = qlora.merged_model(tiny_4bit, folder, "16-bit dequantized 4-bit", device, dtype)(input_ids=ids).logits
        original = qlora.merged_model(tiny_4bit, folder, "16-bit original", device, dtype)(input_ids=ids).logits
    # (exact on a GPU; bitsandbytes' CPU matmul keeps the bf16-stored tiny model's rounding, so: much closer)
    assert (original - expected).abs().mean() > 3 * (dequant - expected).abs().mean()
    with pytest.raises(ValueError, match="base must be one of"):
        qlora.merged_model(tiny_4bit, folder, "8-bit", device, dtype)


def test_merged_model_refuses_synthetic():
    with pytest.raises(ValueError, match="synthetic preset"):
        qlora.merged_model(qlora.PRESETS["synthetic-7b"], "/nonexistent", "16-bit original", torch.device("cpu"),
                           torch.float32)


def test_load_model_refuses_other_bit_widths(tiny_4bit):
    with pytest.raises(ValueError, match="bits must be 4"):
        qlora.load_model(tiny_4bit, torch.device("cpu"), torch.float32, bits=8)


def test_training_that_moves_no_parameter_is_refused(tiny_4bit):
    """A run whose adapters receive no update (here lr=0; on a CPU also a 4-bit model that generated text first,
    in bitsandbytes 0.50) must not pass as trained."""
    from peft import get_peft_model

    device, dtype = qlora.setup_device(tiny_4bit)
    model, _ = qlora.load_4bit(tiny_4bit, device, dtype)
    peft_model = get_peft_model(qlora.prepare(model, "lean"), qlora.lora_config(4, 8, ("q_proj", "v_proj")))
    with pytest.raises(RuntimeError, match="no trainable parameter changed"):
        training.train(peft_model, data.random_token_rows(peft_model.config.vocab_size, 16, 4), steps=2, lr=0.0,
                       batch_size=2)
