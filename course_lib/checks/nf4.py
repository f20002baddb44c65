"""Checkers for notebooks 04 (NF4 quantization) and 05 (memory budgets)."""

from __future__ import annotations

import torch

from .core import _call, fail, passed


def check_nearest_nf4(fn) -> None:
    """``fn(x)`` -> index (0..15) of the NF4 value nearest to the float ``x`` in [-1, 1]; ties go to the lower one."""
    from course_lib import nf4

    mids = ((nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2).tolist()
    cases = [-1.0, -0.7, 0.0, 0.03, 0.5, 0.99, 1.0] + mids
    for x in cases:
        got = _call(fn, x, name="nearest_nf4")
        want = int(torch.bucketize(torch.tensor([x]), torch.tensor(mids)))
        if int(got) != want:
            fail(f"nearest_nf4({x:.6f}) returned {got}, expected {want} (NF4 value {nf4.NF4_CODE[want]:.4f})",
                 "return the index i minimising |NF4_CODE[i] - x|; on an exact tie keep the smaller index "
                 "(bitsandbytes compares with the midpoints: x <= midpoint stays below).")
    passed(f"nearest_nf4 agrees with bitsandbytes' rule on {len(cases)} values, midpoints (ties) included.")


def check_quantize_block(fn) -> None:
    """``fn(block)`` -> (codes int tensor, absmax float) for one block, as NF4 does it."""
    from course_lib import nf4

    g = torch.Generator().manual_seed(0)
    for block in (torch.randn(64, generator=g), torch.randn(64, generator=g) * 0.01, torch.zeros(64)):
        codes, absmax = _call(fn, block.clone(), name="quantize_block")
        packed, ref_absmax = nf4.quantize_nf4(block, 64)
        ref_codes = nf4.unpack_nibbles(packed, 64)
        if abs(float(absmax) - ref_absmax.item()) > 1e-12:
            fail(f"absmax is {float(absmax)}, expected {ref_absmax.item()}", "absmax is the largest |value| in the block.")
        if not torch.equal(torch.as_tensor(codes).long().reshape(-1), ref_codes):
            fail("codes differ from bitsandbytes' for the same block",
                 "scale with block * (1 / absmax) (guard absmax = 0), then take the nearest NF4 index per value.")
    passed("quantize_block gives bitsandbytes' codes and absmax (an all-zero block included).")


def check_bits_per_param(fn) -> None:
    """``fn(blocksize, double_quant)`` -> bits per weight."""
    from course_lib import nf4

    for bs in (64, 128, 256):
        for dq in (False, True):
            got = _call(fn, bs, dq, name="bits_per_param")
            want = nf4.bits_per_param(bs, dq)
            if abs(float(got) - want) > 1e-9:
                fail(f"bits_per_param({bs}, double_quant={dq}) = {got}, expected {want:.4f}",
                     "4 bits per weight + 32 bits of fp32 absmax per block; with double quantization 8 bits per "
                     "block + 32 bits per 256 blocks.")
    passed(f"bits_per_param: 4.5 bits at blocksize 64, {nf4.bits_per_param(64, True):.3f} with double quantization.")


def check_lora_memory(fn) -> None:
    """``fn(params, adapter_params)`` -> static bytes of LoRA in bf16 with fp32 adapters trained by AdamW."""
    cases = [(6_738_415_616, 4_194_304), (1_235_814_400, 851_968), (1000, 10)]
    for params, adapters in cases:
        got = _call(fn, params, adapters, name="lora_static_bytes")
        want = 2 * params + 16 * adapters
        if int(got) != want:
            fail(f"lora_static_bytes({params:,}, {adapters:,}) = {got:,}, expected {want:,}",
                 "bf16 weights take 2 bytes; each fp32 adapter parameter takes 4 (value) + 4 (gradient) + "
                 "8 (AdamW's two moments).")
    passed("lora_static_bytes is right: 2 bytes per frozen weight + 16 per trainable adapter parameter.")
