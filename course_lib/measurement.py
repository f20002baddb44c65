"""Measuring memory, where ``course_lib.memory`` predicts it: the peak inside a ``with`` block and the bytes a
model's tensors hold.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` (tensors only, what the predictions model); on CPU
``measure`` gives the peak resident set size of the whole process (tensors, Python and the libraries), which no
prediction models, and ``measure_cpu_tensors`` the peak of the bytes CPU tensors hold, the CPU's counterpart of
``max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
from dataclasses import dataclass

import torch

GB = 1e9


@dataclass
class Measurement:
    device: str
    start_bytes: int = 0
    peak_bytes: int = 0
    end_bytes: int = 0
    note: str = ""

    @property
    def peak_increase_bytes(self) -> int:
        return self.peak_bytes - self.start_bytes

    def __str__(self) -> str:
        return (f"{self.device}: start {self.start_bytes / GB:.3f} GB, peak {self.peak_bytes / GB:.3f} GB, "
                f"end {self.end_bytes / GB:.3f} GB{' (' + self.note + ')' if self.note else ''}")


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if os.uname().sysname == "Darwin" else 1024)


@contextlib.contextmanager
def measure(device: str | torch.device | None = None):
    """Measure peak memory inside a ``with`` block: ``torch.cuda.max_memory_allocated`` on CUDA (tensors only),
    peak resident set size of the whole process on CPU (tensors + Python + libraries).

    >>> with measure() as m:
    ...     model = load()
    >>> print(m.peak_bytes, m.peak_increase_bytes)
    """
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = Measurement(device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        m.start_bytes = torch.cuda.memory_allocated(device)
        try:
            yield m
        finally:
            torch.cuda.synchronize(device)
            m.peak_bytes = torch.cuda.max_memory_allocated(device)
            m.end_bytes = torch.cuda.memory_allocated(device)
            m.note = "torch.cuda.max_memory_allocated"
    else:
        # Garbage left by earlier code (a model in a reference cycle) would otherwise be freed by a collection inside
        # the block, and the resident set would shrink under what the block allocates.
        gc.collect()
        m.note = "peak RSS" if _reset_peak_rss() else "peak RSS since the process started"
        m.start_bytes = _rss_bytes()
        try:
            yield m
        finally:
            m.end_bytes = _rss_bytes()
            m.peak_bytes = max(_peak_rss_bytes(), m.end_bytes)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop lines are written there, past Python)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def measure_cpu_tensors():
    """The peak of the bytes held by CPU tensors allocated inside a ``with`` block, above what was allocated when
    it started: torch's profiler records every allocation and free of the CPU allocator (temporaries inside
    kernels included), and the peak is the highest running sum. ``peak_bytes`` is that increase, ``end_bytes``
    what was still allocated at the end; ``start_bytes`` is 0 (add the tensors that existed before yourself).

    >>> with measure_cpu_tensors() as m:
    ...     loss = model(ids, labels=ids).loss; loss.backward()
    """
    from torch.profiler import ProfilerActivity, profile

    m = Measurement(device="cpu", note="CPU tensors, torch.profiler")
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.__enter__()
    try:
        yield m
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
        cpu = torch.autograd.DeviceType.CPU
        events = sorted((e for e in prof.profiler.kineto_results.events()
                         if e.name() == "[memory]" and e.device_type() == cpu), key=lambda e: e.start_ns())
        running = peak = 0
        for e in events:
            running += e.nbytes()
            peak = max(peak, running)
        m.peak_bytes, m.end_bytes = peak, running


def tensor_bytes(model) -> int:
    """Bytes of every parameter and buffer of ``model``, plus bitsandbytes' quantization state (absmax, ...)."""
    seen, total = set(), 0
    tensors = list(model.parameters()) + list(model.buffers())
    for p in list(model.parameters()):
        state = getattr(p, "quant_state", None)
        if state is not None:
            tensors += [state.absmax, state.code] + ([state.state2.absmax, state.state2.code, state.offset]
                                                     if state.nested else [])
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def cpu_training_peak(config, method: str = "lora", *, seq_len: int = 512, batch_size: int = 1,
                      gradient_checkpointing: bool = True, r: int = 8, targets=("q_proj", "v_proj"),
                      seed: int = 0) -> int:
    """Peak bytes of CPU tensors during one training step of a randomly initialised ``config`` model in fp32,
    trained the way ``memory.estimate_training_memory`` models it (sdpa, non-reentrant gradient checkpointing or
    none, PyTorch's foreach AdamW, ``loss = model(ids, labels=ids).loss``): ``method`` "full" trains every weight,
    "lora" PEFT adapters of rank ``r`` on ``targets``. A first step creates AdamW's state; the second is measured
    (``measure_cpu_tensors``), and the tensors alive before it (weights, adapters, AdamW state) are added.
    It runs on one thread: the result is the same on any number, and on a shared CPU more threads only wait."""
    if method not in ("full", "lora"):
        raise ValueError(f"cpu_training_peak measures 'full' or 'lora', got {method!r} (QLoRA's 4-bit kernels run "
                         "differently on a CPU than on the GPU the estimator models).")
    import warnings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():  # transformers 5.2x renamed gradient_* to activation_checkpointing_*
            warnings.simplefilter("ignore", FutureWarning)
            return _cpu_training_peak(config, method, seq_len, batch_size, gradient_checkpointing, r, targets, seed)
    finally:
        torch.set_num_threads(threads)


def _cpu_training_peak(config, method, seq_len, batch_size, gradient_checkpointing, r, targets, seed) -> int:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    model.config.use_cache = False
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), lora_dropout=0.0,
                                                 task_type="CAUSAL_LM"))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method == "lora":
            model.enable_input_require_grads()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, foreach=True)
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed))

    def step():
        loss = model(input_ids=ids, labels=ids).loss  # the output, with its logits, is dropped before backward
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates AdamW's two moments
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if torch.is_tensor(v) and v.dim() > 0)
    with measure_cpu_tensors() as m:
        step()
    return tensor_bytes(model) + state + m.peak_bytes
