"""Checkers for notebook 04 (NF4 quantization)."""

from __future__ import annotations

import torch

from .core import call_own, checker, fail, passed


def _course_quantizer():
    """The course's NF4 steps and bitsandbytes' own: what exercises 2-4 ask the student to write."""
    import bitsandbytes.functional as bnbF

    from course_lib import nf4

    return (nf4.quantize_nf4, nf4.scale_blocks, nf4.nearest_code, nf4.level_usage, nf4.roundtrip,
            bnbF.quantize_4bit, bnbF.quantize_blockwise)


@checker
def check_nf4_table(fn) -> None:
    """``fn(offset)`` -> the 16 NF4 values from normal quantiles: bitsandbytes' table at its offset, and the same
    construction at other offsets (so a copied table fails)."""
    import bitsandbytes.functional as bnbF

    from course_lib import nf4

    hints = ("the positive half is 8 quantiles of N(0, 1) at probabilities from offset down towards 0.5; the "
             "negative half 7 such quantiles, negated; then an exact 0; then divide by the largest value.",
             "ndtri of torch.linspace(offset, 0.5, 9) without its last point (0.5) gives the 8 positive "
             "quantiles; 8 points, negated, give the 7 negative ones.",
             "probabilities in float32 (linspace's default), quantiles in float64, then concatenate positive, "
             "zero and negative, convert to float32, sort and divide by the maximum: bitsandbytes' order.")
    bnb_table = bnbF.get_4bit_type("nf4", device="cpu")
    offsets = (nf4.NF4_OFFSET, 0.99, 0.95)
    expected = {o: nf4.nf4_code_from_normal(o) for o in offsets}  # the course's, computed here, before
    forbidden = (nf4.nf4_code_from_normal, bnbF.get_4bit_type, bnbF.create_normal_map)
    exact = False
    for offset in offsets:
        got = call_own(fn, offset, name="nf4_table", forbidden=forbidden, hints=hints,
                       write_from="torch.special.ndtri (the quantiles themselves)")
        got = torch.as_tensor(got).float().reshape(-1)
        if got.numel() != 16:
            fail(f"nf4_table({offset}) returned {got.numel()} values, expected 16", *hints)
        if offset != nf4.NF4_OFFSET and torch.allclose(got, bnb_table, atol=1e-7):
            fail(f"nf4_table({offset}) returns bitsandbytes' table, the one for offset {nf4.NF4_OFFSET}: your "
                 "table does not depend on the offset", "derive the values from the offset you are given, with "
                 "ndtri, rather than writing them down.", *hints[1:])
        if not torch.allclose(got, expected[offset], atol=1e-6):
            worst = (got - expected[offset]).abs().max().item()
            fail(f"nf4_table({offset}): values differ from the normal-quantile construction by up to {worst:.3g}",
                 *hints)
        if offset == nf4.NF4_OFFSET:
            exact = torch.equal(got, bnb_table)
    passed("nf4_table builds NF4 from ndtri at every offset tried"
           + ("; at bitsandbytes' offset it is bitsandbytes' table bit for bit." if exact else
              "; at bitsandbytes' offset it agrees with its table to 1e-6 (for bit for bit: probabilities in "
              "float32, quantiles in float64, float32 again before sorting and dividing)."))


@checker
def check_nearest_nf4(fn) -> None:
    """``fn(x)`` -> index (0..15) of the NF4 value nearest to the float ``x`` in [-1, 1]; ties go to the lower one."""
    from course_lib import nf4

    hints = ("return an index 0..15 into nf4.NF4_CODE: the level closest to x.",
             "closest means the smallest |NF4_CODE[i] - x|; check the values exactly halfway between two levels.",
             "on an exact tie bitsandbytes keeps the lower level: it compares x with the midpoints between "
             "neighbouring levels, and x equal to a midpoint stays below it.")
    mids = ((nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2).tolist()
    cases = [-1.0, -0.7, 0.0, 0.03, 0.5, 0.99, 1.0] + mids
    for x in cases:
        got = call_own(fn, x, name="nearest_nf4", forbidden=_course_quantizer(), hints=hints,
                       write_from="nf4.NF4_CODE and a comparison of distances (or of midpoints)")
        want = int(torch.bucketize(torch.tensor([x]), torch.tensor(mids)))
        if int(got) != want:
            near = float(nf4.NF4_CODE[int(got)]) if isinstance(got, int) and 0 <= got < 16 else None
            fail(f"nearest_nf4({x:.6f}) returned {got!r}"
                 + (f", the index of NF4 value {near:.4f}, which is {abs(near - x):.4f} away" if near is not None else ""),
                 *hints)
    passed(f"nearest_nf4 agrees with bitsandbytes' rule on {len(cases)} values, midpoints (ties) included.")


@checker
def check_quantize_block(fn) -> None:
    """``fn(block)`` -> (codes int tensor, absmax float) for one block, as NF4 does it."""
    from course_lib import nf4

    g = torch.Generator().manual_seed(0)
    for block in (torch.randn(64, generator=g), torch.randn(64, generator=g) * 0.01, torch.zeros(64)):
        packed, ref_absmax = nf4.quantize_nf4(block, 64)  # the reference, before the student's code runs
        ref_codes = nf4.unpack_nibbles(packed, 64)
        codes, absmax = call_own(fn, block.clone(), name="quantize_block", forbidden=_course_quantizer(),
                                 write_from="the block's absmax and the NF4 table (nf4.NF4_CODE)",
                                 hints=("scale the block into [-1, 1] with its absmax, then find each value's "
                                        "nearest NF4 level (exercise 2) yourself.",))
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
                 "the code of each value is the index of its nearest NF4 level, as in exercise 2.")
    passed("quantize_block gives bitsandbytes' codes and absmax (an all-zero block included).")


