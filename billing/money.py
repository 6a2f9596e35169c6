"""Money: the site currency and exact parsing of amounts.

Amounts are ``Decimal`` end to end (SPEC §4). Floats are refused at every entry
point: ``0.1`` has no exact binary value, so accepting one would hide an error
that shows up later as a ledger that does not reconcile.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import MAX_PREC, ROUND_HALF_UP, Context, Decimal, Inexact, Rounded

from billing.exceptions import CurrencyError, InvalidAmount

__all__ = [
    "MAX_FRACTION_DIGITS",
    "MAX_INTEGER_DIGITS",
    "Currency",
    "parse_amount",
]

# Bounds for amounts that come from outside (config, API). They stop
# "exponent abuse" such as Decimal("1E+999999") and keep every product of an
# amount with a page count well inside exact Decimal arithmetic.
MAX_INTEGER_DIGITS = 15
MAX_FRACTION_DIGITS = 9

_CODE_RE = re.compile(r"[A-Z]{3}", re.ASCII)
# Plain decimal notation only: no exponent, no "_" separators, no "," and
# ASCII digits only (\d would also match e.g. Arabic-Indic digits).
_AMOUNT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_MAX_AMOUNT_CHARS = 64
_MAX_DECIMALS = 6
# No amount reaches 10**40; refusing such values keeps Decimal("1E+999999999")
# from turning into a billion-digit integer in to_minor or quantize.
_MAX_ADJUSTED = 39

# Contexts with unlimited precision: quantize never fails on a large amount,
# and scaling minor units by the quantum is exact (any rounding would raise).
# Explicit contexts also keep a caller's decimal.getcontext() out of money.
_HALF_UP = Context(prec=MAX_PREC, rounding=ROUND_HALF_UP)
_EXACT = Context(prec=MAX_PREC, traps=[Inexact, Rounded])


def _shown(value: object) -> str:
    """A value for an error message, cut short: messages must stay readable."""
    text = str(value)
    return text if len(text) <= _MAX_AMOUNT_CHARS else text[: _MAX_AMOUNT_CHARS - 3] + "..."


def _as_decimal(amount: object, field: str) -> Decimal:
    """An already-typed amount as a finite Decimal (ints are exact, floats are not)."""
    if isinstance(amount, bool):
        raise InvalidAmount(f"{field}: expected a Decimal or int, got bool")
    if isinstance(amount, int):
        return Decimal(amount)
    if isinstance(amount, float):
        raise InvalidAmount(
            f"{field}: floats are not accepted ({amount!r} is only a binary approximation); "
            "use a Decimal or a string such as '0.10'"
        )
    if not isinstance(amount, Decimal):
        raise InvalidAmount(f"{field}: expected a Decimal or int, got {type(amount).__name__}")
    if not amount.is_finite():
        raise InvalidAmount(f"{field}: {amount} is not a finite amount")
    if not amount.is_zero() and amount.adjusted() > _MAX_ADJUSTED:
        raise InvalidAmount(f"{field}: {_shown(amount)} is too large")
    return amount


@dataclass(frozen=True, slots=True)
class Currency:
    """A currency: ISO 4217-style code and the number of decimals it is kept in."""

    code: str
    decimals: int = 2
    _quantum: Decimal = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not _CODE_RE.fullmatch(self.code):
            raise CurrencyError(
                f"currency code must be 3 upper-case letters (e.g. 'EUR'), got {self.code!r}"
            )
        if (
            isinstance(self.decimals, bool)
            or not isinstance(self.decimals, int)
            or not 0 <= self.decimals <= _MAX_DECIMALS
        ):
            raise CurrencyError(
                f"currency {self.code}: decimals must be an int from 0 to {_MAX_DECIMALS}, "
                f"got {self.decimals!r}"
            )
        object.__setattr__(self, "_quantum", Decimal(f"1E-{self.decimals}"))

    @property
    def quantum(self) -> Decimal:
        """The smallest unit as a Decimal: 0.01 for 2 decimals, 1 for 0."""
        return self._quantum

    def quantize(self, amount: Decimal | int) -> Decimal:
        """Round to the currency's decimals, half away from zero (0.005 -> 0.01)."""
        value = _as_decimal(amount, "amount")
        result = value.quantize(self._quantum, context=_HALF_UP)
        return result.copy_abs() if result.is_zero() else result

    def to_minor(self, amount: Decimal | int, *, field: str = "amount") -> int:
        """Exact amount in minor units (1.20 EUR -> 120).

        Refuses an amount with more decimals than the currency instead of
        rounding it: a silent rounding here would make shares, postings and the
        cost they come from disagree. Quantize first if rounding is meant.
        """
        value = _as_decimal(amount, field)
        if _fraction_digits(value) > self.decimals:
            raise InvalidAmount(
                f"{field}: {_shown(value)} has more than {self.decimals} decimals for {self.code}"
            )
        return int(value.scaleb(self.decimals, _EXACT))  # integral now, so int() is exact

    def from_minor(self, minor: int) -> Decimal:
        """Minor units back to an amount with exactly the currency's decimals (120 -> 1.20)."""
        if isinstance(minor, bool) or not isinstance(minor, int):
            raise InvalidAmount(f"minor units must be an int, got {type(minor).__name__}")
        return _EXACT.multiply(Decimal(minor), self._quantum)

    def from_minor_many(self, minors: Iterable[int]) -> list[Decimal]:
        """``from_minor`` for many values at once (pro rata shares): same result, less overhead."""
        values = list(minors)
        if not all(type(minor) is int for minor in values):
            return [self.from_minor(minor) for minor in values]  # names the bad value
        multiply, quantum = _EXACT.multiply, self._quantum
        return [multiply(Decimal(minor), quantum) for minor in values]

    def format(self, amount: Decimal | int) -> str:
        """Plain decimal string as the API shows it: "1.20", "-0.05", "100" (JPY)."""
        return f"{self.quantize(amount):f}"


