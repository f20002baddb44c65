"""The T4 emulation: a bigger NVIDIA GPU made to behave like the free Colab T4, so that what it measures can be
presented as a T4 result.

A T4 (Turing, compute capability 7.5) differs from an H100 or H200 in more than its memory:

* **memory**: a Colab T4 reports 15,095 MiB in total (ECC takes the rest of its 16 GB), and the CUDA context and
  the libraries' workspaces come out of that: ``memory.usable_bytes("T4")`` is what is left for PyTorch's allocator;
* **dtypes**: no native bf16 (``torch.cuda.is_bf16_supported()`` says True through slow emulation) and no TF32:
  fp16 with loss scaling;
* **attention**: PyTorch's flash and cuDNN kernels for ``scaled_dot_product_attention`` need sm_80 or newer. A T4
  has the memory-efficient kernel (O(n) memory) and the math one, which stores the tokens x tokens scores. A call
  that the memory-efficient kernel refuses (in torch 2.11: grouped-query attention with ``enable_gqa=True``, what
  transformers passes when there is no mask) falls to math on a T4.

``emulate()`` applies all three to this process on whatever CUDA GPU it has: it caps the allocator at the T4's
usable memory, turns TF32 off and limits SDPA to the two kernels sm_75 has, so a path that would take the math
kernel on a T4 takes it here too. ``SDPAKernels`` records which SDPA kernels a piece of code really ran (every GPU
row the course commits names its kernel); ``step_time`` splits a measured step into GPU kernel time and host time,
and ``estimate_t4_seconds`` scales only the kernel time by published T4/GPU ratios.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from course_lib import hardware, memory

T4_KERNELS = ("efficient", "math")  # what sm_75 has: no flash (sm_80+), no cuDNN attention (sm_80+)
T4_CAPABILITY = (7, 5)
# The fused SDPA operators as the dispatcher names them; the math kernel has none (it is composed of matmuls and a
# softmax), so it is counted as a call that reached no fused operator.
_FUSED_OPS = {"_scaled_dot_product_efficient_attention": "efficient", "_scaled_dot_product_flash_attention": "flash",
              "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
              "_scaled_dot_product_cudnn_attention": "cudnn"}


class GPUNeededError(RuntimeError):
    """The T4 emulation was asked for where there is no usable CUDA GPU."""


# --------------------------------------------------------------------------------------------- the GPU
def check_gpu(device: torch.device | int | None = None) -> tuple[str, tuple[int, int]]:
    """``(name, capability)`` of a CUDA GPU the course's code can run on; ``GPUNeededError`` otherwise, with
    ``hardware.gpu_problem``'s sentence (no GPU, older than a T4, no kernels in this torch build)."""
    problem = hardware.gpu_problem(device)
    if problem is not None:
        raise GPUNeededError(problem + ("" if torch.cuda.is_available() else
                                        ". On Colab: Runtime > Change runtime type > T4 GPU."))
    device = torch.device("cuda", device if isinstance(device, int) else 0) if not isinstance(
        device, torch.device) else device
    return torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))


def is_t4(device: torch.device | None = None) -> bool:
    return torch.cuda.is_available() and tuple(torch.cuda.get_device_capability(device)) == T4_CAPABILITY


# --------------------------------------------------------------------------------------------- the emulation
@dataclass(frozen=True)
class Emulation:
    """What ``emulate`` set: the GPU underneath, the allocator's cap, the kernels left to SDPA."""

    gpu: str
    capability: tuple[int, int]
    total_bytes: int
    cap_bytes: int
    kernels: tuple[str, ...] = T4_KERNELS
    dtype: torch.dtype = torch.float16

    @property
    def real_t4(self) -> bool:
        return self.capability == T4_CAPABILITY

    def __str__(self) -> str:
        where = "a T4" if self.real_t4 else f"T4 emulation on {self.gpu}"
        return (f"{where}: allocator capped at {self.cap_bytes / memory.GiB:.2f} GiB of "
                f"{self.total_bytes / memory.GiB:.1f} GiB, fp16, TF32 off, attention kernels "
                f"{' and '.join(self.kernels)} only")


_active: Emulation | None = None


def active() -> Emulation | None:
    """The emulation this process runs under (None: none)."""
    return _active


