"""NF4 quantization from scratch, bit-exact with bitsandbytes (notebook 04).

A 4-bit code is a lookup table of 16 values in [-1, 1]. Weights are cut into blocks of ``blocksize`` numbers; each
block is divided by its largest magnitude (``absmax``, kept in fp32) and every scaled number is replaced by the index
of the nearest table value. Two 4-bit indices are packed per byte, the first in the high nibble. NF4, FP4 and INT4
differ only in their table.

Rounding follows bitsandbytes' reference implementation (``backends/default/ops.py``, what ``quantize_4bit`` runs
on a CPU): scale full blocks by ``x * (1 / absmax)`` and the short last block by ``x / absmax``, then
``torch.bucketize`` against the midpoints of the sorted table, so a value exactly on a midpoint goes to the lower
code. A size that is not a multiple of the block size gets a short last block with its own absmax (as in
bitsandbytes); an odd size is padded with one zero code, so ``packed`` has ``ceil(numel / 2)`` bytes.
"""

from __future__ import annotations

import math

import torch

# bitsandbytes' NF4 table (functional.get_4bit_type("nf4")), in code order = sorted order.
NF4_CODE = torch.tensor(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
     -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
     0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
     0.7229568362236023, 1.0],
    dtype=torch.float32,
)
# bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit) in code order: index = bit pattern, not sorted.
FP4_CODE = torch.tensor([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3], dtype=torch.float32) / 12
# Symmetric absmax INT4: the 15 levels -7..7 (a 16th level would make the grid lopsided), stored as codes 0..14.
INT4_CODE = torch.arange(-7, 8, dtype=torch.float32) / 7

CODES = {"nf4": NF4_CODE, "fp4": FP4_CODE, "int4": INT4_CODE}
VALID_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------------ the NF4 table
NF4_OFFSET = 0.9677083  # = mean(1 - 1/(2*15), 1 - 1/(2*16)) = 0.96770833..., rounded as bitsandbytes has it


def nf4_code_from_normal(offset: float = NF4_OFFSET) -> torch.Tensor:
    """Derive the 16 NF4 values from quantiles of N(0, 1), as QLoRA does (``create_normal_map``).

    The table is asymmetric so that 0 is exactly representable: 8 quantiles for the positive half, 7 for the
    negative half, plus 0. The outermost quantile ``offset`` is the mean of 1 - 1/(2*15) and 1 - 1/(2*16) (the
    two natural choices for 15 and 16 bins), rounded to 7 digits as in bitsandbytes: with it the float32 result
    equals ``NF4_CODE`` bit for bit. ``ndtri`` is the inverse normal CDF. Values are normalised to [-1, 1].
    """
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())  # 8 values > 0
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())  # 7 values < 0
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float().sort().values
    return values / values.max()


# ------------------------------------------------------------------------------------------ validation
def _check_blocksize(blocksize: int) -> None:
    if blocksize not in VALID_BLOCKSIZES:
        raise ValueError(f"blocksize={blocksize!r} is not supported: use a power of two from 32 to 4096, "
                         f"one of {VALID_BLOCKSIZES} (bitsandbytes accepts the same).")


def _check_weights(w: torch.Tensor) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(w).__name__}")
    if w.dtype not in FLOAT_DTYPES:
        raise TypeError(f"cannot quantize a {w.dtype} tensor: 4-bit quantization takes float32, float16 or "
                        "bfloat16 weights. Convert first, e.g. w.float().")
    if w.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")


def _check_finite(absmax: torch.Tensor, w: torch.Tensor) -> None:
    # A NaN or Inf anywhere makes its block's absmax NaN/Inf: checking the absmax (one value per block) is a
    # cheap way to check every weight.
    if not torch.isfinite(absmax).all():
        bad = (~torch.isfinite(w)).sum().item()
        raise ValueError(f"the tensor holds {bad} NaN/Inf value(s): their block's absmax would be NaN/Inf and every "
                         "value of that block garbage (bitsandbytes does not check). Fix or mask them first "
                         "(torch.nan_to_num, or find where they came from).")


