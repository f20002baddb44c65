"""QLoRA on a GPU (notebook 07): 4-bit NF4 weights, double quantization, LoRA adapters, a paged optimizer.

The recipe, one function a step: ``choose_preset`` (what to run where), ``setup_device`` (T4 limits on a bigger
GPU), ``load_4bit`` (``models.nf4_config``), ``choose_prep`` and ``prepare`` (PEFT's default k-bit preparation or a
lean one), ``lora_config``, then ``training.train`` (the course's one training wrapper: paged AdamW and fp16/bf16
by GPU, memory and step times measured, stop at a non-finite loss). ``predict_peak`` predicts the peak with
``course_lib.memory`` before anything is loaded and ``check_fits`` refuses a run that cannot fit. After training:
``merged_model`` merges the adapter into 16-bit weights (the original ones, or the dequantized 4-bit ones the
adapter was trained against) and ``merge_precision`` measures what storing a merged layer keeps of the update.

Presets (``PRESETS``): ``smoke`` runs on a CPU (the embedded SmolLM2-135M in 4-bit, a few steps; what CI runs);
``t4`` fine-tunes SmolLM2-1.7B-Instruct from the hub on a free Colab T4; ``t4-smollm2-135m`` is the same run with
the embedded 135M model (the GPU run the committed notebook shows: no download); ``synthetic-7b`` /
``synthetic-1b`` load random weights of the Llama-2-7B / Llama-3.2-1B shape through the same 4-bit path (no
download; memory and speed do not depend on the weights' values).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from course_lib import data, hardware, memory, models, training

GiB = 2**30
PREPS = ("default", "lean")
T4 = "T4"  # the key of memory.GPU_GIB whose limits the t4_like presets impose


class GPUNeededError(RuntimeError):
    """A GPU-only preset or step was asked for where there is no usable CUDA GPU (or no bitsandbytes for it)."""


class ModelTooLargeError(MemoryError):
    """The predicted peak memory of a run is more than the memory available; raised before loading anything."""


# ------------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    name: str
    model: str  # a hub name / folder, or "synthetic:<shape>" (course_lib.models.SYNTHETIC_SHAPES)
    needs_gpu: bool
    seq_len: int  # tokens per row (real data: the longest row allowed)
    batch_size: int
    steps: int
    lr: float
    t4_like: bool = False  # cap GPU memory at a T4's and compute in fp16, whatever the GPU
    r: int = 8
    alpha: int = 16
    targets: tuple = ("q_proj", "v_proj")
    eval_rows: int | None = None  # held-out rows scored before/after (None: all of them)

    @property
    def synthetic(self) -> str | None:
        return self.model.split(":", 1)[1] if self.model.startswith("synthetic:") else None


_T4 = Preset("t4", "HuggingFaceTB/SmolLM2-1.7B-Instruct", needs_gpu=True, seq_len=256, batch_size=4, steps=60,
             lr=2e-4, t4_like=True)
PRESETS = {
    "smoke": Preset("smoke", models.DEFAULT_MODEL, needs_gpu=False, seq_len=256, batch_size=2, steps=4, lr=2e-3,
                    eval_rows=8),
    "t4": _T4,
    # the committed GPU run: the t4 preset with only the model changed (tests/test_qlora.py checks that)
    "t4-smollm2-135m": replace(_T4, name="t4-smollm2-135m", model=models.DEFAULT_MODEL),
    "synthetic-7b": Preset("synthetic-7b", "synthetic:llama-2-7b", needs_gpu=True, seq_len=512, batch_size=1,
                           steps=25, lr=2e-4, t4_like=True),
    "synthetic-1b": Preset("synthetic-1b", "synthetic:llama-3.2-1b", needs_gpu=True, seq_len=512, batch_size=1,
                           steps=25, lr=2e-4, t4_like=True),
}


def bnb_status() -> tuple[bool, str]:
    """(True, ...) only when bitsandbytes can really run 4-bit layers and paged optimizers on this CUDA GPU:
    the GPU can run the course's GPU code (``hardware.gpu_problem``: compute capability >= 7.5, in torch's
    architecture list), bitsandbytes' CUDA library really loaded, and one tiny 4-bit round trip runs on the GPU.
    Else (False, the cause and the way out).

    Why not ``cextension.BNB_BACKEND``: bitsandbytes 0.50 sets it to "CUDA" whenever torch sees a GPU, and when
    its CUDA library then fails to load it puts a stand-in (``ErrorHandlerMockBNBNativeLibrary``) in
    ``cextension.lib`` that raises only at the first 4-bit operation. A loaded CUDA library is a
    ``CudaBNBNativeLibrary``, whose ``compiled_with_cuda`` is True."""
    problem = hardware.gpu_problem()
    if problem is not None:
        return False, problem
    try:
        from bitsandbytes import cextension
    except ImportError:
        return False, "bitsandbytes is not installed (pip install bitsandbytes, then restart the session)"
    version, cuda = hardware._version("bitsandbytes"), torch.version.cuda
    restart = "then restart the session (Colab: Runtime > Restart session)"
    lib = cextension.lib
    if not getattr(lib, "compiled_with_cuda", False):
        # the stand-in keeps the load error in error_msg; vars(): the library objects answer any other name
        error = str(vars(lib).get("error_msg") or "").strip().splitlines()
        if error:  # the stand-in: the CUDA library was there to load and failed
            return False, (f"bitsandbytes {version} could not load its CUDA library ({error[0][:200]}); every 4-bit "
                           f"operation would fail. Install a build for CUDA {cuda}: pip install -U bitsandbytes, "
                           f"{restart}")
        return False, (f"bitsandbytes {version} loaded its CPU library, not a CUDA one, although torch sees a GPU "
                       f"(CUDA {cuda}). Install a build with CUDA libraries: pip install -U bitsandbytes, {restart}")
    try:
        _tiny_4bit_roundtrip()
    except Exception as exc:  # a library that loads but cannot run here: say what it said
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return False, (f"bitsandbytes {version} loaded its CUDA library, but a 4-bit quantize/dequantize on "
                       f"{torch.cuda.get_device_name(0)} failed ({type(exc).__name__}: {first}). Reinstall it for "
                       f"CUDA {cuda} (pip install -U bitsandbytes), {restart}")
    return True, f"bitsandbytes {version} with its CUDA library, on {torch.cuda.get_device_name(0)}"


def _tiny_4bit_roundtrip() -> None:
    """Quantize a 64 x 64 matrix to NF4 on the GPU and back; raise unless it comes back close (NF4 rounds to
    within 0.14 of a block's absmax, and the absmax of these normal values is below 6)."""
    import bitsandbytes.functional as F

    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)).to("cuda", torch.float16)
    packed, state = F.quantize_4bit(x, blocksize=64, quant_type="nf4")
    error = (F.dequantize_4bit(packed, state) - x).abs().max().item()
    torch.cuda.synchronize()
    if not error < 1.5:  # also False for NaN
        raise RuntimeError(f"the NF4 round trip came back wrong (largest error {error})")


