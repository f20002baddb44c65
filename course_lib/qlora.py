"""QLoRA on a GPU (notebook 07): 4-bit NF4 weights, double quantization, LoRA adapters, a paged optimizer.

The recipe, one function a step: ``choose_preset`` (what to run where), ``bnb_config`` (how to load in 4 bits),
``load_4bit``, ``prepare`` (PEFT's default k-bit preparation or a lean one), ``lora_config``,
``training_arguments`` (paged AdamW and fp16/bf16 by GPU), ``train`` (with measured memory and tokens/s).
``predict_peak`` predicts the peak with ``course_lib.memory`` before anything is loaded; ``check_fits`` refuses a
run that cannot fit, before loading it. ``merge_caveat`` measures what merging an adapter into 4-bit weights keeps.

Presets (``PRESETS``): ``smoke`` runs on a CPU (the embedded SmolLM2-135M in 4-bit, a few steps; what CI runs),
``t4`` fine-tunes a real 7B instruct model from the hub on a free Colab T4, ``synthetic-7b`` / ``synthetic-1b``
load random weights of the Llama-2-7B / Llama-3.2-1B shape through the same 4-bit path (no download; memory and
speed do not depend on the weights' values).
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from course_lib import data, hardware, memory, models, training

GiB = 2**30
T4_MEMORY_GIB = 15.0  # what a free Colab T4 shows as usable (16 GB card, ~15 GiB for tensors)
PREPS = ("default", "lean")
_CAP_BYTES: int | None = None  # the per-process GPU memory cap set by setup_device


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
    t4_like: bool = False  # cap GPU memory at a T4's 15 GiB and compute in fp16, whatever the GPU
    r: int = 8
    alpha: int = 16
    targets: tuple = ("q_proj", "v_proj")

    @property
    def synthetic(self) -> str | None:
        return self.model.split(":", 1)[1] if self.model.startswith("synthetic:") else None


PRESETS = {
    "smoke": Preset("smoke", models.DEFAULT_MODEL, needs_gpu=False, seq_len=128, batch_size=2, steps=4, lr=2e-3),
    "t4": Preset("t4", "Qwen/Qwen2.5-7B-Instruct", needs_gpu=True, seq_len=256, batch_size=4, steps=60, lr=2e-4),
    "synthetic-7b": Preset("synthetic-7b", "synthetic:llama-2-7b", needs_gpu=True, seq_len=512, batch_size=1,
                           steps=20, lr=2e-4, t4_like=True),
    "synthetic-1b": Preset("synthetic-1b", "synthetic:llama-3.2-1b", needs_gpu=True, seq_len=512, batch_size=1,
                           steps=20, lr=2e-4, t4_like=True),
}


def bnb_status() -> tuple[bool, str]:
    """(True, ...) when bitsandbytes can run 4-bit layers and paged optimizers on this CUDA GPU; else the reason."""
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to PyTorch"
    try:
        from bitsandbytes import cextension
    except ImportError:
        return False, "bitsandbytes is not installed (pip install bitsandbytes)"
    backend = getattr(cextension, "BNB_BACKEND", "?")
    if backend != "CUDA":
        return False, (f"bitsandbytes loaded its {backend} library, not its CUDA one: reinstall a build for this "
                       "CUDA (pip install -U bitsandbytes), then restart the runtime")
    return True, f"bitsandbytes {_version('bitsandbytes')} with its CUDA library"


def _version(pkg: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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


def setup_device(preset: Preset) -> tuple[torch.device, torch.dtype]:
    """The device and compute dtype of a run. ``t4_like`` presets cap this process at 15 GiB of GPU memory and
    compute in fp16, so that a bigger GPU behaves like a T4 (on a T4 the cap changes nothing)."""
    device = torch.device("cuda", 0) if preset.needs_gpu else torch.device("cpu")
    if device.type != "cuda":
        return device, hardware.compute_dtype(device)
    if preset.t4_like:
        total = torch.cuda.get_device_properties(device).total_memory
        fraction = min(1.0, T4_MEMORY_GIB * GiB / total)
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        global _CAP_BYTES
        _CAP_BYTES = int(fraction * total)
        print(f"T4-like: this process may use {fraction * total / GiB:.1f} GiB of {total / GiB:.1f} GiB, in fp16.")
        return device, hardware.compute_dtype(device, requested=torch.float16)
    return device, hardware.compute_dtype(device)


def available_bytes(device: torch.device) -> int:
    """Memory a run may use: the GPU's (after a per-process cap, less what is in use), or the machine's RAM."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(min(free, (_CAP_BYTES or total) - torch.cuda.memory_allocated(device)))
    return hardware._total_ram_bytes() or 0


