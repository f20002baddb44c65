"""Which device to run on, which dtype to compute in, and a report of the environment.

The rules (see the course design): CUDA, then Apple MPS, then CPU. bf16 only on GPUs of compute capability >= 8.0
(Ampere or newer): ``torch.cuda.is_bf16_supported()`` answers True on a T4 (7.5) through emulation, which is slow,
so it is not trusted alone. fp16 on older GPUs (with loss scaling and fp32 adapters), fp32 on CPU, where bf16
matmuls are many times slower than fp32.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import torch

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate", "numpy", "matplotlib")


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA if present, then MPS, then CPU. ``prefer`` ("cuda", "mps" or "cpu") forces one, with a clear error."""
    if prefer is not None:
        prefer = prefer.lower()
        available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
        if prefer not in available:
            raise ValueError(f"unknown device {prefer!r}: use one of 'cuda', 'mps', 'cpu' (or None to choose).")
        if not available[prefer]:
            raise RuntimeError(
                f"device {prefer!r} was requested but is not available here. "
                "On Colab: Runtime > Change runtime type > T4 GPU. Or pass prefer=None to use what there is."
            )
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def supports_bf16(device: torch.device | str | None = None) -> bool:
    """True only where bf16 is native: CUDA compute capability >= 8.0. (MPS and CPU: False for speed reasons.)"""
    device = torch.device(device) if device is not None else pick_device()
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


# The course's GPU code (bitsandbytes' 4-bit kernels, notebooks 07 and 10) needs a T4 (7.5) or newer.
MIN_CUDA_CAPABILITY = (7, 5)


def _arch_version(arch: str) -> int:
    """``"sm_86"`` -> 86, ``"sm_90a"`` -> 90, ``"compute_120"`` -> 120."""
    return int(arch.split("_", 1)[1].rstrip("af"))


def arch_runs_on(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch build compiled for ``arch_list`` (``torch.cuda.get_arch_list()``) has kernels that run on a
    GPU of ``capability``: a binary (``sm_XY``) of the same major version and no newer minor, or PTX
    (``compute_XY``) no newer than the GPU, which the driver compiles for it. (An L4, 8.9, runs sm_86 code.)"""
    major, minor = capability
    device = 10 * major + minor
    for arch in arch_list:
        code = _arch_version(arch)
        if arch.startswith("sm_") and code // 10 == major and code % 10 <= minor:
            return True
        if arch.startswith("compute_") and code <= device:
            return True
    return False


def gpu_problem(device: torch.device | str | int | None = None,
                min_capability: tuple[int, int] = MIN_CUDA_CAPABILITY) -> str | None:
    """None when the CUDA GPU ``device`` can run the course's GPU code; otherwise what is wrong, naming the GPU,
    and the way out. Two checks: compute capability >= ``min_capability`` (bitsandbytes' 4-bit kernels), and
    kernels for it in this torch build (else every CUDA call fails with "no kernel image is available")."""
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch"
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
    name, capability = torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))
    cap = ".".join(map(str, capability))
    colab = "On Colab: Runtime > Change runtime type > T4 GPU (or newer). Without one, run the CPU path."
    if capability < tuple(min_capability):
        return (f"{name} has compute capability {cap}; the course's GPU code (bitsandbytes 4-bit) needs "
                f"{'.'.join(map(str, min_capability))} or newer (T4, L4, A100, H100, RTX 20xx or newer). {colab}")
    arch_list = torch.cuda.get_arch_list()
    if arch_list and not arch_runs_on(capability, arch_list):
        return (f"{name} (compute capability {cap}) is not a GPU this PyTorch build has kernels for (torch "
                f"{torch.__version__} was built for {' '.join(arch_list)}): every CUDA operation would fail with "
                f"\"no kernel image is available\". Install a torch build that lists sm_{capability[0]}{capability[1]}, "
                f"or use another GPU. {colab}")
    return None


def compute_dtype(device: torch.device | str | None = None, requested: torch.dtype | None = None) -> torch.dtype:
    """The dtype to compute in on ``device``: bf16 on Ampere+, fp16 on older GPUs and MPS, fp32 on CPU.

    ``requested`` is honoured when it can run well there; bf16 on a pre-Ampere GPU raises with the way out.
    """
    device = torch.device(device) if device is not None else pick_device()
    if requested is not None:
        if requested == torch.bfloat16 and device.type == "cuda" and not supports_bf16(device):
            name = torch.cuda.get_device_name(device)
            cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
            raise ValueError(
                f"bf16 was requested, but {name} (compute capability {cap}) has no native bf16 "
                "(needs >= 8.0, e.g. A100, L4, RTX 30xx). Use torch.float16 with loss scaling "
                "(Trainer: fp16=True), or compute_dtype(device) to choose automatically."
            )
        return requested
    if device.type == "cuda":
        return torch.bfloat16 if supports_bf16(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def course_lib_version() -> str:
    """The version of the course_lib this process imported, and how it got here (wheel, editable or a bare path)."""
    import json

    import course_lib

    try:
        dist = importlib.metadata.distribution("course-lib")
    except importlib.metadata.PackageNotFoundError:
        return f"{course_lib.__version__} (not pip-installed: imported from {os.path.dirname(course_lib.__file__)})"
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    return dist.version + (" (editable)" if direct_url.get("dir_info", {}).get("editable") else "")


def environment(run_dtype: torch.dtype | None = None) -> dict[str, str]:
    """The facts the report prints, as a dict (tested, and reused by the build's index page). ``run_dtype``: the
    dtype this notebook's run computes in when it is not the device's default (notebook 07's T4-like presets
    compute in fp16 on any GPU); the report then names both."""
    device = pick_device()
    info = {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu cores": str(os.cpu_count()),
    }
    info.update({pkg: _version(pkg) for pkg in PACKAGES})
    info["course_lib"] = course_lib_version()
    info["device"] = device.type
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{props.name} (compute capability {props.major}.{props.minor})"
        info["gpu memory"] = f"{props.total_memory / 2**30:.1f} GiB"
    default = str(compute_dtype(device)).replace("torch.", "")
    run = str(run_dtype).replace("torch.", "") if run_dtype is not None else default
    info["compute dtype"] = run if run == default else f"{run} (this run; the default here is {default})"
    ram = _total_ram_bytes()
    if ram:
        info["ram"] = f"{ram / 2**30:.1f} GiB"
    info["on colab"] = str(on_colab())
    return info


def _total_ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def on_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def report(run_dtype: torch.dtype | None = None) -> None:
    """Print the environment (first code cell of every notebook); ``environment()`` returns the same as a dict."""
    info = environment(run_dtype)
    width = max(map(len, info))
    print("\n".join(f"{key:<{width}}  {value}" for key, value in info.items()))
