"""course_lib.claims: one rule for every "claims you will meet" verdict."""

import pytest

from course_lib import claims


def test_one_rule_for_every_claim():
    assert claims.verdict(4.5, 3.9) == "holds"  # 15% high: inside the ±20% rule
    assert claims.verdict(28, 13.5) == "too high"
    assert claims.verdict(45, 134.8) == "too low"
    assert claims.verdict(12, 10) == "holds" and claims.verdict(12.01, 10) == "too high"
    assert claims.verdict(8, 10) == "holds" and claims.verdict(7.99, 10) == "too low"
    assert claims.line("7B in 16 bits", 14, 13.48).endswith("-> holds")
    with pytest.raises(ValueError, match="positive computed value"):
        claims.verdict(1, 0)