# ------------------------------------------------------------------------------------------ quantize
def quantize_nf4(w: torch.Tensor, blocksize: int = 64, *, code: torch.Tensor = NF4_CODE) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4-quantize ``w`` -> ``(packed, absmax)``: ``packed`` holds ceil(numel/2) uint8 bytes (first value in the
    high nibble), ``absmax`` one float32 per block. Bit-exact with ``bitsandbytes.functional.quantize_4bit(w,
    blocksize=blocksize, quant_type="nf4")`` (whose packed tensor has shape (bytes, 1)). Another 16-entry ``code``
    (FP4, INT4) runs the same three steps."""
    _check_weights(w)
    _check_blocksize(blocksize)
    # 1. scale: cut the weights into blocks; divide each block by its largest magnitude, into [-1, 1]
    absmax, scaled = scale_blocks(w.detach().reshape(-1).float(), blocksize)
    _check_finite(absmax, w)
    # 2. nearest code: each scaled value becomes the index (0..15) of the closest table value
    q = nearest_code(scaled, code)
    # 3. pack: two 4-bit indices per byte; an odd count is padded with the code of 0, as bitsandbytes does
    packed = pack_nibbles(q, pad=int(nearest_code(torch.zeros(1), code)))
    return packed, absmax


def scale_blocks(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``flat`` (fp32) into blocks; return (absmax per block, values scaled into [-1, 1])."""
    n = flat.numel()
    full = n - n % blocksize
    blocks = flat[:full].view(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    # An all-zero block has absmax 0: clamping the divisor keeps its values at exactly 0 (no 0/0 = NaN).
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).view(-1)
    if full < n:  # the short last block, divided (not multiplied) exactly as bitsandbytes does
        am = flat[full:].abs().max()
        absmax = torch.cat([absmax, am.view(1)])
        scaled = torch.cat([scaled, flat[full:] / am.clamp(min=1e-38)])
    return absmax, scaled


