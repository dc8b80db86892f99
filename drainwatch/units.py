"""Display of integer base-unit amounts: exact, never through floats."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation, localcontext


def format_amount(amount: int, decimals: int, *, fixed: bool = False) -> str:
    """``format_amount(1500000000000000000, 18) == "1.5"``: exact, trailing zeros dropped;
    ``fixed`` keeps every decimal (``format_amount(50000000, 8, fixed=True) == "0.50000000"``,
    as bitcoin amounts are read, digit by digit)."""
    if decimals < 0:
        raise ValueError("decimals must not be negative")
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**decimals)
    if decimals == 0 or (frac == 0 and not fixed):
        return f"{sign}{whole:,}"
    frac_text = str(frac).rjust(decimals, "0")
    return f"{sign}{whole:,}.{frac_text if fixed else frac_text.rstrip('0')}"


def parse_amount(text: str, decimals: int) -> int:
    """Display units → base units, exactly; more fractional digits than ``decimals`` is an
    error rather than a rounding."""
    try:
        value = Decimal(text.replace(",", "").replace("_", ""))
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    with localcontext(Context(prec=200)):  # the default 28 digits would round uint256 values
        scaled = value.scaleb(decimals)
        whole = scaled.to_integral_value()
    if scaled != whole:
        raise ValueError(f"{text} has more than {decimals} decimal places")
    return int(whole)
