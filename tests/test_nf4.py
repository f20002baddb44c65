"""course_lib.nf4 against bitsandbytes: bit-exact quantization, equal dequantization, bad input."""

import bitsandbytes.functional as F
import pytest
import torch
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

from course_lib import nf4

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _bnb(w, bs, kind="nf4"):
    packed, state = F.quantize_4bit(w, blocksize=bs, quant_type=kind, compress_statistics=False)
    return packed, state


def test_code_table_matches_bitsandbytes_and_quantiles():
    assert torch.equal(nf4.NF4_CODE, F.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(nf4.FP4_CODE, F.get_4bit_type("fp4", device="cpu"))
    assert torch.equal(nf4.nf4_code_from_normal(), nf4.NF4_CODE)
    assert nf4.NF4_CODE[7] == 0 and (nf4.NF4_CODE > 0).sum() == 8  # asymmetric: 0 exact


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bs", nf4.VALID_BLOCKSIZES)
@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_quantize_bit_exact(dtype, bs, kind):
    g = torch.Generator().manual_seed(bs)
    for shape in [(48, 128), (4097,), (3, 1001)]:  # whole blocks, a short last block, an odd size
        w = (torch.randn(shape, generator=g) * 0.02).to(dtype)
        packed, absmax = nf4.QUANTIZERS[kind][0](w, bs)
        ref, state = _bnb(w, bs, kind)
        assert packed.shape == ((w.numel() + 1) // 2,) and packed.dtype == torch.uint8
        assert torch.equal(packed, ref.view(-1)), (shape, dtype, bs)
        assert torch.equal(absmax, state.absmax)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_go_to_the_lower_code_like_bitsandbytes(dtype):
    # Values exactly on the midpoints between codes, in blocks whose absmax is 1 (so scaling is exact).
    mids = (nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2
    block = torch.cat([mids, -mids, torch.ones(1), torch.zeros(64 - 31)])
    w = block.repeat(4).to(dtype)
    packed, absmax = nf4.quantize_nf4(w, 64)
    ref, state = _bnb(w, 64)
    assert torch.equal(packed, ref.view(-1)) and torch.equal(absmax, state.absmax)
    if dtype == torch.float32:  # midpoints are exact here: each went down
        codes = nf4.unpack_nibbles(packed, w.numel())[:15]
        assert torch.equal(codes, torch.arange(15))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bs", [32, 64, 256, 1024, 4096])
def test_dequantize_equals_bitsandbytes(dtype, bs):
    w = (torch.randn(8, 4096, generator=torch.Generator().manual_seed(1)) * 0.02).to(dtype)
    packed, absmax = nf4.quantize_nf4(w, bs)
    ref, state = _bnb(w, bs)
    ours = nf4.dequantize_nf4(packed, absmax, w.shape, bs, dtype)
    if bs < 2048:
        assert torch.equal(ours, F.dequantize_4bit(ref, state))
    else:  # on AVX-512 CPUs bitsandbytes routes these to its torch reference, compiled (slow to start): call it plainly
        reference = _dequantize_4bit_compute.__wrapped__(ref.view(-1), state.absmax, nf4.NF4_CODE, bs, w.shape, dtype)
        assert torch.equal(ours, reference)


def test_dequantize_blocks_across_rows_follow_bitsandbytes_reference():
    # When a row is not a multiple of the block size, blocks run across rows. bitsandbytes' reference (and CUDA)
    # code does that; its compiled CPU kernel (0.50.2) indexes absmax per row instead and disagrees with itself.
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(2))
    packed, absmax = nf4.quantize_nf4(w, 64)
    ref, state = _bnb(w, 64)
    reference = _dequantize_4bit_compute.__wrapped__(ref.view(-1), state.absmax, nf4.NF4_CODE, 64, w.shape, torch.float32)
    assert torch.equal(nf4.dequantize_nf4(packed, absmax, w.shape, 64), reference)


def test_all_zero_block_gives_zeros_not_nan():
    w = torch.cat([torch.zeros(64), torch.randn(64)])
    packed, absmax = nf4.quantize_nf4(w)
    ref, state = _bnb(w, 64)
    assert torch.equal(packed, ref.view(-1)) and absmax[0] == 0
    out = nf4.dequantize_nf4(packed, absmax, w.shape)
    assert torch.equal(out[:64], torch.zeros(64)) and torch.isfinite(out).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_are_refused(bad):
    w = torch.randn(128)
    w[70] = bad
    with pytest.raises(ValueError, match="NaN/Inf"):
        nf4.quantize_nf4(w)


@pytest.mark.parametrize("bs", [0, 16, 48, 100, 8192])
def test_invalid_blocksize(bs):
    with pytest.raises(ValueError, match="power of two from 32 to 4096"):
        nf4.quantize_nf4(torch.randn(256), bs)
    with pytest.raises(ValueError):  # bitsandbytes refuses the same
        F.quantize_4bit(torch.randn(256), blocksize=bs, quant_type="nf4")


def test_integer_tensor_refused():
    with pytest.raises(TypeError, match="w.float"):
        nf4.quantize_nf4(torch.arange(128))


def test_dequantize_checks_sizes():
    packed, absmax = nf4.quantize_nf4(torch.randn(128))
    with pytest.raises(ValueError, match="packed bytes"):
        nf4.dequantize_nf4(packed, absmax, (256,))


def test_double_quantization_follows_bitsandbytes():
    w = torch.randn(256, 1024, generator=torch.Generator().manual_seed(3)) * 0.02
    packed, absmax = nf4.quantize_nf4(w)
    codes, absmax2, offset = nf4.double_quantize(absmax)
    ref, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert torch.equal(packed, ref.view(-1))
    assert torch.equal(offset, state.offset) and torch.equal(absmax2, state.state2.absmax)
    assert torch.equal(nf4.DYNAMIC_CODE, F.create_dynamic_map())
    # bitsandbytes' CPU kernel searches approximately: it may pick a neighbouring code for values on a midpoint.
    agree = (codes == state.absmax).float().mean().item()
    assert agree > 0.99
    restored = nf4.double_dequantize(codes, absmax2, offset)
    theirs = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
    step = absmax2.max() * 0.02  # the widest code gap of the dynamic map near |x| = 1 is ~1.4% of the block max
    assert (restored - theirs).abs().max() <= step
    assert (restored - absmax).abs().max() / absmax.max() < 0.02


def test_bits_per_param_ledger_matches_stored_bytes():
    assert nf4.bits_per_param(64) == 4.5
    assert abs(nf4.bits_per_param(64, double_quant=True) - 4.127) < 1e-3
    w = torch.randn(1024, 1024)
    packed, absmax = nf4.quantize_nf4(w)
    assert nf4.stored_bytes(w.numel()) == packed.numel() + 4 * absmax.numel()
    codes, absmax2, _ = nf4.double_quantize(absmax)
    assert nf4.stored_bytes(w.numel(), double_quant=True) == packed.numel() + codes.numel() + 4 * absmax2.numel() + 4


def test_nf4_beats_int4_on_gaussian_weights():
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(4))
    assert nf4.relative_rmse(w, "nf4") < nf4.relative_rmse(w, "int4")
    assert nf4.relative_rmse(w, "nf4") < nf4.relative_rmse(w, "fp4")
    with pytest.raises(ValueError, match="choose one of"):
        nf4.relative_rmse(w, "int3")
