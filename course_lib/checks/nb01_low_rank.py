"""Checkers for notebook 01 (low-rank intuition)."""

from __future__ import annotations

import math

import torch

from .core import _call, call_own, check_close, checker, fail, passed

RANK_K_HINTS = ("the best rank-k approximation keeps the k largest singular values of W and drops the rest; "
                "torch.linalg.svd(W, full_matrices=False) gives U, S and Vh.",
                "keep the first k columns of U, the first k entries of S and the first k rows of Vh.",
                "multiply the three kept pieces back together; S is a vector, so scale U's columns by it (or build "
                "a diagonal matrix from it).")


def _course_rank_k():
    from course_lib import lowrank

    return (lowrank.rank_k_approx, lowrank.low_rank_weights)


@checker
def check_rank_k_approx(fn) -> None:
    """``fn(W, k)`` must return the best rank-k approximation of W (Eckart–Young), as a tensor of W's shape,
    written from ``torch.linalg.svd`` (an answer that calls ``course_lib.lowrank`` is refused)."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(12, 8, generator=g)
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)  # the reference, computed here
    for k in (1, 3, 8):
        got = call_own(fn, W, k, name="rank_k_approx", forbidden=_course_rank_k(), hints=RANK_K_HINTS,
                       write_from="torch.linalg.svd")
        if not isinstance(got, torch.Tensor):
            fail(f"rank_k_approx returned {type(got).__name__}, expected a torch.Tensor of shape {tuple(W.shape)}",
                 *RANK_K_HINTS)
        check_close(got, (U[:, :k] * S[:k]) @ Vh[:k], what=f"rank_k_approx(W, k={k}) on a 12 x 8 W", atol=1e-4,
                    hints=RANK_K_HINTS)
        rank = torch.linalg.matrix_rank(got).item()
        if rank > k:
            fail(f"the result has rank {rank}, more than k={k}", *RANK_K_HINTS)
    passed("rank_k_approx matches the truncated SVD for k = 1, 3, 8, and is your own.")


def matrix_with_singular_values(values, rows: int = 7, seed: int = 0) -> torch.Tensor:
    """A ``rows x len(values)`` matrix whose singular values are exactly ``values``: U·diag(values)·Vᵀ with random
    orthonormal U and V, so a student can predict what an SVD of it will say before running one."""
    g = torch.Generator().manual_seed(seed)
    n = len(values)
    U, _ = torch.linalg.qr(torch.randn(rows, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (U * torch.tensor(values, dtype=torch.float64)) @ V.T


PREDICTION_VALUES = (5.0, 4.0, 3.0, 2.0, 1.0)


@checker
def check_error_prediction(predict, rank_k_approx) -> None:
    """``predict()`` -> (Frobenius error, spectral error) that rank 2 must leave on a matrix with singular values
    5, 4, 3, 2, 1, worked out by hand (no SVD, no norm). Then ``rank_k_approx`` measures it."""
    hints = ("Eckart–Young: the best rank-k approximation drops the singular values after the k-th; the error is "
             "made of exactly those.",
             "the Frobenius norm of the error adds the squares of the dropped singular values and takes the square "
             "root; the spectral norm is the largest one dropped.")
    from course_lib import lowrank

    measure = (torch.linalg.svd, torch.linalg.svdvals, torch.linalg.matrix_norm, torch.linalg.norm, torch.norm,
               rank_k_approx, *_course_rank_k(), lowrank.approx_error, lowrank.tail_norm, lowrank.singular_values)
    got = call_own(predict, name="predict", forbidden=measure, hints=hints,
                   write_from="the five singular values alone (a prediction is made before the measurement)",
                   why="a prediction has to be made before measuring")
    try:
        frobenius, spectral = (float(v) for v in got)
    except (TypeError, ValueError):
        fail(f"predict() returned {got!r}", "return a pair of numbers: (Frobenius error, spectral error).")
    dropped = PREDICTION_VALUES[2:]
    want = (math.sqrt(sum(v * v for v in dropped)), max(dropped))
    W = matrix_with_singular_values(PREDICTION_VALUES)
    approx = call_own(rank_k_approx, W, 2, name="rank_k_approx", forbidden=_course_rank_k(),
                      hints=RANK_K_HINTS, write_from="torch.linalg.svd")
    measured = (torch.linalg.matrix_norm(W - approx).item(), torch.linalg.matrix_norm(W - approx, ord=2).item())
    wrong = [f"{what}: predicted {p:.4f}, measured {m:.4f}"
             for what, p, w, m in zip(("Frobenius", "spectral"), (frobenius, spectral), want, measured, strict=True)
             if abs(p - w) > 1e-6]
    if wrong:
        fail("; ".join(wrong), *hints)
    passed(f"predicted ‖W − W_2‖_F = {frobenius:.4f} and ‖W − W_2‖_2 = {spectral:.4f}; your rank_k_approx measures "
           f"{measured[0]:.4f} and {measured[1]:.4f}: Eckart–Young, by hand and by measurement.")


@checker
def check_storage_count(fn) -> None:
    """``fn(m, n, r)`` -> (params of the full m x n matrix, params of its rank-r factors)."""
    from course_lib import counting, lowrank

    cases = [(4096, 4096, 8), (5000, 4000, 8), (576, 1536, 16), (10, 3, 1)]
    hints = ("the full matrix stores one number per entry; the factorisation stores two smaller matrices.",
             "W ≈ B·A with B of shape m x r and A of shape r x n (PEFT's names: B is d_out x r, A is r x d_in): "
             "count the entries of each.")
    for m, n, r in cases:
        got = call_own(fn, m, n, r, name="storage_count", hints=hints, write_from="the two shapes",
                       forbidden=(lowrank.storage_count, counting.layer_lora_params))
        try:
            full, factors = (int(v) for v in got)
        except (TypeError, ValueError):
            fail(f"storage_count({m}, {n}, {r}) returned {got!r}", "return a pair of integers: (full, factors).")
        wrong = [what for what, value, want in (("the full count", full, m * n), ("the factor count", factors, r * (m + n)))
                 if value != want]
        if wrong:
            fail(f"storage_count({m}, {n}, {r}) returned ({full:,}, {factors:,}): {' and '.join(wrong)} is off",
                 *hints)
    passed(f"storage_count is right on {len(cases)} shapes, e.g. 4096x4096 at r=8: {4096 * 4096:,} vs {8 * 8192:,}.")


@checker
def check_break_even_rank(fn) -> None:
    """``fn(m, n)`` -> the smallest r with r·(m + n) >= m·n: where rank-r factors stop saving storage."""
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
