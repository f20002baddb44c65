"""Checkers for notebook 04 (NF4 quantization)."""

from __future__ import annotations

import torch

from .core import _call, checker, fail, passed


@checker
def check_nearest_nf4(fn) -> None:
    """``fn(x)`` -> index (0..15) of the NF4 value nearest to the float ``x`` in [-1, 1]; ties go to the lower one."""
    from course_lib import nf4

    mids = ((nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2).tolist()
    cases = [-1.0, -0.7, 0.0, 0.03, 0.5, 0.99, 1.0] + mids
    for x in cases:
        got = _call(fn, x, name="nearest_nf4")
        want = int(torch.bucketize(torch.tensor([x]), torch.tensor(mids)))
        if int(got) != want:
            near = float(nf4.NF4_CODE[int(got)]) if isinstance(got, int) and 0 <= got < 16 else None
            fail(f"nearest_nf4({x:.6f}) returned {got!r}"
                 + (f", the index of NF4 value {near:.4f}, which is {abs(near - x):.4f} away" if near is not None else ""),
                 "return an index 0..15 into nf4.NF4_CODE: the level closest to x.",
                 "closest means the smallest |NF4_CODE[i] - x|; check the values exactly halfway between two levels.",
                 "on an exact tie bitsandbytes keeps the lower level: it compares x with the midpoints between "
                 "neighbouring levels, and x equal to a midpoint stays below it.")
    passed(f"nearest_nf4 agrees with bitsandbytes' rule on {len(cases)} values, midpoints (ties) included.")


@checker
def check_quantize_block(fn) -> None:
    """``fn(block)`` -> (codes int tensor, absmax float) for one block, as NF4 does it."""
    from course_lib import nf4

    g = torch.Generator().manual_seed(0)
    for block in (torch.randn(64, generator=g), torch.randn(64, generator=g) * 0.01, torch.zeros(64)):
        codes, absmax = _call(fn, block.clone(), name="quantize_block")
        packed, ref_absmax = nf4.quantize_nf4(block, 64)
        ref_codes = nf4.unpack_nibbles(packed, 64)
        if abs(float(absmax) - ref_absmax.item()) > 1e-12:
            fail(f"absmax is {float(absmax)} for a block whose largest |value| is {block.abs().max().item()}",
                 "absmax is the block's scale: the number that maps the block onto [-1, 1].",
                 "take the largest absolute value in the block (the sign does not matter).")
        got_codes = torch.as_tensor(codes).long().reshape(-1)
        if got_codes.shape != ref_codes.shape or not torch.equal(got_codes, ref_codes):
            wrong = (int((got_codes != ref_codes).sum()) if got_codes.shape == ref_codes.shape
                     else f"shape {tuple(got_codes.shape)} instead of {tuple(ref_codes.shape)}:")
            fail(f"{wrong} of the {block.numel()} codes differ from bitsandbytes' for the same block "
                 f"(block absmax {ref_absmax.item():.4g})",
                 "scale the block into [-1, 1] with its absmax first, then map each value to the nearest NF4 level.",
                 "multiply by 1 / absmax (bitsandbytes does, and it rounds differently from dividing); an all-zero "
                 "block has absmax 0: scale it by 0, not by 1/0.",
                 "the code of each value is the index of its nearest NF4 level, as in exercise 1.")
    passed("quantize_block gives bitsandbytes' codes and absmax (an all-zero block included).")


@checker
def check_bits_per_param(fn) -> None:
    """``fn(blocksize, double_quant)`` -> bits per weight."""
    from course_lib import nf4

    for bs in (64, 128, 256):
        for dq in (False, True):
            got = _call(fn, bs, dq, name="bits_per_param")
            want = nf4.bits_per_param(bs, dq)
            if abs(float(got) - want) > 1e-9:
                fail(f"bits_per_param({bs}, double_quant={dq}) = {got}, which is off by {float(got) - want:+.4f} bits",
                     "every weight costs its 4-bit code plus its share of its block's scale: that share is the "
                     "scale's bits divided by the block size.",
                     "without double quantization each block keeps one fp32 absmax (32 bits).",
                     "with double quantization each block's absmax is stored in 8 bits, and every 256 blocks share "
                     "one fp32 scale of their own.")
    passed(f"bits_per_param: 4.5 bits at blocksize 64, {nf4.bits_per_param(64, True):.3f} with double quantization.")