# --------------------------------------------------------------------------------------------- the recipe
def bnb_config(compute_dtype: torch.dtype):
    """4-bit NF4 weights, double quantization (the absmax constants quantized too), matmuls in ``compute_dtype``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


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
    free_memory()  # the model built on the GPU to write the checkpoint is gone: give its memory back
    return folder


def load_4bit(preset: Preset, device: torch.device, compute_dtype: torch.dtype):
    """``(model, tokenizer)`` with every linear layer of the decoder in 4-bit NF4 (tokenizer None if synthetic)."""
    device_map = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    kwargs = dict(quantization_config=bnb_config(compute_dtype), dtype=compute_dtype, device_map=device_map,
                  attn_implementation="sdpa")
    if preset.synthetic:
        from transformers import AutoModelForCausalLM

        folder = synthetic_checkpoint(preset.synthetic, device)
        with models._quiet_progress():
            model, tokenizer = AutoModelForCausalLM.from_pretrained(folder, **kwargs), None
    else:
        model, tokenizer = models.load_causal_lm(preset.model, **kwargs)
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    return model, tokenizer


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


def training_arguments(output_dir, device: torch.device, compute_dtype: torch.dtype, *, steps: int, lr: float,
                       batch_size: int, seed: int = 0):
    """Trainer settings. On CUDA: ``paged_adamw_32bit`` (fp32 Adam states in CUDA unified memory, which the driver
    pages out to CPU RAM only if the GPU runs short) and fp16 with loss scaling on a T4 / bf16 on Ampere or newer.
    On a CPU: plain AdamW in fp32 (paged optimizers need CUDA)."""
    from transformers import TrainingArguments

    cuda = device.type == "cuda"
    if compute_dtype == torch.bfloat16 and cuda and not hardware.supports_bf16(device):
        hardware.compute_dtype(device, requested=torch.bfloat16)  # raises, naming the GPU and the way out
    if not cuda:
        print("CPU: paged optimizers need CUDA, so plain AdamW (optim='adamw_torch') in fp32 is used instead.")
    return TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, learning_rate=lr, per_device_train_batch_size=batch_size,
        optim="paged_adamw_32bit" if cuda else "adamw_torch",
        fp16=cuda and compute_dtype == torch.float16, bf16=cuda and compute_dtype == torch.bfloat16,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, seed=seed, data_seed=seed,
        logging_steps=1, report_to="none", disable_tqdm=True, remove_unused_columns=False, save_strategy="no",
        dataloader_num_workers=0, use_cpu=not cuda,
    )


# ------------------------------------------------------------------------------------------------- data
def random_token_dataset(vocab_size: int, seq_len: int, n: int, seed: int = 0) -> list[dict]:
    """Rows of random token ids (labels = inputs) for synthetic models: no tokenizer, same cost as real text."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (n, seq_len), generator=g).tolist()
    return [{"input_ids": row, "labels": row} for row in ids]


def train_dataset(preset: Preset, tokenizer, vocab_size: int, n_random: int = 64):
    """The shipped ``orders`` task for real models (see ``course_lib.data``), random ids for synthetic ones."""
    if tokenizer is None:
        return random_token_dataset(vocab_size, preset.seq_len, n_random)
    return data.tokenize_dataset(data.load_task("orders")["train"], tokenizer, max_length=preset.seq_len)


