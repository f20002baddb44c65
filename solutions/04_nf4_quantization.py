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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/solutions/04_nf4_quantization.ipynb)
#
# **You will:** map a number to its nearest NF4 code (ties included), quantize one block exactly as
# bitsandbytes does, and compute the storage cost of NF4 with and without double quantization.
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
# ## Exercise 1 — the nearest NF4 value
#
# Write `nearest_nf4(x)`: the index `i` (0..15) of the value of `nf4.NF4_CODE` closest to the float `x` in
# [-1, 1]. When `x` sits exactly halfway between two values, bitsandbytes keeps the **smaller** index.

# %%
def nearest_nf4(x: float) -> int:
    ### BEGIN SOLUTION
    midpoints = (nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2
    return int((midpoints < x).sum())  # how many midpoints lie strictly below x
    ### END SOLUTION


checks.check_nearest_nf4(nearest_nf4)

# %% [markdown]
# ## Exercise 2 — one block
#
# Write `quantize_block(block)` for a 1-D float32 block: return `(codes, absmax)` where `absmax` is the largest
# magnitude in the block and `codes[i]` the NF4 index of `block[i] * (1 / absmax)`. An all-zero block must give
# the code of 0 everywhere, not NaN.

# %%
def quantize_block(block: torch.Tensor):
    ### BEGIN SOLUTION
    absmax = block.abs().max()
    scaled = block * (1.0 / absmax.clamp(min=1e-38))
    midpoints = (nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2
    codes = torch.bucketize(scaled, midpoints)
    return codes, absmax.item()
    ### END SOLUTION


checks.check_quantize_block(quantize_block)

# %% [markdown]
# ## Exercise 3 — bits per parameter
#
# Write `bits_per_param(blocksize, double_quant)`: 4 bits per weight, plus one fp32 absmax per block; with double
# quantization that absmax becomes 8 bits, plus one fp32 scale for every 256 absmax values.

# %%
def bits_per_param(blocksize: int, double_quant: bool) -> float:
    ### BEGIN SOLUTION
    if not double_quant:
        return 4 + 32 / blocksize
    return 4 + 8 / blocksize + 32 / (blocksize * 256)
    ### END SOLUTION


checks.check_bits_per_param(bits_per_param)

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 04)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("04")