def _fraction_digits(value: Decimal) -> int:
    """Significant decimals of a finite Decimal (trailing zeros do not count)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if exponent >= 0 or value.is_zero():
        return 0
    places = -exponent
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, places - trailing_zeros)


def parse_amount(
    value: str | int | Decimal, *, field: str = "amount", allow_negative: bool = False
) -> Decimal:
    """An amount from config or the API, as an exact Decimal.

    Accepts a Decimal, an int, or a plain decimal string ("0.10", "-3", ".5").
    Refuses floats, NaN/Infinity, exponents ("1e3"), separators ("1,5",
    "1_000"), more than MAX_INTEGER_DIGITS/MAX_FRACTION_DIGITS digits, and
    negatives unless ``allow_negative``. Every refusal is an InvalidAmount whose
    message starts with ``field``. The value keeps its scale ("0.10" stays
    0.10); -0 becomes 0.
    """
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_AMOUNT_CHARS or not _AMOUNT_RE.fullmatch(text):
            raise InvalidAmount(
                f"{field}: {_shown(value)!r} is not a decimal number "
                "(digits with an optional '.', e.g. '0.10')"
            )
        amount = Decimal(text)
    else:
        amount = _as_decimal(value, field)

    if not amount.is_zero() and amount.adjusted() >= MAX_INTEGER_DIGITS:
        raise InvalidAmount(
            f"{field}: {_shown(amount)} is too large "
            f"(max {MAX_INTEGER_DIGITS} digits before the point)"
        )
    if _fraction_digits(amount) > MAX_FRACTION_DIGITS:
        raise InvalidAmount(
            f"{field}: {_shown(amount)} has more than {MAX_FRACTION_DIGITS} decimals"
        )
    _, _, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    if exponent > 0:  # Decimal("1E+2") -> 100, never shown in scientific notation
        amount = Decimal(int(amount))
    elif exponent < -MAX_FRACTION_DIGITS:  # only trailing zeros beyond the limit
        amount = amount.quantize(Decimal(f"1E-{MAX_FRACTION_DIGITS}"))
    if amount.is_zero():
        return amount.copy_abs()
    if amount < 0 and not allow_negative:
        raise InvalidAmount(f"{field}: must not be negative, got {_shown(amount)}")
    return amount
