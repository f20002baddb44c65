"""Speed of course_lib.nf4 against bitsandbytes on CPU: quantize_nf4 / dequantize_nf4 on fp32 matrices.

    .venv/bin/python benchmarks/nf4_speed.py [--sizes 4096 8192] [--repeats 5]

Each group of calls is interleaved (ours, theirs, ours, theirs, ...) so that load from other processes hits all
alike; the table gives the median time of each and the ratio bitsandbytes / ours (> 1: ours is faster).
``dequantize_nf4`` is written to be read (unpack, look up, scale); ``fast_dequantize_nf4`` below is the same
result with a benchmark trick, measured beside it: one gather of both values of a byte at once.
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


_PAIR_TABLES: dict[tuple, torch.Tensor] = {}


def fast_dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = 64) -> torch.Tensor:
    """``nf4.dequantize_nf4`` in fp32 with one 1-D gather per byte: a 256-entry table maps a byte to its two decoded
    fp32 values stored as one int64 (cached per code table); then each full block is scaled in place."""
    from course_lib import nf4

    code = nf4.NF4_CODE
    key = tuple(code.tolist())
    if key not in _PAIR_TABLES:
        byte = torch.arange(256)
        pairs = torch.stack([code[byte >> 4], code[byte & 0xF]], dim=1).contiguous()
        _PAIR_TABLES[key] = pairs.view(torch.int64).view(-1)
    shape = torch.Size(shape)
    n = shape.numel()
    values = _PAIR_TABLES[key].index_select(0, packed.reshape(-1).to(torch.int32)).view(torch.float32)[:n]
    absmax = absmax.reshape(-1).float()
    full = n - n % blocksize
    out = torch.empty(n, dtype=torch.float32)
    torch.mul(values[:full].view(-1, blocksize), absmax[: full // blocksize].unsqueeze(1),
              out=out[:full].view(-1, blocksize))
    if full < n:  # the short last block
        out[full:] = values[full:] * absmax[-1]
    return out.view(shape)


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
        readable = nf4.dequantize_nf4(ours_packed, ours_absmax, w.shape, blocksize)
        assert torch.equal(fast_dequantize_nf4(ours_packed, ours_absmax, w.shape, blocksize), readable)
        d_ours, d_fast, d_bnb = _median_seconds(
            [partial(nf4.dequantize_nf4, ours_packed, ours_absmax, w.shape, blocksize),
             partial(fast_dequantize_nf4, ours_packed, ours_absmax, w.shape, blocksize),
             partial(F.dequantize_4bit, packed, state)], repeats)
        rows.append(dict(op="quantize_nf4", shape=f"{size}x{size}", ours_ms=1e3 * q_ours, bnb_ms=1e3 * q_bnb))
        rows.append(dict(op="dequantize_nf4", shape=f"{size}x{size}", ours_ms=1e3 * d_ours, bnb_ms=1e3 * d_bnb))
        rows.append(dict(op="fast_dequantize", shape=f"{size}x{size}", ours_ms=1e3 * d_fast, bnb_ms=1e3 * d_bnb))
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