def limit_attention_kernels(kernels=T4_KERNELS) -> dict[str, bool]:
    """Leave ``scaled_dot_product_attention`` only ``kernels`` (names of ``T4_KERNELS``, "flash", "cudnn") on CUDA;
    returns the previous settings (for ``restore_attention_kernels``)."""
    unknown = set(kernels) - {"efficient", "math", "flash", "cudnn"}
    if unknown:
        raise ValueError(f"unknown attention kernel(s) {sorted(unknown)}; choose from efficient, math, flash, cudnn.")
    b = torch.backends.cuda
    before = {"flash": b.flash_sdp_enabled(), "efficient": b.mem_efficient_sdp_enabled(),
              "math": b.math_sdp_enabled(), "cudnn": b.cudnn_sdp_enabled()}
    b.enable_flash_sdp("flash" in kernels)
    b.enable_mem_efficient_sdp("efficient" in kernels)
    b.enable_math_sdp("math" in kernels)
    b.enable_cudnn_sdp("cudnn" in kernels)
    return before


def restore_attention_kernels(before: dict[str, bool]) -> None:
    limit_attention_kernels(tuple(k for k, on in before.items() if on))


def emulate(device: torch.device | None = None, *, cap_bytes: int | None = None) -> Emulation:
    """Make this process's CUDA GPU behave like a Colab T4 (see the module docstring) and return what was set.

    ``cap_bytes``: the allocator's cap (default ``memory.usable_bytes("T4")``). On a real T4 the cap is its usable
    memory too and the kernel limits change nothing. Process-wide, as a T4 would be: call it before loading."""
    global _active
    name, cap = check_gpu(device)
    device = device or torch.device("cuda", 0)
    total = torch.cuda.get_device_properties(device).total_memory
    cap_bytes = int(min(cap_bytes or memory.usable_bytes("T4"), total))
    torch.cuda.set_per_process_memory_fraction(cap_bytes / total, device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    limit_attention_kernels(T4_KERNELS)
    _active = Emulation(gpu=name, capability=cap, total_bytes=total, cap_bytes=cap_bytes)
    return _active


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16 and fp32 run on a T4; bf16 does not (natively): refused under the emulation, with the way out."""
    if dtype == torch.bfloat16:
        raise ValueError("bf16 was requested under the T4 emulation, but a T4 (compute capability 7.5) has no "
                         "native bf16. Use torch.float16 with loss scaling (Trainer: fp16=True).")
    return dtype


def compute_dtype(device: torch.device | None = None) -> torch.dtype:
    """The compute dtype of this process: fp16 under the emulation (or on a real T4), else ``hardware``'s rule."""
    if _active is not None:
        return torch.float16
    return hardware.compute_dtype(device)


# --------------------------------------------------------------------------------------- which kernel ran
class SDPAKernels(torch.overrides.TorchFunctionMode):
    """Inside this context, every ``scaled_dot_product_attention`` call is counted by the kernel that ran it:
    ``with SDPAKernels() as seen: step()`` then ``seen.counts`` -> ``{"efficient": 64}``, ``seen.names`` ->
    "efficient". A call that reached no fused kernel ran the math one (matmuls and a softmax: O(n^2) memory)."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.fused: dict[str, int] = {}
        self._dispatch = _FusedOps(self.fused)

    def __enter__(self):
        self._dispatch.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self._dispatch.__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            self.calls += 1
            before = sum(self._dispatch.forward_counts.values())
            out = func(*args, **(kwargs or {}))
            if sum(self._dispatch.forward_counts.values()) == before:
                self.fused["math"] = self.fused.get("math", 0) + 1
            return out
        return func(*args, **(kwargs or {}))

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.fused)

    @property
    def names(self) -> str:
        """The kernels seen, "+"-joined (e.g. "efficient", "math"), or "none"."""
        return "+".join(sorted(self.fused)) or "none"


class _FusedOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the fused SDPA operators that reach the dispatcher (forward ones only: a backward is not a call)."""

    def __init__(self, fused: dict[str, int]):
        super().__init__()
        self.fused, self.forward_counts = fused, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        kind = _FUSED_OPS.get(name)
        if kind is not None:
            self.forward_counts[kind] = self.forward_counts.get(kind, 0) + 1
            self.fused[kind] = self.fused.get(kind, 0) + 1
        return func(*args, **(kwargs or {}))


def kernels_of(fn, *args, **kwargs) -> tuple[object, str]:
    """``(fn(*args, **kwargs), the SDPA kernel(s) it ran)``: e.g. one training step, to print beside a result."""
    with SDPAKernels() as seen:
        result = fn(*args, **kwargs)
    return result, seen.names


def sdpa_kernel_for(query_shape, kv_heads: int, dtype: torch.dtype, device, *, enable_gqa: bool) -> str:
    """The kernel PyTorch's dispatcher would pick for a causal, unmasked SDPA call of this shape under the current
    settings (``torch._fused_sdp_choice``: PyTorch's own rule), without running it."""
    b, heads, n, d = query_shape
    q = torch.empty((b, heads, min(n, 64), d), dtype=dtype, device=device)
    kv = torch.empty((b, kv_heads, min(n, 64), d), dtype=dtype, device=device)
    choice = torch._fused_sdp_choice(q, kv, kv, None, 0.0, True, enable_gqa=enable_gqa)
    names = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn"}
    if choice == 1 and q.device.type == "cpu":
        return "flash (CPU)"
    return names.get(int(choice), f"backend {int(choice)}")


# --------------------------------------------------------------------------------------------- time
@dataclass(frozen=True)
class StepTime:
    """A measured piece of GPU work: wall seconds, of which ``kernel_s`` the GPU spent running kernels (the union
    of kernel intervals, so overlapping streams count once) and ``host_s`` the rest (Python, launches, waits,
    copies to and from the CPU, disk)."""

    wall_s: float
    kernel_s: float
    gpu: str

    @property
    def host_s(self) -> float:
        return max(0.0, self.wall_s - self.kernel_s)


def step_time(fn, *args, **kwargs) -> tuple[object, StepTime]:
    """Run ``fn`` once under the profiler (CUDA activity) and split its wall time into kernel and host time."""
    from torch.profiler import ProfilerActivity, profile

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    intervals = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                       if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
                       and "memcpy" not in e.name.lower() and "memset" not in e.name.lower())
    busy, end = 0.0, float("-inf")
    for s, e in intervals:  # the union of kernel intervals, in microseconds
        if s > end:
            busy += e - s
            end = e
        elif e > end:
            busy += e - end
            end = e
    return result, StepTime(wall_s=wall, kernel_s=min(wall, busy / 1e6), gpu=name)


