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
# triplets of `torch.linalg.svd(W, full_matrices=False)` and multiply them back together. Write it from the
# SVD yourself: the checker refuses a function that calls `course_lib.lowrank`'s own `rank_k_approx`.

# %%
def rank_k_approx(W: torch.Tensor, k: int) -> torch.Tensor:
    ### BEGIN SOLUTION
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :k] @ torch.diag(S[:k]) @ Vh[:k, :]
    ### END SOLUTION


checks.check_rank_k_approx(rank_k_approx)

# %% [markdown]
# ## 2. Predict, then measure
# The matrix below has singular values exactly 5, 4, 3, 2 and 1 (it is built as `U · diag(5, 4, 3, 2, 1) · Vᵀ`
# with random orthonormal `U` and `V`). **Before running anything**, work out by hand what error your
# `rank_k_approx(W, 2)` must leave: `‖W − W_2‖_F` (Frobenius) and `‖W − W_2‖_2` (spectral). Return the two
# numbers from `predict()` (arithmetic only: no SVD, no norm). The checker then measures both with your
# `rank_k_approx`.

# %%
from course_lib.checks.nb01_low_rank import matrix_with_singular_values

W = matrix_with_singular_values((5.0, 4.0, 3.0, 2.0, 1.0))
print("W has shape", tuple(W.shape))


def predict() -> tuple[float, float]:
    ### BEGIN SOLUTION
    # Eckart–Young: rank 2 drops 3, 2 and 1
    return (3**2 + 2**2 + 1**2) ** 0.5, 3.0
    ### END SOLUTION


checks.check_error_prediction(predict, rank_k_approx)

# %% [markdown]
# ## 3. What low rank saves
# Return a pair: how many numbers an `m × n` matrix stores, and how many its rank-`r` factors store: `B` of
# shape `m × r` and `A` of shape `r × n` (PEFT's names for a layer with `d_out = m`, `d_in = n`). This is the
# count behind every LoRA parameter table.

# %%
def storage_count(m: int, n: int, r: int) -> tuple[int, int]:
    ### BEGIN SOLUTION
    return m * n, r * (m + n)
    ### END SOLUTION


checks.check_storage_count(storage_count)

# %% [markdown]
# ## 4. When does low rank stop saving?
# Write `break_even_rank(m, n)`: the smallest rank `r` at which the factors of an `m × n` matrix store at least
# as many numbers as the matrix itself. Use your `storage_count`. The checker tries square and rectangular shapes.

# %%
def break_even_rank(m: int, n: int) -> int:
    ### BEGIN SOLUTION
    # r·(m + n) >= m·n  <=>  r >= m·n / (m + n): half the side of a square matrix
    return next(r for r in range(1, min(m, n) + 1) if storage_count(m, n, r)[1] >= m * n)
    ### END SOLUTION


checks.check_break_even_rank(break_even_rank)

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 01)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("01")
