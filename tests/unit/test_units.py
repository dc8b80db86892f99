from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drainwatch.units import format_amount, parse_amount


@pytest.mark.parametrize(
    ("amount", "decimals", "text"),
    [
        (0, 18, "0"),
        (1, 18, "0.000000000000000001"),
        (1_500_000_000_000_000_000, 18, "1.5"),
        (4_800 * 10**18, 18, "4,800"),
        (
            2**256 - 1,
            18,
            "115,792,089,237,316,195,423,570,985,008,687,907,853,269,984,665,640,564,039,457.584007913129639935",
        ),
        (123_456_789, 8, "1.23456789"),
        (5, 0, "5"),
        (-150, 2, "-1.5"),
    ],
)
def test_format_amount_is_exact(amount: int, decimals: int, text: str) -> None:
    assert format_amount(amount, decimals) == text


@given(st.integers(0, 2**256 - 1), st.integers(0, 30))
def test_parse_inverts_format(amount: int, decimals: int) -> None:
    assert parse_amount(format_amount(amount, decimals), decimals) == amount


@pytest.mark.parametrize("text", ["1.0000000000000000001", "abc", "NaN", "Infinity", ""])
def test_parse_refuses_what_it_cannot_represent(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text, 18)


def test_fixed_keeps_every_decimal() -> None:
    assert format_amount(50_000_000, 8, fixed=True) == "0.50000000"
    assert format_amount(2_100_000_000_000_000, 8, fixed=True) == "21,000,000.00000000"
    assert format_amount(1, 8, fixed=True) == "0.00000001"
    assert format_amount(-150_000_000, 8, fixed=True) == "-1.50000000"
    assert format_amount(7, 0, fixed=True) == "7"
    assert format_amount(50_000_000, 8) == "0.5"
