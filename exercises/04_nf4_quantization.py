# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · NF4 quantization — exercises
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/exercises/04_nf4_quantization.ipynb)
#
# **You will:** derive the NF4 table from normal quantiles yourself, map a number to its nearest NF4 code (ties
# included), quantize one block exactly as bitsandbytes does, measure how often each level is used, and predict
# the bytes bitsandbytes stores before it stores them. Build each from the matrices and formulas: the checkers
# refuse a function that calls `course_lib.nf4`'s own version (or bitsandbytes') instead.
#
# **Runs in:** ~5 s on a 2-core CPU.

# %% tags=["colab-setup"]
# Colab only: install the course and its offline model, keeping Colab's own CUDA torch. Elsewhere: does nothing.
import sys

if "google.colab" in sys.modules:
    class CourseRepositoryNotSet(Exception):
        pass

    raise CourseRepositoryNotSet(
        "This copy of the course does not name its GitHub repository yet (OWNER/lora-qlora-course), so there is "
        "nothing to install from. To publish it: in a checkout, run `make colab REPO=owner/name` (it sets "
        "`repository` under [tool.course] in pyproject.toml and rewrites this cell in every notebook), push, "
        "and open the notebooks from that repository.")

# %%
from course_lib import hardware

hardware.report()

# %%
import torch

from course_lib import checks, nf4

_ = torch.manual_seed(0)
nf4.NF4_CODE

# %% [markdown]
# ## Exercise 1 — the NF4 table from normal quantiles
#
# Write `nf4_table(offset)`: the 16 NF4 values, sorted, in [-1, 1]. Take 8 quantiles of the standard normal for the
# positive half, at probabilities evenly spaced from `offset` down to 0.5 (`torch.linspace(offset, 0.5, 9)`,
# dropping the last, 0.5 itself), 7 for the negative half the same way (`torch.linspace(offset, 0.5, 8)`, negated),
# and an exact 0; divide by the largest. `torch.special.ndtri(p)` is the inverse normal CDF. To get bitsandbytes'
# table bit for bit, do as it does: the probabilities in float32 (linspace's default), the quantiles in float64,
# back to float32 before sorting and dividing. With bitsandbytes' `offset = 0.9677083` your table must be its
# own; the checker also tries other offsets.

# %%
def nf4_table(offset: float = 0.9677083) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_nf4_table(nf4_table)

# %% [markdown]
# ## Exercise 2 — the nearest NF4 value
#
# Write `nearest_nf4(x)`: the index `i` (0..15) of the value of `nf4.NF4_CODE` closest to the float `x` in
# [-1, 1]. When `x` sits exactly halfway between two values, bitsandbytes keeps the **smaller** index.

# %%
def nearest_nf4(x: float) -> int:
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_nearest_nf4(nearest_nf4)

# %% [markdown]
# ## Exercise 3 — one block
#
# Write `quantize_block(block)` for a 1-D float32 block: return `(codes, absmax)` where `absmax` is the largest
# magnitude in the block and `codes[i]` the NF4 index of `block[i] * (1 / absmax)`. An all-zero block must give
# the code of 0 everywhere, not NaN.

# %%
def quantize_block(block: torch.Tensor):
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_quantize_block(quantize_block)

# %% [markdown]
# ## Exercise 4 — predict, then measure: how often is each level used?
#
# If NF4's levels held equal shares of the weights, each would get 1/16 = 6.25%. **Before you run anything**,
# write down which levels you expect Gaussian weights in blocks of 64 to use most and least, and roughly how often
# a level at ±1 is used (each block has exactly one value that scales to ±1: its absmax). Then write
# `level_usage(blocks)` for a 2-D tensor holding one block of 64 per row: quantize every row with your
# `quantize_block` and return the share of all values that each code 0..15 received (16 numbers summing to 1).

# %%
def level_usage(blocks: torch.Tensor) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_level_usage(level_usage)

# %%
gaussian_blocks = torch.randn(2000, 64, generator=torch.Generator().manual_seed(1))
shares = level_usage(gaussian_blocks)
print("share per code:", [f"{v:.1%}" for v in shares.tolist()])
print(f"least used: code {int(shares.argmin())} ({shares.min():.1%}); most used: code {int(shares.argmax())} "
      f"({shares.max():.1%}). Compare with your prediction.")

# %% [markdown]
# ## Exercise 5 — bits per parameter
#
# Write `bits_per_param(blocksize, double_quant)`: 4 bits per weight, plus one fp32 absmax per block; with double
# quantization that absmax becomes 8 bits, plus one fp32 scale for every 256 absmax values.

# %%
def bits_per_param(blocksize: int, double_quant: bool) -> float:
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_bits_per_param(bits_per_param)

# %% [markdown]
# Now **predict** how many bytes bitsandbytes stores for `numel` weights (block size 64): write
# `predict_stored_bytes(numel, double_quant)` from your `bits_per_param` (no quantizing). The checker then
# quantizes a tensor with bitsandbytes and compares its packed codes and block constants with your prediction.

# %%
def predict_stored_bytes(numel: int, double_quant: bool) -> float:
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_stored_bytes_prediction(predict_stored_bytes)
