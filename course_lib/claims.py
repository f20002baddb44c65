"""Claims you will meet: a figure found in widely shared tutorials, set beside the value the course computes for the
same setting, with one rule for the verdict (so a 15% gap is never "wrong" in one place and "holds" in another)."""

from __future__ import annotations

TOLERANCE = 0.20  # a claimed figure "holds" within ±20% of the computed one


def verdict(claimed: float, computed: float, tolerance: float = TOLERANCE) -> str:
    """"holds" when ``claimed`` is within ``tolerance`` (a fraction) of ``computed``, else "too high" / "too low"."""
    if computed <= 0 or claimed < 0:
        raise ValueError(f"a claim needs a positive computed value and a non-negative claim, got {claimed!r} vs "
                         f"{computed!r}")
    ratio = claimed / computed
    if abs(ratio - 1) <= tolerance:
        return "holds"
    return "too high" if ratio > 1 else "too low"


def line(claim: str, claimed: float, computed: float, unit: str = "GB", tolerance: float = TOLERANCE,
         digits: int = 1) -> str:
    """One row of a "claims you will meet" box: the claim as found, the computed value, the verdict."""
    return (f"{claim:<44} claimed {claimed:>5g} {unit}, computed {computed:>7.{digits}f} {unit} -> "
            f"{verdict(claimed, computed, tolerance)}")