def choose_preset(name: str = "auto") -> Preset:
    """The preset called ``name``; ``"auto"`` is ``t4`` where a CUDA GPU with bitsandbytes' CUDA backend is
    present, else ``smoke`` (said in one line). A GPU preset without a usable GPU raises ``GPUNeededError``."""
    ok, why = bnb_status()
    if name == "auto":
        name = "t4" if ok else "smoke"
        print(f"PRESET auto -> {name!r}: " + (why if ok else f"{why}, so the CPU smoke run is used instead."))
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} or 'auto'.")
    preset = PRESETS[name]
    if preset.needs_gpu and not ok:
        raise GPUNeededError(f"preset {name!r} needs a CUDA GPU with bitsandbytes' CUDA backend, but {why}. On Colab: "
                             "Runtime > Change runtime type > T4 GPU. On a CPU, use PRESET = 'smoke'.")
    return preset


def run_dtype(preset: Preset) -> torch.dtype:
    """The compute dtype of a run of ``preset`` on this machine: fp16 for ``t4_like`` presets on a GPU (a T4 has
    no bf16), else the device's own choice (``hardware.compute_dtype``)."""
    device = torch.device("cuda", 0) if preset.needs_gpu else torch.device("cpu")
    if device.type == "cuda" and preset.t4_like:
        return hardware.compute_dtype(device, requested=torch.float16)
    return hardware.compute_dtype(device)


def preset_dtype(name: str = "auto") -> torch.dtype:
    """``run_dtype`` of the preset ``name`` would choose here, said before it is chosen (for the environment
    report) and without printing; a preset this machine cannot run gets the machine's default dtype."""
    ok, _ = bnb_status()
    preset = PRESETS.get(("t4" if ok else "smoke") if name == "auto" else name)
    if preset is None or (preset.needs_gpu and not ok):
        return hardware.compute_dtype()
    return run_dtype(preset)