@checker
def check_level_usage(fn) -> None:
    """``fn(blocks)`` -> the share of all values each code 0..15 receives, one block of 64 per row of ``blocks``."""
    from course_lib import nf4

    hints = ("quantize every row with your quantize_block, count how often each code 0..15 appears over all rows, "
             "and divide by the number of values.",
             "torch.bincount(codes, minlength=16) counts codes; the 16 shares must sum to 1.")
    blocks = torch.randn(300, 64, generator=torch.Generator().manual_seed(7))
    want = nf4.level_usage(blocks.reshape(-1), 64).float()  # the course's measurement, made here, before
    got = call_own(fn, blocks.clone(), name="level_usage", forbidden=_course_quantizer(), hints=hints,
                   write_from="your own quantize_block")
    got = torch.as_tensor(got).float().reshape(-1)
    if got.numel() != 16:
        fail(f"level_usage returned {got.numel()} numbers, expected 16 (one share per code)", *hints)
    if not torch.allclose(got, want, atol=1e-6):
        worst = int((got - want).abs().argmax())
        fail(f"code {worst} gets {got[worst]:.2%} in your count and {want[worst]:.2%} in bitsandbytes' codes "
             f"for the same 300 blocks (your shares sum to {got.sum():.4f})", *hints)
    passed(f"level_usage is right: on 300 Gaussian blocks of 64 the shares run from {want.min():.1%} (code "
           f"{int(want.argmin())}) to {want.max():.1%} (code {int(want.argmax())}), not 6.25% each.")


def _ledger_functions():
    from course_lib import memory, nf4

    return (nf4.bits_per_param, nf4.stored_bytes, nf4.bits_per_weight, memory.nf4_bytes, memory.bytes_per_param)


@checker
def check_bits_per_param(fn) -> None:
    """``fn(blocksize, double_quant)`` -> bits per weight."""
    from course_lib import nf4

    hints = ("every weight costs its 4-bit code plus its share of its block's scale: that share is the "
             "scale's bits divided by the block size.",
             "without double quantization each block keeps one fp32 absmax (32 bits).",
             "with double quantization each block's absmax is stored in 8 bits, and every 256 blocks share "
             "one fp32 scale of their own.")
    for bs in (64, 128, 256):
        for dq in (False, True):
            want = nf4.bits_per_param(bs, dq)
            got = call_own(fn, bs, dq, name="bits_per_param", forbidden=_ledger_functions(), hints=hints,
                           write_from="the bits each part of the format stores")
            if abs(float(got) - want) > 1e-9:
                fail(f"bits_per_param({bs}, double_quant={dq}) = {got}, which is off by {float(got) - want:+.4f} bits",
                     *hints)
    passed(f"bits_per_param: 4.5 bits at blocksize 64, {nf4.bits_per_param(64, True):.3f} with double quantization.")


def stored_by_bitsandbytes(numel: int, double_quant: bool) -> int:
    """Bytes bitsandbytes really stores for ``numel`` weights at block size 64: packed codes, block absmax (uint8
    with double quantization), and with it the second-level absmax and the offset (fp32)."""
    import bitsandbytes.functional as bnbF

    w = torch.randn(numel, generator=torch.Generator().manual_seed(0))
    packed, state = bnbF.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double_quant)
    stored = packed.numel() * packed.element_size() + state.absmax.numel() * state.absmax.element_size()
    if double_quant:
        stored += state.state2.absmax.numel() * 4 + state.offset.numel() * 4
    return stored


@checker
def check_stored_bytes_prediction(fn) -> None:
    """``fn(numel, double_quant)`` -> predicted bytes, made before bitsandbytes quantizes anything."""
    hints = ("bytes = bits per weight × number of weights / 8, with your bits_per_param at block size 64.",
             "the prediction must not quantize: it is checked against what bitsandbytes then stores.")
    forbidden = (*_ledger_functions(), *_course_quantizer())
    for numel in (2**20, 3 * 2**18):
        for dq in (False, True):
            predicted = float(call_own(fn, numel, dq, name="predict_stored_bytes", forbidden=forbidden, hints=hints,
                                       write_from="your bits_per_param (a prediction, before any quantizing)"))
            actual = stored_by_bitsandbytes(numel, dq)
            if abs(predicted - actual) > 8:
                fail(f"for {numel:,} weights (double_quant={dq}) you predict {predicted:,.0f} bytes; bitsandbytes "
                     f"stores {actual:,} bytes of codes and block constants", *hints)
    passed(f"your ledger predicts bitsandbytes' storage to within 8 bytes (for {2**20:,} weights with double "
           f"quantization it stores {stored_by_bitsandbytes(2**20, True):,} bytes; the few bytes left are the "
           "fp32 offset the ledger leaves out).")
