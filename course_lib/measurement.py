"""Measuring memory, where ``course_lib.memory`` predicts it: the peak inside a ``with`` block and the bytes a
model's tensors hold.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` (tensors only, what the predictions model); on CPU it is
the peak resident set size of the whole process (tensors, Python and the libraries), which no prediction models.
"""

from __future__ import annotations

import contextlib
import os
import resource
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
        m.note = "peak RSS" if _reset_peak_rss() else "peak RSS since the process started"
        m.start_bytes = _rss_bytes()
        try:
            yield m
        finally:
            m.end_bytes = _rss_bytes()
            m.peak_bytes = max(_peak_rss_bytes(), m.end_bytes)


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
