"""Checkers for notebook 01 (low-rank intuition)."""

from __future__ import annotations

import torch

from .core import _call, check_close, fail, passed


def check_rank_k_approx(fn) -> None:
    """``fn(W, k)`` must return the best rank-k approximation of W (Eckart–Young), as a tensor of W's shape."""
    from course_lib import lowrank

    g = torch.Generator().manual_seed(1)
    W = torch.randn(12, 8, generator=g)
    for k in (1, 3, 8):
        got = _call(fn, W, k, name="rank_k_approx")
        if not isinstance(got, torch.Tensor):
            fail(f"rank_k_approx returned {type(got).__name__}, expected a torch.Tensor", "return U_k @ diag(S_k) @ Vh_k")
        check_close(got, lowrank.rank_k_approx(W, k), what=f"rank_k_approx(W, k={k})", atol=1e-4,
                    hint="take the first k columns of U, the first k singular values and the first k rows of Vh "
                         "from torch.linalg.svd(W, full_matrices=False), then multiply them back together.")
        rank = torch.linalg.matrix_rank(got).item()
        if rank > k:
            fail(f"the result has rank {rank}, more than k={k}", "keep only k singular triplets.")
    passed("rank_k_approx matches the truncated SVD for k = 1, 3, 8.")


def check_storage_count(fn) -> None:
    """``fn(m, n, r)`` -> (params of the full m x n matrix, params of its rank-r factors)."""
    cases = [(4096, 4096, 8), (5000, 4000, 8), (576, 1536, 16), (10, 3, 1)]
    for m, n, r in cases:
        got = _call(fn, m, n, r, name="storage_count")
        if tuple(got) != (m * n, r * (m + n)):
            fail(f"storage_count({m}, {n}, {r}) returned {tuple(got)}",
                 "the full matrix stores m*n numbers; the factors an m x r and an r x n matrix.")
    passed(f"storage_count is right on {len(cases)} shapes, e.g. 4096x4096 at r=8: {4096 * 4096:,} vs {8 * 8192:,}.")