# Published dense fp16 tensor-core throughput (TFLOP/s) and memory bandwidth (GB/s) of the GPUs the course measures
# on (NVIDIA's datasheets). The T4's are its boost-clock figures; a T4 at 70 W often runs below them.
GPU_SPECS = {"Tesla T4": (65.0, 320.0), "NVIDIA H100 80GB HBM3": (989.0, 3350.0), "NVIDIA H100 PCIe": (756.0, 2000.0),
             "NVIDIA H200": (989.0, 4800.0), "NVIDIA A100-SXM4-80GB": (312.0, 2039.0),
             "NVIDIA A100-SXM4-40GB": (312.0, 1555.0), "NVIDIA L4": (121.0, 300.0)}
# Host time on Colab: its 2 vCPUs run Python and kernel launches slower than the GPU machines' hosts (not measured
# here): the estimate keeps host time between 1x and HOST_SLOWDOWN x what was measured.
HOST_SLOWDOWN = 2.0


def estimate_t4_seconds(measured: StepTime, *, repeats: int = 1) -> tuple[float, float] | str:
    """An *estimate* of ``repeats`` x ``measured`` on a Colab T4: kernel time scaled by the two GPUs' bandwidth and
    fp16 throughput ratios (the lower ratio for the low end, the higher for the high end), host time kept (x1 to
    ``HOST_SLOWDOWN``). Returns ``(low, high)`` seconds, or a sentence saying why there is no estimate (a GPU
    without published figures here): never an exception in the middle of a notebook."""
    if measured.gpu == "Tesla T4":
        return measured.wall_s * repeats, measured.wall_s * repeats
    if measured.gpu not in GPU_SPECS:
        return (f"no T4 estimate: no published figures for {measured.gpu!r} in t4.GPU_SPECS "
                f"(known: {', '.join(sorted(GPU_SPECS))}); measured {measured.wall_s * repeats:.1f} s here")
    (tf, bw), (tf_t4, bw_t4) = GPU_SPECS[measured.gpu], GPU_SPECS["Tesla T4"]
    low_ratio, high_ratio = sorted((bw / bw_t4, tf / tf_t4))
    low = measured.kernel_s * low_ratio + measured.host_s
    high = measured.kernel_s * high_ratio + measured.host_s * HOST_SLOWDOWN
    return low * repeats, high * repeats


@contextmanager
def attention_kernels(kernels=T4_KERNELS):
    """``limit_attention_kernels`` for the duration of a block."""
    before = limit_attention_kernels(kernels)
    try:
        yield
    finally:
        restore_attention_kernels(before)
