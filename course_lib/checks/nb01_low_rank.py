"""Checkers for notebook 01 (low-rank intuition)."""

from __future__ import annotations

import torch

from .core import _call, check_close, checker, fail, passed


@checker
def check_rank_k_approx(fn) -> None:
    """``fn(W, k)`` must return the best rank-k approximation of W (Eckart–Young), as a tensor of W's shape."""
    from course_lib import lowrank

    hints = ("the best rank-k approximation keeps the k largest singular values of W and drops the rest; "
             "torch.linalg.svd(W, full_matrices=False) gives U, S and Vh.",
             "keep the first k columns of U, the first k entries of S and the first k rows of Vh.",
             "multiply the three kept pieces back together; S is a vector, so scale U's columns by it (or build "
             "a diagonal matrix from it).")
    g = torch.Generator().manual_seed(1)
    W = torch.randn(12, 8, generator=g)
    for k in (1, 3, 8):
        got = _call(fn, W, k, name="rank_k_approx")
        if not isinstance(got, torch.Tensor):
            fail(f"rank_k_approx returned {type(got).__name__}, expected a torch.Tensor of shape {tuple(W.shape)}",
                 *hints)
        check_close(got, lowrank.rank_k_approx(W, k), what=f"rank_k_approx(W, k={k}) on a 12 x 8 W", atol=1e-4,
                    hints=hints)
        rank = torch.linalg.matrix_rank(got).item()
        if rank > k:
            fail(f"the result has rank {rank}, more than k={k}", *hints)
    passed("rank_k_approx matches the truncated SVD for k = 1, 3, 8.")


@checker
def check_storage_count(fn) -> None:
    """``fn(m, n, r)`` -> (params of the full m x n matrix, params of its rank-r factors)."""
    cases = [(4096, 4096, 8), (5000, 4000, 8), (576, 1536, 16), (10, 3, 1)]
    for m, n, r in cases:
        got = _call(fn, m, n, r, name="storage_count")
        try:
            full, factors = (int(v) for v in got)
        except (TypeError, ValueError):
            fail(f"storage_count({m}, {n}, {r}) returned {got!r}", "return a pair of integers: (full, factors).")
        wrong = [what for what, value, want in (("the full count", full, m * n), ("the factor count", factors, r * (m + n)))
                 if value != want]
        if wrong:
            fail(f"storage_count({m}, {n}, {r}) returned ({full:,}, {factors:,}): {' and '.join(wrong)} is off",
                 "the full matrix stores one number per entry; the factorisation stores two smaller matrices.",
                 f"W ≈ A·B with A of shape {m} x {r} and B of shape {r} x {n}: count the entries of each.")
    passed(f"storage_count is right on {len(cases)} shapes, e.g. 4096x4096 at r=8: {4096 * 4096:,} vs {8 * 8192:,}.")


@checker
def check_break_even_rank(fn) -> None:
    """``fn(m, n)`` -> the smallest r with r·(m + n) >= m·n: where rank-r factors stop saving storage."""
    import math

    cases = [(576, 576), (4096, 4096), (4096, 11008), (10, 3), (1, 1)]
    for m, n in cases:
        got = _call(fn, m, n, name="break_even_rank")
        want = math.ceil(m * n / (m + n))
        if got != want:
            fail(f"break_even_rank({m}, {n}) returned {got!r}; at that rank the factors store "
                 + (f"{got * (m + n):,} numbers against the matrix's {m * n:,}" if isinstance(got, int) else "?"),
                 "compare the two counts of storage_count(m, n, r) for growing r, starting at 1.",
                 "you want the first r where the factor count is at least the full count: not before it, not after.")
    passed(f"break_even_rank is right on {len(cases)} shapes: a 576 x 576 matrix stops saving at r = "
           f"{math.ceil(576 * 576 / 1152)}, half its side.")