# ------------------------------------------------------------------------------------------------- training
@dataclass
class RunResult:
    history: list  # (step, loss)
    seconds: float
    steps: int
    tokens: int
    step_seconds: list
    load_bytes: int  # allocated before training: weights, quantization state, adapters
    peak_bytes: int  # max allocated during training
    after_bytes: int  # allocated after training (optimizer and activations gone)
    note: str = ""

    @property
    def tokens_per_second(self) -> float:
        """Tokens per second over the steps after the first (which includes warm-up and allocation)."""
        times = self.step_seconds[1:] or self.step_seconds
        return (self.tokens / max(self.steps, 1)) * len(times) / sum(times) if times else float("nan")


class _StepTimer:
    def __init__(self, device):
        from transformers import TrainerCallback

        timer = self
        self.device, self.times, self._t = device, [], 0.0

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._sync()
                timer._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer._sync()
                timer.times.append(time.perf_counter() - timer._t)

        self.callback = Callback()

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train(model, dataset, device: torch.device, compute_dtype: torch.dtype, *, steps: int, lr: float,
          batch_size: int, pad_token_id: int = 0, seed: int = 0, desc: str = "QLoRA") -> RunResult:
    """Train the adapters of ``model`` for ``steps`` steps with the Trainer, measuring memory and step times."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    training.seed_everything(seed)
    progress, timer = training.ProgressAndHistory(desc), _StepTimer(device)
    free_memory()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(tempfile.TemporaryDirectory(prefix="course-qlora-"))
        measured = stack.enter_context(memory.measure(device))
        args = training_arguments(out, device, compute_dtype, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=data.Collator(pad_token_id),
                          callbacks=[progress, timer.callback])
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        try:
            trainer.train()
        finally:
            if progress.bar is not None:
                progress.bar.close()
        seconds = time.perf_counter() - start
        global_step = trainer.state.global_step
        tokens = _tokens_seen(dataset, global_step * batch_size)
        trainer.optimizer = None  # release the optimizer state before measuring "after"
        del trainer
        free_memory()
    model.eval()
    return RunResult(history=progress.history, seconds=seconds, steps=global_step, tokens=tokens,
                     step_seconds=timer.times, load_bytes=measured.start_bytes, peak_bytes=measured.peak_bytes,
                     after_bytes=measured.end_bytes, note=measured.note)


def _tokens_seen(dataset, rows: int) -> int:
    n = len(dataset)
    return sum(len(dataset[i % n]["input_ids"]) for i in range(rows))


# ------------------------------------------------------------------------------------------------ prediction
def predict_peak(config, prep: str = "default", *, r: int = 8, targets=("q_proj", "v_proj"), batch_size: int = 1,
                 seq_len: int = 512, compute_dtype: torch.dtype = torch.float16) -> memory.MemoryEstimate:
    """Predicted peak training memory of QLoRA with ``prep``, trained by the Trainer in fp16/bf16 autocast.

    ``default`` starts from ``memory.estimate_training_memory``'s "qlora" (fp32 embeddings, head and residual
    stream); under autocast the fp32 output head is cast to 16-bit for its matmul, and that copy is kept for the
    backward pass, so the loss moment holds one more V x h matrix. ``lean`` keeps the non-4-bit parameters in
    ``compute_dtype``: the 4-bit weights and adapters of "qlora" with the 16-bit activations and logits of "lora"."""
    if prep not in PREPS:
        raise ValueError(f"prep must be one of {PREPS}, got {prep!r}.")
    kw = dict(r=r, target_modules=targets, batch_size=batch_size, seq_len=seq_len, compute_dtype=compute_dtype)
    q = memory.estimate_training_memory(config, "qlora", **kw)
    cb = torch.empty((), dtype=compute_dtype).element_size()
    n, h, V = batch_size * seq_len, config.hidden_size, config.vocab_size
    linears = memory.linear_shapes(config)
    if prep == "default":
        head_copy = cb * V * h if cb == 2 else 0
        stored, layer, weights = q.details["stored_activations"], q.details["layer_backward"], q.weights
        phases = {"loss (logits backward)": (stored + 4 * n * h, 12 * n * V + head_copy),
                  "backward of the last decoder layer": (stored + layer, 0)}
    else:
        lo = memory.estimate_training_memory(config, "lora", **kw)
        not_4bit = memory.parameter_count(config) - config.num_hidden_layers * sum(i * o for i, o in linears.values())
        weights = q.weights - (4 - cb) * not_4bit
        stored, layer = lo.details["stored_activations"], lo.details["layer_backward"]
        dequantized = 2 * max(i * o for i, o in linears.values())  # the 16-bit copy of the weight being multiplied
        phases = {"loss (logits backward)": (stored + 4 * n * h, 12 * n * V),
                  "backward of the last decoder layer": (stored + layer + dequantized, 0)}
    phase = max(phases, key=lambda k: sum(phases[k]))
    return replace(q, weights=weights, activations=phases[phase][0], logits=phases[phase][1], peak_phase=phase,
                   details=dict(q.details, residual_bytes=4 if prep == "default" else cb))


def check_fits(estimate: memory.MemoryEstimate, available: int, what: str = "this run") -> None:
    """Raise ``ModelTooLargeError`` (before anything is loaded) when the predicted peak exceeds ``available``."""
    if estimate.total_bytes > available:
        raise ModelTooLargeError(
            f"{what} is predicted to need {estimate.total_bytes / GiB:.1f} GiB at its peak ({estimate.peak_phase}), "
            f"but only {available / GiB:.1f} GiB is available. Ways out: a shorter seq_len or a smaller batch, the "
            "lean preparation, LoRA on fewer modules, a smaller model, or a GPU with more memory.")


# --------------------------------------------------------------------------------------------- the merge caveat
def merge_caveat(peft_model) -> dict:
    """Merging into 4-bit weights: for the first LoRA layer on a 4-bit ``Linear4bit``, dequantize W, add the
    update ΔW = (α/r)·B·A, and quantize back to NF4 (what merging into the 4-bit model does). Returns how large ΔW
    is next to W, and how much of ΔW survives the re-quantization."""
    import bitsandbytes.functional as F

    for name, module in peft_model.named_modules():  # noqa: B007 (name is used after the loop)
        base = getattr(module, "base_layer", None)
        if base is not None and type(base).__name__ == "Linear4bit" and hasattr(module, "lora_A"):
            break
    else:
        raise ValueError("no LoRA layer on a 4-bit Linear4bit found: merge_caveat needs a QLoRA PeftModel.")
    adapter = module.active_adapters[0]
    w = F.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
    A, B = module.lora_A[adapter].weight.float(), module.lora_B[adapter].weight.float()
    delta = module.scaling[adapter] * (B @ A)
    merged16 = (w + delta).to(base.weight.quant_state.dtype)
    packed, state = F.quantize_4bit(merged16, blocksize=base.weight.quant_state.blocksize, quant_type="nf4")
    requant = F.dequantize_4bit(packed, state).float()
    kept = ((requant - w) * delta).sum() / (delta * delta).sum().clamp_min(1e-30)
    return {"layer": name, "weight_shape": tuple(w.shape), "merged dtype (16-bit)": str(merged16.dtype),
            "|ΔW| / |W|": (delta.norm() / w.norm()).item(),
            "share of ΔW kept after re-quantizing to NF4": kept.item(),
            "rel. error of the merged 16-bit layer": ((merged16.float() - (w + delta)).norm() / delta.norm().clamp_min(1e-30)).item()}


def merge_unquantized(preset: Preset, adapter_folder, dtype: torch.dtype = torch.float16):
    """The way to a merged model: reload the base unquantized in ``dtype`` (the compute dtype it was trained with:
    16-bit on a GPU, fp32 on a CPU), apply the saved adapter, merge. The result is a plain ``dtype`` model: 2 bytes
    per parameter in 16-bit, four times the 4-bit model it was trained on."""
    if preset.synthetic:
        raise ValueError("a synthetic preset has no checkpoint worth merging into; use a real model preset.")
    model, _ = models.load_causal_lm(preset.model, dtype=dtype, verbose=False)
    return training.load_adapter(model, adapter_folder).merge_and_unload()