def setup_device(preset: Preset) -> tuple[torch.device, torch.dtype]:
    """The device and compute dtype (``run_dtype``) of a run. ``t4_like`` presets run under the course's T4
    emulation (``t4.emulate``: the allocator capped at ``memory.usable_bytes("T4")``, fp16, TF32 off, SDPA limited
    to the memory-efficient and math kernels a T4 has), so that a bigger GPU behaves like a T4."""
    from course_lib import t4

    device = torch.device("cuda", 0) if preset.needs_gpu else torch.device("cpu")
    if device.type == "cuda":
        t4.check_gpu(device)
        if preset.t4_like:
            print(t4.emulate(device))
    return device, run_dtype(preset)


def available_bytes(device: torch.device, preset: Preset | None = None) -> int:
    """Memory a run may use: the GPU's (a T4's for ``t4_like`` presets, less what is in use), or the machine's RAM."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        cap = memory.usable_bytes(T4) if preset is not None and preset.t4_like else total
        return int(min(free, cap - torch.cuda.memory_allocated(device)))
    return hardware._total_ram_bytes() or 0


def choose_prep(device: torch.device, compute_dtype: torch.dtype) -> str:
    """The preparation for a real model: ``default`` (residual stream and loss in fp32) where the compute dtype is
    fp16 — fp16 overflows above 65,504 and models trained in bf16 can get there — and ``lean`` where it is bf16
    (fp32's range) or fp32 (a CPU, where the two coincide)."""
    return "default" if device.type == "cuda" and compute_dtype == torch.float16 else "lean"


# --------------------------------------------------------------------------------------------- the recipe
def model_config(preset: Preset):
    """The model's config, read without loading weights (for the prediction before loading)."""
    if preset.synthetic:
        return models.synthetic_config(preset.synthetic)
    from transformers import AutoConfig

    where = preset.model
    if not Path(where).is_dir() and not models.hub_reachable() and preset.model in models.EMBEDDED:
        where = models.embedded_checkpoint(preset.model)
    return AutoConfig.from_pretrained(where)


def synthetic_checkpoint(shape: str, device: torch.device, dtype: torch.dtype = torch.float16) -> Path:
    """A 16-bit random-weight checkpoint of ``shape`` on local disk (built on ``device`` once, then reused), so the
    real ``from_pretrained`` + 4-bit path can load it. Kept under $COURSE_SYNTHETIC_DIR or the temp folder."""
    root = Path(os.environ.get("COURSE_SYNTHETIC_DIR") or Path(tempfile.gettempdir()) / "course_synthetic")
    folder = models.save_synthetic_checkpoint(shape, root / f"{shape}-{str(dtype).replace('torch.', '')}",
                                              dtype=dtype, device=device)
    training.free_memory()  # the model built on the GPU to write the checkpoint is gone: give its memory back
    return folder


def load_model(preset: Preset, device: torch.device, compute_dtype: torch.dtype, *, bits: int = 4):
    """``(model, tokenizer)`` of ``preset`` (tokenizer None if synthetic): with ``bits=4`` every linear layer of
    the decoder in 4-bit NF4 (``models.nf4_config``, QLoRA), with ``bits=16`` all of it in ``compute_dtype``
    (16-bit LoRA, for comparison)."""
    if bits not in (4, 16):
        raise ValueError(f"bits must be 4 (QLoRA) or 16 (LoRA on a 16-bit model), got {bits!r}.")
    device_map = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    kwargs = dict(dtype=compute_dtype, device_map=device_map, attn_implementation="sdpa")
    if bits == 4:
        kwargs["quantization_config"] = models.nf4_config(compute_dtype)
    if preset.synthetic:
        from transformers import AutoModelForCausalLM

        folder = synthetic_checkpoint(preset.synthetic, device)
        with models._quiet_progress():
            model, tokenizer = AutoModelForCausalLM.from_pretrained(folder, **kwargs), None
    else:
        model, tokenizer = models.load_causal_lm(preset.model, **kwargs)
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    return model, tokenizer


def load_4bit(preset: Preset, device: torch.device, compute_dtype: torch.dtype):
    """``(model, tokenizer)`` with every linear layer of the decoder in 4-bit NF4 (tokenizer None if synthetic)."""
    return load_model(preset, device, compute_dtype, bits=4)


def prepare(model, prep: str = "lean"):
    """Make a 4-bit model trainable. ``default``: PEFT's ``prepare_model_for_kbit_training``, which also casts every
    parameter that is not 4-bit (embeddings, output head, norms) to fp32. ``lean``: the same, minus that cast:
    they stay in the compute dtype (the adapters PEFT adds are fp32 either way)."""
    if prep not in PREPS:
        raise ValueError(f"prep must be one of {PREPS}, got {prep!r}.")
    checkpointing = {"use_reentrant": False}  # recomputes each decoder layer in backward instead of storing it
    with warnings.catch_warnings():  # transformers 5.2x renamed gradient_* to activation_checkpointing_*
        warnings.simplefilter("ignore", FutureWarning)
        if prep == "default":
            from peft import prepare_model_for_kbit_training

            return prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs=checkpointing)
        for p in model.parameters():
            p.requires_grad_(False)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    return model


