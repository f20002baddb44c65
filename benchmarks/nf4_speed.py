"""Speed of course_lib.nf4 against bitsandbytes on CPU: quantize_nf4 / dequantize_nf4 on fp32 matrices.

    .venv/bin/python benchmarks/nf4_speed.py [--sizes 4096 8192] [--repeats 5]

Each pair of calls is interleaved (ours, theirs, ours, theirs, ...) so that load from other processes hits both
alike; the table gives the median time of each and the ratio bitsandbytes / ours (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch


def _median_seconds(fns, repeats: int) -> list[float]:
    for fn in fns:  # warm-up (first-call costs, allocator)
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def run(sizes=(4096, 8192), repeats: int = 5, blocksize: int = 64) -> list[dict]:
    import bitsandbytes.functional as F

    from course_lib import nf4

    rows = []
    for size in sizes:
        w = torch.randn(size, size, generator=torch.Generator().manual_seed(0)) * 0.02
        packed, state = F.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
        ours_packed, ours_absmax = nf4.quantize_nf4(w, blocksize)
        assert torch.equal(ours_packed, packed.view(-1)) and torch.equal(ours_absmax, state.absmax)
        q_ours, q_bnb = _median_seconds(
            [partial(nf4.quantize_nf4, w, blocksize),
             partial(F.quantize_4bit, w, blocksize=blocksize, quant_type="nf4")], repeats)
        d_ours, d_bnb = _median_seconds(
            [partial(nf4.dequantize_nf4, ours_packed, ours_absmax, w.shape, blocksize),
             partial(F.dequantize_4bit, packed, state)], repeats)
        rows.append(dict(op="quantize_nf4", shape=f"{size}x{size}", ours_ms=1e3 * q_ours, bnb_ms=1e3 * q_bnb))
        rows.append(dict(op="dequantize_nf4", shape=f"{size}x{size}", ours_ms=1e3 * d_ours, bnb_ms=1e3 * d_bnb))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import bitsandbytes

    print(f"torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'op':<16}{'shape':>11}{'ours ms':>10}{'bnb ms':>10}{'bnb/ours':>10}")
    for r in run(args.sizes, args.repeats):
        print(f"{r['op']:<16}{r['shape']:>11}{r['ours_ms']:>10.1f}{r['bnb_ms']:>10.1f}{r['bnb_ms'] / r['ours_ms']:>10.2f}")


if __name__ == "__main__":
    main()
