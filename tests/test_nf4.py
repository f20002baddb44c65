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


def test_asymmetric_int4_spans_each_block_and_gives_back_its_own_grid():
    g = torch.Generator().manual_seed(5)
    # a Q4_1-like tensor: in every block of 32, 16 evenly spaced values from its minimum to its maximum
    low, step = torch.randn(64, 1, generator=g), torch.rand(64, 1, generator=g) + 0.1
    codes = torch.randint(0, 16, (64, 32), generator=g)
    codes[:, 0], codes[:, 1] = 0, 15  # every block reaches both ends of its grid
    w = (codes * step + low).reshape(-1)
    assert torch.allclose(nf4.roundtrip(w, "int4-asym", 32), w, atol=1e-5)  # its own grid comes back
    x = torch.randn(4099, generator=g)  # a short last block
    back = nf4.roundtrip(x, "int4-asym", 64)
    packed, minimum, s = nf4.quantize_int4_asym(x, 64)
    assert packed.numel() == 2050 and minimum.numel() == s.numel() == 65
    assert (back - x).abs().max() <= s.max() / 2 + 1e-6  # at most half a step off
    assert torch.equal(nf4.roundtrip(torch.zeros(64), "int4-asym", 64), torch.zeros(64))  # no 0/0


def test_equal_bits_means_twice_the_block_for_two_constants():
    assert nf4.bits_per_weight("nf4", 64) == nf4.bits_per_weight("int4-asym", 128) == 4.5
    rows = nf4.equal_bits_table({"w": torch.randn(64, 256, generator=torch.Generator().manual_seed(2))}, bits=(4.5,))
    assert {r["kind"]: r["blocksize"] for r in rows} == {"nf4": 64, "fp4": 64, "int4": 64, "int4-asym": 128}
    assert all(0 < r["w"] < 0.2 for r in rows)
    with pytest.raises(ValueError, match="no block size gives"):
        nf4.equal_bits_table({"w": torch.randn(64)}, bits=(4.3,))
    with pytest.raises(ValueError, match="unknown format"):
        nf4.bits_per_weight("int3")


def test_level_usage_counts_codes_and_measures_the_crowded_middle():
    w = torch.randn(64 * 2000, generator=torch.Generator().manual_seed(0))
    usage = nf4.level_usage(w, 64)
    packed, _ = nf4.quantize_nf4(w, 64)
    assert torch.equal(usage, torch.bincount(nf4.unpack_nibbles(packed, w.numel()), minlength=16).double() / w.numel())
    assert usage.sum().item() == pytest.approx(1.0)
    assert usage.min() < 0.03 and usage.max() > 0.08  # not 1/16 each: the ends are rare, the middle crowded
    assert nf4.code_entropy(torch.full((16,), 1 / 16)) == pytest.approx(4.0)
    assert nf4.code_entropy(usage) < 4.0
    assert nf4.nf4_edge_sigma() == pytest.approx(1.848, abs=1e-3)


def test_reply_losses_add_up_to_the_course_evaluation_and_the_bootstrap_is_paired():
    from course_lib import data, models, training

    model, tokenizer = models.tiny_model("llama"), models.tiny_chat_tokenizer()
    rows = [{"instruction": f"say {i}", "response": f"{i} {i}"} for i in range(10)]
    from datasets import Dataset

    dataset = data.tokenize_dataset(Dataset.from_list(rows), tokenizer)
    sums, counts = nf4.reply_losses(model, dataset, pad_token_id=tokenizer.pad_token_id, batch_size=4)
    assert sums.numel() == counts.numel() == 10
    mean = training.evaluate(model, dataset, pad_token_id=tokenizer.pad_token_id)["loss"]
    assert (sums.sum() / counts.sum()).item() == pytest.approx(mean, rel=1e-4)
    assert nf4.paired_bootstrap(sums, sums, counts) == (0.0, 0.0, 0.0)
    diff, low, high = nf4.paired_bootstrap(sums, sums + counts * 0.1, counts)  # b is 0.1 worse on every token
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    assert "worse" in nf4.compare_line("x", "y", 0.1, 0.05, 0.2)
    assert "better" in nf4.compare_line("x", "y", -0.1, -0.2, -0.05)
    assert "inconclusive" in nf4.compare_line("x", "y", 0.01, -0.02, 0.05)
    results = nf4.model_roundtrip_losses(model, dataset, pad_token_id=tokenizer.pad_token_id,
                                         kinds=("nf4", "int4-asym"))
    assert list(results) == ["fp32 (as loaded)", "nf4 @64", "int4-asym @128"]  # 4.5 bits per weight each
    assert torch.equal(results["fp32 (as loaded)"][0], sums)  # the weights were put back
    assert not torch.equal(results["nf4 @64"][0], sums)