def lora_config(r: int = 8, alpha: int = 16, targets=("q_proj", "v_proj"), dropout: float = 0.05):
    from peft import LoraConfig

    targets = targets if isinstance(targets, str) else list(targets)
    return LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, task_type="CAUSAL_LM")


# ------------------------------------------------------------------------------------------------- data
def train_dataset(preset: Preset, tokenizer, vocab_size: int, n_random: int = 64):
    """The shipped ``orders`` task for real models (see ``course_lib.data``), random ids for synthetic ones."""
    if tokenizer is None:
        return data.random_token_rows(vocab_size, preset.seq_len, n_random)
    return data.tokenize_dataset(data.load_task("orders")["train"], tokenizer, max_length=preset.seq_len)


# ------------------------------------------------------------------------------------------------ prediction
def predict_peak(config, prep: str = "default", *, r: int = 8, targets=("q_proj", "v_proj"), batch_size: int = 1,
                 seq_len: int = 512, compute_dtype: torch.dtype = torch.float16) -> memory.MemoryEstimate:
    """Predicted peak of QLoRA with preparation ``prep``, trained by the Trainer under fp16/bf16 autocast: the
    course's one memory model (``memory.estimate_training_memory``) with the preparation named."""
    if prep not in PREPS:
        raise ValueError(f"prep must be one of {PREPS}, got {prep!r}.")
    return memory.estimate_training_memory(config, "qlora", r=r, target_modules=targets, batch_size=batch_size,
                                           seq_len=seq_len, compute_dtype=compute_dtype, autocast=True,
                                           upcast_non_quantized=prep == "default")


def check_fits(estimate: memory.MemoryEstimate, available: int, what: str = "this run") -> None:
    """Raise ``ModelTooLargeError`` (before anything is loaded) when the predicted peak exceeds ``available``."""
    if estimate.total_bytes > available:
        raise ModelTooLargeError(
            f"{what} is predicted to need {estimate.total_bytes / GiB:.1f} GiB at its peak ({estimate.peak_phase}), "
            f"but only {available / GiB:.1f} GiB is available. Ways out: a shorter seq_len or a smaller batch, the "
            "lean preparation, LoRA on fewer modules, a smaller model, or a GPU with more memory.")


# --------------------------------------------------------------------------------------------- merging
def lora_updates(peft_model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (W, ΔW)}`` in fp32 for every LoRA layer: W the frozen base weight as the model computes with it
    (dequantized when 4-bit), ΔW = (α/r)·B·A the adapter's update."""
    import bitsandbytes.functional as F

    out = {}
    for name, module in peft_model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(module, "lora_A"):
            continue
        adapter = module.active_adapters[0]
        if type(base).__name__ == "Linear4bit":
            w = F.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
        else:
            w = base.weight.detach().float()
        A, B = module.lora_A[adapter].weight.float(), module.lora_B[adapter].weight.float()
        out[name] = (w, module.scaling[adapter] * (B @ A))
    if not out:
        raise ValueError("no LoRA layer found: lora_updates needs a PeftModel with LoRA adapters.")
    return out


def merge_precision(peft_model, formats=("float16", "bfloat16", "nf4")) -> dict[str, dict[str, float]]:
    """Store W + ΔW of every LoRA layer of ``peft_model`` in each format and measure what the stored weights keep
    of the update (``update_shares``, over all LoRA layers together)."""
    return update_shares(list(lora_updates(peft_model).values()), formats)