def nearest_code(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index (into ``code``) of the nearest value, as uint8; a tie on a midpoint goes to the smaller value."""
    code = code.to(scaled.device)  # the table lives on the CPU; the weights may be on a GPU
    order = torch.argsort(code)  # NF4 and INT4 are sorted already; FP4's table is in bit-pattern order
    sorted_code = code[order]
    midpoints = (sorted_code[:-1] + sorted_code[1:]) / 2
    # Values outside [-1, 1] (rounding of x * (1/absmax)) land in the end buckets: no clamp needed.
    return order[torch.bucketize(scaled, midpoints)].to(torch.uint8)


def pack_nibbles(q: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Pack codes 0..15 two per byte, the first in the high nibble; an odd count is padded with code ``pad``."""
    q = q.reshape(-1).to(torch.uint8)
    if q.numel() % 2:
        q = torch.cat([q, q.new_full((1,), pad)])
    pairs = q.view(-1, 2)
    return (pairs[:, 0] << 4) | pairs[:, 1]


def unpack_nibbles(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The inverse of ``pack_nibbles``: ``numel`` codes as int64."""
    p = packed.reshape(-1).to(torch.int64)
    return torch.stack([p >> 4, p & 0xF], dim=1).view(-1)[:numel]


def quantize_fp4(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """FP4 (bitsandbytes' 1-2-1 float) version of ``quantize_nf4``, also bit-exact with bitsandbytes."""
    return quantize_nf4(w, blocksize, code=FP4_CODE)


def quantize_int4(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain symmetric INT4: round(x / absmax * 7), stored as codes 0..14."""
    return quantize_nf4(w, blocksize, code=INT4_CODE)


# ------------------------------------------------------------------------------------------ dequantize
def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape, blocksize: int = 64,
                   dtype: torch.dtype = torch.float32, *, code: torch.Tensor = NF4_CODE) -> torch.Tensor:
    """Inverse of ``quantize_nf4``, equal to bitsandbytes' reference ``dequantize_4bit`` (and to its CUDA kernel).
    Its compiled CPU kernel (0.50) disagrees when a row is not a whole number of blocks: it indexes absmax per
    row, while blocks run across rows. The arithmetic is fp32, then cast to ``dtype``."""
    shape = torch.Size([shape] if isinstance(shape, int) else shape)
    _check_packed(packed, absmax, shape.numel(), blocksize)
    # 1. unpack: two 4-bit indices per byte
    q = unpack_nibbles(packed, shape.numel())
    # 2. look up: each index's table value, in [-1, 1]
    values = code.to(q.device)[q]
    # 3. scale: every value times the absmax of its block
    scale = absmax.reshape(-1).float().repeat_interleave(blocksize)[: shape.numel()]
    return (values * scale).view(shape).to(dtype)


def _check_packed(packed: torch.Tensor, absmax: torch.Tensor, n: int, blocksize: int) -> None:
    _check_blocksize(blocksize)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8 (two 4-bit codes per byte), got {packed.dtype}")
    n_blocks = math.ceil(n / blocksize)
    if packed.numel() != (n + 1) // 2 or absmax.numel() != n_blocks:
        raise ValueError(f"{n} values need {(n + 1) // 2} packed bytes and {n_blocks} absmax values at "
                         f"blocksize {blocksize}; got {packed.numel()} and {absmax.numel()}")


def dequantize_fp4(packed, absmax, shape, blocksize: int = 64, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return dequantize_nf4(packed, absmax, shape, blocksize, dtype, code=FP4_CODE)


def dequantize_int4(packed, absmax, shape, blocksize: int = 64, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return dequantize_nf4(packed, absmax, shape, blocksize, dtype, code=INT4_CODE)


QUANTIZERS = {"nf4": (quantize_nf4, dequantize_nf4), "fp4": (quantize_fp4, dequantize_fp4),
              "int4": (quantize_int4, dequantize_int4)}


# ------------------------------------------------------------------------------ asymmetric (min-max) INT4
def quantize_int4_asym(w: torch.Tensor, blocksize: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric INT4, the strongest plain-integer baseline: each block keeps its minimum and a step
    ``(max - min) / 15``, so all 16 levels span exactly the block's range (GGUF's Q4_1 and GPTQ-style zero points
    work this way). Returns ``(packed, minimum, step)``: two fp32 constants per block, twice NF4's one absmax, so
    compare it with NF4 at *equal bits* (``bits_per_weight``), not at equal block size. 0 is not exact here."""
    _check_weights(w)
    _check_blocksize(blocksize)
    flat = w.detach().reshape(-1).float()
    n, full = flat.numel(), flat.numel() - flat.numel() % blocksize
    parts = [flat[:full].view(-1, blocksize)] + ([flat[full:].view(1, -1)] if full < n else [])
    lows, steps, codes = [], [], []
    for blocks in parts:  # whole blocks, then the short last block (its own constants, as in scale_blocks)
        low, high = blocks.amin(dim=1, keepdim=True), blocks.amax(dim=1, keepdim=True)
        _check_finite(high - low, w)
        step = (high - low) / 15
        codes.append(((blocks - low) / step.clamp(min=1e-38)).round().clamp(0, 15).reshape(-1))
        lows.append(low.reshape(-1))
        steps.append(step.reshape(-1))
    return pack_nibbles(torch.cat(codes)), torch.cat(lows), torch.cat(steps)


def dequantize_int4_asym(packed: torch.Tensor, minimum: torch.Tensor, step: torch.Tensor, shape,
                         blocksize: int = 64) -> torch.Tensor:
    """Inverse of ``quantize_int4_asym``: ``code · step + minimum`` per block, fp32."""
    shape = torch.Size([shape] if isinstance(shape, int) else shape)
    _check_packed(packed, minimum, shape.numel(), blocksize)
    q = unpack_nibbles(packed, shape.numel()).float()
    per_value = lambda c: c.float().repeat_interleave(blocksize)[: shape.numel()]  # noqa: E731
    return (q * per_value(step) + per_value(minimum)).view(shape)


KINDS = ("nf4", "fp4", "int4", "int4-asym")


def bits_per_weight(kind: str, blocksize: int = 64) -> float:
    """Storage per weight of each 4-bit format with fp32 block constants: 4 bits + 32 per block (NF4, FP4,
    symmetric INT4: one absmax) or + 64 per block (asymmetric INT4: minimum and step)."""
    if kind not in KINDS:
        raise ValueError(f"unknown format {kind!r}; choose one of {KINDS}")
    _check_blocksize(blocksize)
    return 4 + (64 if kind == "int4-asym" else 32) / blocksize


def roundtrip(w: torch.Tensor, kind: str = "nf4", blocksize: int = 64) -> torch.Tensor:
    """Quantize then dequantize ``w`` with ``kind`` ("nf4", "fp4", "int4" or "int4-asym"); returns fp32 of w's
    shape."""
    if kind == "int4-asym":
        packed, minimum, step = quantize_int4_asym(w, blocksize)
        return dequantize_int4_asym(packed, minimum, step, w.shape, blocksize)
    if kind not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {kind!r}; choose one of {KINDS}")
    quantize, dequantize = QUANTIZERS[kind]
    packed, absmax = quantize(w, blocksize)
    return dequantize(packed, absmax, w.shape, blocksize)


def relative_rmse(w: torch.Tensor, kind: str = "nf4", blocksize: int = 64) -> float:
    """||w - roundtrip(w)|| / ||w||: the error a quantizer adds, relative to the weights' size."""
    w = w.detach().float()
    return ((w - roundtrip(w, kind, blocksize)).norm() / w.norm()).item()


def error_table(tensors: dict[str, torch.Tensor], blocksizes=(64, 256, 1024, 4096), kinds=("nf4", "fp4", "int4")):
    """Rows of (data, blocksize, relative RMSE per kind) for the notebook's comparison table."""
    rows = []
    for name, w in tensors.items():
        for bs in blocksizes:
            rows.append({"data": name, "blocksize": bs, **{k: relative_rmse(w, k, bs) for k in kinds}})
    return rows


def blocksize_for_bits(kind: str, bits: float) -> int:
    """The block size at which ``kind`` costs exactly ``bits`` bits per weight (``bits_per_weight``)."""
    sizes = [bs for bs in VALID_BLOCKSIZES if math.isclose(bits_per_weight(kind, bs), bits)]
    if not sizes:
        raise ValueError(f"no block size gives {kind} exactly {bits} bits per weight; "
                         f"{kind} costs {[bits_per_weight(kind, bs) for bs in VALID_BLOCKSIZES]}")
    return sizes[0]


def equal_bits_table(tensors: dict[str, torch.Tensor], bits=(5.0, 4.5, 4.25), kinds=KINDS) -> list[dict]:
    """For each storage budget in bits per weight, each format at the block size that budget buys it
    (``bits_per_weight``), and its relative RMSE on each tensor: a comparison at equal storage."""
    rows = []
    for budget in bits:
        for kind in kinds:
            bs = blocksize_for_bits(kind, budget)
            rows.append({"bits": budget, "kind": kind, "blocksize": bs,
                         **{name: relative_rmse(w, kind, bs) for name, w in tensors.items()}})
    return rows


# ------------------------------------------------------------------------------ how often each level is used
def level_usage(w: torch.Tensor, blocksize: int = 64, code: torch.Tensor = NF4_CODE) -> torch.Tensor:
    """The share of ``w``'s values that each of the 16 codes receives (in code order), after blockwise absmax
    scaling: what "each level holds an equal share" can be checked against."""
    packed, _ = quantize_nf4(w, blocksize, code=code)
    codes = unpack_nibbles(packed, w.numel())
    return torch.bincount(codes, minlength=code.numel()).double() / codes.numel()


def code_entropy(usage: torch.Tensor) -> float:
    """Bits of information per code, from the level usage: 4.0 when all 16 levels are used equally."""
    p = usage[usage > 0].double()
    return -(p * p.log2()).sum().item()


def nf4_edge_sigma(offset: float = NF4_OFFSET) -> float:
    """Where NF4 puts ±1, in standard deviations of the normal it is built from: ndtri(offset), about 1.85."""
    return torch.special.ndtri(torch.tensor(offset, dtype=torch.float64)).item()


# ------------------------------------------------------------------------------------------ double quantization
def dynamic_code() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (``create_dynamic_map()``): 256 sorted values in [-1, 1]."""
    values = []
    for i in range(7):  # exponent 10^-6 .. 10^0, with 2^i linear fraction steps in each decade
        edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0
        values += (10 ** (-6 + i) * means).tolist() + (-(10 ** (-6 + i)) * means).tolist()
    values += [0.0, 1.0]
    return torch.tensor(sorted(values), dtype=torch.float32)


DYNAMIC_CODE = dynamic_code()


def double_quantize(absmax: torch.Tensor, blocksize: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize the fp32 absmax values themselves, as bitsandbytes' ``compress_statistics=True`` does.

    Subtract their mean (absmax values are all positive; centring uses both halves of the signed map), then
    8-bit blockwise with the dynamic map, 256 values per block. Returns ``(codes uint8, absmax2 float32, offset)``.
    Rounding is to the nearest code; bitsandbytes' compiled CPU kernel uses an approximate search and picks the
    neighbouring code for about 0.15% of values lying within ~1e-5 of a midpoint (the same size of error).
    """
    if blocksize not in VALID_BLOCKSIZES:
        _check_blocksize(blocksize)
    absmax = absmax.reshape(-1).float()
    _check_weights(absmax)
    offset = absmax.mean()
    absmax2, scaled = scale_blocks(absmax - offset, blocksize)
    _check_finite(absmax2, absmax)
    midpoints = (DYNAMIC_CODE[:-1] + DYNAMIC_CODE[1:]) / 2
    codes = torch.bucketize(scaled, midpoints).to(torch.uint8)
    return codes, absmax2, offset


def double_dequantize(codes: torch.Tensor, absmax2: torch.Tensor, offset: torch.Tensor, blocksize: int = 256) -> torch.Tensor:
    """Inverse of ``double_quantize``: the (approximate) fp32 absmax values."""
    values = DYNAMIC_CODE[codes.reshape(-1).long()]
    n = values.numel()
    scale = absmax2.float().repeat_interleave(blocksize)[:n]
    return values * scale + offset


def bits_per_param(blocksize: int = 64, double_quant: bool = False, blocksize2: int = 256) -> float:
    """Storage per weight: 4 bits + the absmax overhead (32 bits per block, or 8 bits per block plus 32 bits per
    ``blocksize2`` blocks when double-quantized). 4.5 and ~4.127 at the defaults; the per-tensor offset and
    code table (a few hundred bytes) are left out."""
    _check_blocksize(blocksize)
    if not double_quant:
        return 4 + 32 / blocksize
    return 4 + 8 / blocksize + 32 / (blocksize * blocksize2)


def stored_bytes(numel: int, blocksize: int = 64, double_quant: bool = False, blocksize2: int = 256) -> int:
    """Bytes of packed codes + absmax (+ second-level absmax and offset) for a tensor of ``numel`` weights."""
    blocks = math.ceil(numel / blocksize)
    data = (numel + 1) // 2
    if not double_quant:
        return data + 4 * blocks
    return data + blocks + 4 * math.ceil(blocks / blocksize2) + 4


# ------------------------------------------------------------------------------ what a round trip does to a model
@torch.no_grad()
def reply_losses(model, dataset, *, pad_token_id: int, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a tokenized dataset (``data.tokenize_dataset``: prompt labels -100): the summed next-token loss
    over its reply tokens and how many there are. Their totals give ``training.evaluate``'s mean loss; per row
    they give a paired bootstrap between two versions of a model (``paired_bootstrap``)."""
    from course_lib import data

    model.eval()
    sums, counts = [], []
    for start in range(0, len(dataset), batch_size):
        batch = data.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))], pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]  # the model predicts token t+1 from tokens up to t
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=data.IGNORE_INDEX,
                                                 reduction="none")
        sums.append(loss.sum(dim=1))
        counts.append((labels != data.IGNORE_INDEX).sum(dim=1))
    return torch.cat(sums).double(), torch.cat(counts).double()


def paired_bootstrap(sums_a, sums_b, counts, *, resamples: int = 2000, seed: int = 0, level: float = 0.95):
    """The difference in mean loss per token (b - a) between two versions of a model scored on the same rows,
    and its ``level`` interval from resampling the rows (a paired bootstrap). Returns ``(diff, low, high)``."""
    g = torch.Generator().manual_seed(seed)
    n = counts.numel()
    idx = torch.randint(0, n, (resamples, n), generator=g)
    diffs = (sums_b[idx].sum(1) - sums_a[idx].sum(1)) / counts[idx].sum(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(diffs, torch.tensor([tail, 1 - tail], dtype=diffs.dtype)).tolist()
    return ((sums_b.sum() - sums_a.sum()) / counts.sum()).item(), low, high


def model_roundtrip_losses(model, dataset, *, pad_token_id: int, kinds=KINDS, bits: float = 4.5) -> dict:
    """``{"fp32 (as loaded)": (sums, counts), "nf4 @64": (sums, counts), ...}``: the reply losses of ``model`` as it
    is, then with every linear weight but the output head replaced by its round trip through each format, at the
    block size that gives it ``bits`` bits per weight (equal storage: asymmetric INT4 gets twice NF4's block), the
    original weights put back after each."""
    from tqdm.auto import tqdm

    from course_lib import lowrank

    weights = lowrank.linear_weights(model)  # the output head is left out: SmolLM2 ties it to the embeddings
    out = {"fp32 (as loaded)": reply_losses(model, dataset, pad_token_id=pad_token_id)}
    for kind in tqdm(kinds, desc="formats"):
        bs = blocksize_for_bits(kind, bits)
        rounded = {name: roundtrip(w, kind, bs).to(w.dtype) for name, w in weights.items()}
        with lowrank.weights_replaced(model, rounded):
            out[f"{kind} @{bs}"] = reply_losses(model, dataset, pad_token_id=pad_token_id)
        del rounded
    return out


def compare_line(a: str, b: str, diff: float, low: float, high: float) -> str:
    """A verdict on ``paired_bootstrap(b_sums, a_sums, ...)``'s output that says "inconclusive" when the interval
    holds 0."""
    verdict = (f"{a} is worse (higher loss)" if low > 0 else f"{a} is better (lower loss)" if high < 0
               else "inconclusive: the interval contains 0")
    return f"{a} vs {b}: {diff:+.4f} loss per reply token, 95% interval [{low:+.4f}, {high:+.4f}] -> {verdict}"
