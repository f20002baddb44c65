"""Checkers for notebook 08 (LoRA and QLoRA on several GPUs): per-GPU memory under FSDP, checked against
``memory.estimate_per_gpu_memory`` (arithmetic only: fast on any CPU)."""

from __future__ import annotations

from .core import _call, checker, fail, passed

GB = 1e9
SHARDED = ("weights", "adapters", "gradients", "optimizer_state")  # what FSDP FULL_SHARD splits N ways


def _fsdp_base(config):
    from course_lib import memory

    # the FSDP-QLoRA recipe keeps the non-4-bit weights in the compute dtype (one dtype per FSDP unit)
    return memory.estimate_training_memory(config, "qlora", upcast_non_quantized=False)


@checker
def check_fsdp_shard(fn) -> None:
    """``fn(parts, num_gpus)`` -> the per-GPU bytes of each part of a one-GPU QLoRA estimate (``parts``, a dict
    like ``estimate.breakdown()``) under FSDP FULL_SHARD, leaving out the communication buffers."""
    from course_lib import memory, models

    for shape in ("llama-2-7b", "llama-2-70b"):
        config = models.synthetic_config(shape)
        parts = _fsdp_base(config).breakdown()
        for n in (2, 4):
            got = _call(fn, dict(parts), n, name="fsdp_shard")
            if not isinstance(got, dict) or set(got) != set(parts):
                fail(f"fsdp_shard returned {type(got).__name__} with keys "
                     f"{sorted(got) if isinstance(got, dict) else '-'}", f"return a dict with the keys {sorted(parts)}.")
            want = memory.estimate_per_gpu_memory(config, "qlora", n, "fsdp").breakdown()
            for part in parts:
                if abs(float(got[part]) - want[part]) > n:  # ceil vs true division: at most a byte per GPU
                    split = part in SHARDED
                    fail(f"{shape} on {n} GPUs: {part} is {float(got[part]) / GB:.3f} GB per GPU; one GPU holds "
                         f"{parts[part] / GB:.3f} GB of it",
                         "FSDP FULL_SHARD splits what belongs to the model's parameters across the GPUs; what each "
                         "GPU computes for its own batch stays whole.",
                         f"{part} is {'split' if split else 'not split'} N ways.",
                         "split: weights, adapters, gradients, optimizer state (each GPU keeps 1/N). Not split: "
                         "the activations and logits of the GPU's own batch, and bitsandbytes' quantization state "
                         "(kept on every GPU's modules: it is not a parameter).")
    passed("fsdp_shard splits what FSDP splits and keeps the rest whole, for 7B and 70B on 2 and 4 GPUs.")


def fewest(config, gpu_bytes: float, seq_len: int):
    from course_lib import memory

    for n in (1, 2, 4, 8):
        if memory.estimate_per_gpu_memory(config, "qlora", n, "fsdp", seq_len=seq_len).total_bytes <= gpu_bytes:
            return n
    return None


@checker
def check_fewest_gpus(fn) -> None:
    """``fn(config, gpu_bytes, seq_len)`` -> the fewest GPUs among 1, 2, 4, 8 on which QLoRA with FSDP fits per
    ``memory.estimate_per_gpu_memory`` (peak per GPU <= gpu_bytes), or None when 8 are not enough."""
    from course_lib import memory, models

    cases = [("llama-2-70b", 24, 2048), ("llama-2-70b", 48, 2048), ("llama-2-13b", 16, 1024),
             ("llama-2-7b", 16, 512), ("llama-2-70b", 16, 4096)]
    for shape, gb, seq in cases:
        config = models.synthetic_config(shape)
        got = _call(fn, config, gb * GB, seq, name="fewest_gpus")
        want = fewest(config, gb * GB, seq)
        if got != want:
            per_gpu = {n: memory.estimate_per_gpu_memory(config, "qlora", n, "fsdp", seq_len=seq).total_gb
                       for n in (1, 2, 4, 8) if n in (got, want) or got not in (1, 2, 4, 8)}
            seen = ", ".join(f"{n} GPU{'s' * (n > 1)}: {v:.1f} GB each" for n, v in sorted(per_gpu.items()))
            fail(f"{shape}, {seq} tokens, {gb} GB GPUs: you say {got!r}" + (f" ({seen})" if seen else ""),
                 "ask the estimator for one GPU's peak with N GPUs: memory.estimate_per_gpu_memory(config, 'qlora', "
                 "N, 'fsdp', seq_len=...).total_bytes.",
                 "try N = 1, 2, 4, 8 in order and stop at the first that fits; return None when none does.",
                 "the activations do not shrink with N (each GPU runs its own batch): at long sequences even 8 GPUs "
                 "may not be enough.")
    passed(f"fewest_gpus agrees with the estimator on {len(cases)} cases (70B at 2,048 tokens on 24 GB GPUs: "
           f"{fewest(models.synthetic_config('llama-2-70b'), 24 * GB, 2048)}).")