def update_shares(pairs, formats=("float16", "bfloat16", "nf4")) -> dict[str, dict[str, float]]:
    """For (W, ΔW) pairs: the update the stored weights carry is U = stored(W + ΔW) - stored(W), and three shares
    **of ΔW** (not of the layer) describe it: ``kept`` = <U, ΔW> / |ΔW|² (1.0: the update, on average),
    ``error`` = |U - ΔW| / |ΔW| (0.0: exact; 1.0: rounding noise as large as the update), and ``unchanged``, the
    share of weights whose stored value (NF4: whose 4-bit code) did not move at all.

    Rounding keeps ΔW on average (``kept`` near 1, however small ΔW is) only when W sits at an arbitrary place
    between two of the format's values: W + ΔW then rounds up or down with odds that average out to ΔW. That is
    bf16's case: the weights of a 4-bit model, dequantized to fp16, are not on bf16's coarser grid. A 4-bit model's
    W *is* on the NF4 grid: W + ΔW rounds back to W's own code wherever |ΔW| is under half a level, so the codes
    do not move (``unchanged`` near 1) and the update is lost (``kept`` near 0; what is left comes from the block
    scales, which move with each block's largest weight)."""
    import bitsandbytes.functional as F

    def stored(x: torch.Tensor, fmt: str) -> tuple[torch.Tensor, torch.Tensor]:  # (dequantized values, codes)
        if fmt == "nf4":
            packed, state = F.quantize_4bit(x.contiguous(), blocksize=64, quant_type="nf4")
            codes = torch.stack([packed.flatten() >> 4, packed.flatten() & 15], 1).flatten()
            return F.dequantize_4bit(packed, state).float(), codes
        if fmt not in ("float16", "bfloat16", "float32"):
            raise ValueError(f"unknown format {fmt!r}; use 'float16', 'bfloat16', 'float32' or 'nf4'.")
        value = x.to(getattr(torch, fmt))
        return value.float(), value

    kept, err, same = (dict.fromkeys(formats, 0.0) for _ in range(3))
    norm, count = 0.0, 0
    for w, delta in pairs:
        norm += (delta * delta).sum().item()
        count += delta.numel()
        for fmt in formats:
            (before, codes_before), (after, codes_after) = stored(w, fmt), stored(w + delta, fmt)
            update = after - before
            kept[fmt] += (update * delta).sum().item()
            err[fmt] += ((update - delta) ** 2).sum().item()
            same[fmt] += (codes_before == codes_after).sum().item()
    norm = max(norm, 1e-30)
    return {fmt: {"kept": kept[fmt] / norm, "error": (err[fmt] / norm) ** 0.5, "unchanged": same[fmt] / max(count, 1)}
            for fmt in formats}


def dequantize_4bit_model(model, dtype: torch.dtype):
    """``model`` with every ``Linear4bit`` replaced by a plain linear layer holding its dequantized weight Q(W) in
    ``dtype`` (transformers' ``dequantize``): the 16-bit weights a QLoRA adapter was actually trained against."""
    with models._quiet_progress():
        model = model.dequantize(dtype=dtype)
    left = [name for name, module in model.named_modules() if type(module).__name__ == "Linear4bit"]
    if left:
        raise RuntimeError(f"dequantize left {len(left)} 4-bit layers (e.g. {left[0]}): this transformers version "
                           "cannot dequantize this model; merge into the original 16-bit weights instead.")
    return model


MERGE_BASES = ("16-bit original", "16-bit dequantized 4-bit")


def merged_model(preset: Preset, adapter_folder, base: str, device: torch.device, dtype: torch.dtype):
    """A plain ``dtype`` model with the saved adapter merged in: into the original 16-bit weights (``base="16-bit
    original"``), or into the dequantized 4-bit weights Q(W) that training saw (``"16-bit dequantized 4-bit"``).
    2 bytes per parameter in 16-bit: four times the 4-bit model it was trained on."""
    if preset.synthetic:
        raise ValueError("a synthetic preset has no checkpoint worth merging into; use a real model preset.")
    if base not in MERGE_BASES:
        raise ValueError(f"base must be one of {MERGE_BASES}, got {base!r}.")
    if base == "16-bit original":
        model, _ = models.load_causal_lm(preset.model, dtype=dtype, device=device, verbose=False)
    else:
        model = dequantize_4bit_model(load_4bit(preset, device, dtype)[0], dtype)
    return training.load_adapter(model, adapter_folder).merge_and_unload()
