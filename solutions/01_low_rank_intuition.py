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
# # 01 · Low-rank intuition — exercises
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/solutions/01_low_rank_intuition.ipynb)
#
# Write each function where it says `YOUR CODE HERE`, run its cell, and read the check's verdict: ✓ means right,
# otherwise the message says what is off and gives a hint.
# (`exercises/` holds the student copy; `solutions/` the same notebook with the answers filled in.)
#
# **Runs in:** a few seconds on a CPU.

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
import torch

from course_lib import checks

# %% [markdown]
# ## 1. The best rank-k approximation
# Return the best rank-`k` approximation of the 2-D tensor `W` (Eckart–Young): keep the `k` largest singular
# triplets of `torch.linalg.svd(W, full_matrices=False)` and multiply them back together.

# %%
def rank_k_approx(W: torch.Tensor, k: int) -> torch.Tensor:
    ### BEGIN SOLUTION
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :k] @ torch.diag(S[:k]) @ Vh[:k, :]
    ### END SOLUTION


checks.check_rank_k_approx(rank_k_approx)

# %% [markdown]
# ## 2. What low rank saves
# Return a pair: how many numbers an `m × n` matrix stores, and how many its rank-`r` factors
# (`m × r` and `r × n`) store. This is the count behind every LoRA parameter table.

# %%
def storage_count(m: int, n: int, r: int) -> tuple[int, int]:
    ### BEGIN SOLUTION
    return m * n, r * (m + n)
    ### END SOLUTION


checks.check_storage_count(storage_count)

# %% [markdown]
# ## 3. Think about it
# Using your `storage_count`: at what rank do the factors of a 576 × 576 matrix stop saving anything?
# (Answer: when `r·(m+n) ≥ m·n`, i.e. `r ≥ 288` here — half the side of a square matrix.)

# %%
print(next(r for r in range(1, 577) if storage_count(576, 576, r)[1] >= 576 * 576))

# %% [markdown]
# ## Quiz answers (the quiz at the end of notebook 01)

# %%
from course_lib import quiz

quiz.answers("01")
