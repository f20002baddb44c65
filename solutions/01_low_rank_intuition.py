# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Low-rank intuition — exercises
#
# Write each function where it says `YOUR CODE HERE`, run its cell, and read the check's verdict: ✓ means right,
# otherwise the message says what is off and gives a hint.
# (`exercises/` holds the student copy; `solutions/` the same notebook with the answers filled in.)
#
# **Runs in:** a few seconds on a CPU.

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
