"""Wall-clock time of a few candidates timed in turns: inference latency (notebook 02: base vs LoRA unmerged vs
merged) and training steps (notebook 06: adapters on q and v vs on every linear layer)."""

from __future__ import annotations

import time

import torch


@torch.inference_mode()
def compare_latency(fns: dict, repeats: int = 20, warmup: int = 2) -> dict[str, float]:
    """Best (minimum) wall time in seconds of each ``fn()`` in ``fns``, timed in turns (A, B, A, B, ...).
    The minimum, as ``timeit`` recommends: other processes on a shared CPU only ever add time, so the fastest
    run is the closest to the cost of the code itself; taking turns spreads any slowdown over all candidates."""
    from tqdm.auto import tqdm

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in tqdm(range(repeats), desc="timing"):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def compare_step_times(fns: dict, repeats: int = 7, warmup: int = 1) -> dict[str, float]:
    """Best (minimum) wall time in seconds of each ``fn()`` with autograd on (a training step: forward and
    backward), timed in turns (A, B, A, B, ...) after ``warmup`` calls each. The minimum, as for inference: other
    work on a shared CPU only ever adds time. (Measured on the shared 2-core machine: the ratio of two models' best
    times stayed at 1.31-1.32 while the ratio of their medians swung from 0.58 to 2.14.)"""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}
