"""Wall-clock latency of a few candidates timed in turns (notebook 02: base vs LoRA unmerged vs merged)."""

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
