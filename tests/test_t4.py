"""course_lib.t4 on a CPU: the kernel limits, which SDPA kernel ran, the GPU checks, the dtype rule, the time split
and the T4 estimate; and the one T4 memory number against what the GPU runs measured outside the allocator."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from course_lib import memory, resources, t4


def test_limit_attention_kernels_sets_what_sm75_has_and_restores():
    b = torch.backends.cuda
    before = t4.limit_attention_kernels(t4.T4_KERNELS)
    try:
        assert not b.flash_sdp_enabled() and not b.cudnn_sdp_enabled()
        assert b.mem_efficient_sdp_enabled() and b.math_sdp_enabled()
    finally:
        t4.restore_attention_kernels(before)
    assert b.flash_sdp_enabled() == before["flash"] and b.cudnn_sdp_enabled() == before["cudnn"]
    with pytest.raises(ValueError, match="unknown attention kernel.*xformers"):
        t4.limit_attention_kernels(("xformers",))


def test_sdpa_kernels_names_the_kernel_that_ran_once_per_call():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 16, 8, generator=g, requires_grad=True)
    kv = torch.randn(1, 2, 16, 8, generator=g)
    with t4.SDPAKernels() as seen:
        F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True).sum().backward()
    assert seen.counts == {"flash (CPU)": 1}  # the backward is not a second call
    with t4.SDPAKernels() as seen, sdpa_kernel(SDPBackend.MATH):
        for _ in range(3):
            F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
    assert seen.counts == {"math": 3} and seen.names == "math"
    with t4.SDPAKernels() as seen:
        torch.ones(3) @ torch.ones(3)
    assert seen.names == "none"


def test_the_dispatchers_choice_is_what_runs():
    assert t4.sdpa_kernel_for((1, 4, 16, 8), 2, torch.float32, "cpu", enable_gqa=True) == "flash (CPU)"
    with sdpa_kernel(SDPBackend.MATH):
        assert t4.sdpa_kernel_for((1, 4, 16, 8), 2, torch.float32, "cpu", enable_gqa=True) == "math"


def test_gpu_checks_name_the_gpu_and_the_way_out(monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(t4.GPUNeededError, match="no CUDA GPU.*T4 GPU"):
            t4.emulate()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla P100-PCIE-16GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (6, 0))
    with pytest.raises(t4.GPUNeededError, match=r"Tesla P100-PCIE-16GB has compute capability 6\.0.*7\.5 or newer"):
        t4.check_gpu()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Future GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (13, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90"])
    with pytest.raises(t4.GPUNeededError, match=r"Future GPU \(compute capability 13\.0\) is not a GPU this PyTorch "
                                                r"build has kernels for.*sm_75 sm_80 sm_90"):
        t4.check_gpu()
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_90", "compute_90"])  # PTX: JIT-able
    assert t4.check_gpu() == ("Future GPU", (13, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    assert t4.check_gpu() == ("Tesla T4", (7, 5)) and t4.is_t4()


def test_dtype_under_the_emulation(monkeypatch):
    assert t4.check_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="no native bf16.*torch.float16"):
        t4.check_dtype(torch.bfloat16)
    monkeypatch.setattr(t4, "_active", t4.Emulation("NVIDIA H200", (9, 0), 150 * 2**30, memory.usable_bytes("T4")))
    assert t4.compute_dtype() is torch.float16
    assert "T4 emulation on NVIDIA H200" in str(t4.active()) and "efficient and math" in str(t4.active())


def test_t4_estimate_scales_kernel_time_only():
    st = t4.StepTime(wall_s=1.0, kernel_s=0.6, gpu="NVIDIA H100 80GB HBM3")
    assert st.host_s == pytest.approx(0.4)
    low, high = t4.estimate_t4_seconds(st, repeats=10)
    assert low == pytest.approx(10 * (0.6 * 3350 / 320 + 0.4))
    assert high == pytest.approx(10 * (0.6 * 989 / 65 + 0.4 * t4.HOST_SLOWDOWN))
    unknown = t4.estimate_t4_seconds(t4.StepTime(2.0, 1.0, "NVIDIA GeForce RTX 5090"))
    assert isinstance(unknown, str) and "no published figures for 'NVIDIA GeForce RTX 5090'" in unknown
    assert t4.estimate_t4_seconds(t4.StepTime(2.0, 1.0, "Tesla T4")) == (2.0, 2.0)  # measured on a T4: as is


def test_step_time_on_a_cpu_is_all_host_time():
    result, st = t4.step_time(lambda n: sum(range(n)), 10_000)
    assert result == sum(range(10_000)) and st.kernel_s == 0 and st.host_s == st.wall_s > 0 and st.gpu == "cpu"


def test_the_t4_memory_number_covers_what_the_gpu_runs_held_outside_the_allocator():
    assert memory.GPU_GIB["T4"] * 1024 == pytest.approx(15095)
    assert memory.usable_bytes("T4") == 15095 * 2**20 - memory.CUDA_OVERHEAD_MIB * 2**20
    outside = [float(r["measured_peak_gib"]) * 1024 for r in resources.measurements("long_context.csv")
               if r["kind"] == "overhead"]
    assert outside and max(outside) <= memory.CUDA_OVERHEAD_MIB
    # the committed runs capped the allocator at 900 MiB less (set before the last overhead figure was in): within
    # 64 MiB of the rule, and the headline length's reserved peak is under the rule itself
    rows = resources.measurements("long_context.csv")
    caps = {float(r["cap_gib"]) for r in rows if r["kind"] == "longest"}
    assert all(abs(c * 2**30 - memory.usable_bytes("T4")) <= 64 * 2**20 for c in caps), caps
    from course_lib import longctx

    final = longctx.STEPS[-1][0]
    longest = next(int(r["seq_len"]) for r in rows if r["step"] == final and r["kind"] == "longest")
    probe = next(r for r in rows if r["step"] == final and r["kind"] == "search" and int(r["seq_len"]) == longest)
    assert float(probe["reserved_peak_gib"]) * 2**30 <= memory.usable_bytes("T4")
