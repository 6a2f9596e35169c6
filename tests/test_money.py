"""Money: Currency and parse_amount (SPEC §4: Decimal, never floats)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (before any @given: picks the profile)
from billing.exceptions import CurrencyError, InvalidAmount, InvalidInput
from billing.money import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS, Currency, parse_amount

# These properties are cheap to cover: 2,000 examples in CI is plenty and keeps
# the suite's time for the 10,000-example pro rata properties.
SECONDARY = settings(max_examples=min(settings().max_examples, 2_000))

EUR = Currency("EUR")
JPY = Currency("JPY", 0)
BHD = Currency("BHD", 3)

# ---------------------------------------------------------------- Currency


def test_currency_defaults_to_two_decimals() -> None:
    assert EUR.decimals == 2


@pytest.mark.parametrize("code", ["eur", "EU", "EURO", "", "E1R", "ÉUR", "EUR ", 978, None])
def test_currency_rejects_bad_codes(code: object) -> None:
    with pytest.raises(CurrencyError, match="3 upper-case letters"):
        Currency(code)  # type: ignore[arg-type]


@pytest.mark.parametrize("decimals", [-1, 7, True, "2", 2.0, None])
def test_currency_rejects_bad_decimals(decimals: object) -> None:
    with pytest.raises(CurrencyError, match="decimals must be an int from 0 to 6"):
        Currency("EUR", decimals)  # type: ignore[arg-type]


def test_currency_is_frozen_and_comparable() -> None:
    assert Currency("EUR", 2) == EUR
    assert hash(Currency("EUR", 2)) == hash(EUR)
    with pytest.raises(AttributeError):
        EUR.decimals = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("currency", "quantum"),
    [(EUR, "0.01"), (JPY, "1"), (BHD, "0.001"), (Currency("XTS", 6), "0.000001")],
)
def test_quantum(currency: Currency, quantum: str) -> None:
    assert str(currency.quantum) == quantum


@pytest.mark.parametrize(
    ("currency", "amount", "expected"),
    [
        (EUR, Decimal("1.2"), "1.20"),
        (EUR, Decimal("0.005"), "0.01"),  # half up, not banker's rounding
        (EUR, Decimal("0.015"), "0.02"),
        (EUR, Decimal("0.025"), "0.03"),
        (EUR, Decimal("0.0049"), "0.00"),
        (EUR, Decimal("-0.005"), "-0.01"),  # half away from zero
        (EUR, Decimal("-0.004"), "0.00"),  # no negative zero
        (EUR, 3, "3.00"),
        (JPY, Decimal("2.5"), "3"),
        (JPY, Decimal("2.4"), "2"),
        (BHD, Decimal("1.0005"), "1.001"),
        (EUR, Decimal("123456789012345678901234567890.125"), "123456789012345678901234567890.13"),
    ],
)
def test_quantize(currency: Currency, amount: Decimal | int, expected: str) -> None:
    assert str(currency.quantize(amount)) == expected


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [
        (EUR, Decimal("1.20"), 120),
        (EUR, Decimal("1.2"), 120),
        (EUR, Decimal("1.2000"), 120),
        (EUR, Decimal("-0.05"), -5),
        (EUR, Decimal("1E+3"), 100_000),
        (EUR, 7, 700),
        (JPY, Decimal("100"), 100),
        (BHD, Decimal("0.001"), 1),
    ],
)
def test_to_minor(currency: Currency, amount: Decimal | int, minor: int) -> None:
    assert currency.to_minor(amount) == minor


@pytest.mark.parametrize("amount", [Decimal("1E+999999999"), Decimal("-1E+40")])
def test_absurd_magnitudes_are_refused_quickly(amount: Decimal) -> None:
    # Would otherwise build a billion-digit integer (or coefficient).
    for method in (EUR.quantize, EUR.to_minor, EUR.format):
        with pytest.raises(InvalidAmount, match="is too large"):
            method(amount)


def test_to_minor_of_a_tiny_amount_is_refused_quickly() -> None:
    with pytest.raises(InvalidAmount, match="more than 2 decimals"):
        EUR.to_minor(Decimal("1E-999999999"))
    assert EUR.to_minor(Decimal("1" + "0" * 50 + "E-50")) == 100  # trailing zeros are fine


def test_error_messages_stay_short() -> None:
    with pytest.raises(InvalidAmount) as info:
        EUR.to_minor(Decimal("0." + "1" * 1000))
    assert len(str(info.value)) < 200


def test_to_minor_refuses_to_round() -> None:
    with pytest.raises(InvalidAmount, match=r"price: 1\.205 has more than 2 decimals for EUR"):
        EUR.to_minor(Decimal("1.205"), field="price")
    with pytest.raises(InvalidAmount, match="more than 0 decimals for JPY"):
        JPY.to_minor(Decimal("0.5"))


@pytest.mark.parametrize(
    ("currency", "minor", "text"),
    [(EUR, 120, "1.20"), (EUR, -5, "-0.05"), (EUR, 0, "0.00"), (JPY, 7, "7"), (BHD, 1, "0.001")],
)
def test_from_minor(currency: Currency, minor: int, text: str) -> None:
    assert str(currency.from_minor(minor)) == text


def test_from_minor_is_exact_beyond_context_precision() -> None:
    big = 10**40 + 1
    assert EUR.to_minor(EUR.from_minor(big)) == big


@pytest.mark.parametrize("minor", [1.0, True, Decimal(1), "1"])
def test_from_minor_wants_int(minor: object) -> None:
    with pytest.raises(InvalidAmount, match="minor units must be an int"):
        EUR.from_minor(minor)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount, match="minor units must be an int"):
        EUR.from_minor_many([1, minor])  # type: ignore[list-item]


def test_from_minor_many() -> None:
    assert [str(amount) for amount in EUR.from_minor_many(iter([120, -5, 0]))] == [
        "1.20",
        "-0.05",
        "0.00",
    ]
    assert JPY.from_minor_many([]) == []


@pytest.mark.parametrize(
    ("currency", "amount", "text"),
    [
        (EUR, Decimal("1.2"), "1.20"),
        (EUR, Decimal("-0.05"), "-0.05"),
        (EUR, Decimal("1E+3"), "1000.00"),  # never scientific notation
        (EUR, Decimal("-0.001"), "0.00"),
        (EUR, 0, "0.00"),
        (JPY, Decimal("1E+6"), "1000000"),
        (BHD, Decimal("0.0125"), "0.013"),
    ],
)
def test_format(currency: Currency, amount: Decimal | int, text: str) -> None:
    assert currency.format(amount) == text


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0.1, "floats are not accepted .* use a Decimal or a string such as '0.10'"),
        (Decimal("NaN"), "not a finite amount"),
        (Decimal("sNaN"), "not a finite amount"),
        (Decimal("-Infinity"), "not a finite amount"),
        ("1.20", "expected a Decimal or int, got str"),
        (False, "got bool"),
        (None, "got NoneType"),
    ],
)
def test_currency_methods_reject_non_amounts(amount: object, message: str) -> None:
    for method in (EUR.quantize, EUR.to_minor, EUR.format):
        with pytest.raises(InvalidAmount, match=message):
            method(amount)  # type: ignore[arg-type]


@SECONDARY
@given(
    places=st.integers(min_value=0, max_value=6),
    minor=st.integers(min_value=-(10**18), max_value=10**18),
)
def test_minor_round_trip(places: int, minor: int) -> None:
    currency = Currency("XTS", places)
    amount = currency.from_minor(minor)
    assert currency.from_minor_many([minor]) == [amount]
    assert str(amount) == str(currency.from_minor_many([minor])[0])
    assert currency.to_minor(amount) == minor
    assert currency.quantize(amount) == amount
    assert Decimal(currency.format(amount)) == amount


# ------------------------------------------------------------- parse_amount


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.10", "0.10"),  # scale is kept
        ("1", "1"),
        (" 2.5 ", "2.5"),
        ("+3", "3"),
        (".5", "0.5"),
        ("1.", "1"),
        ("-0", "0"),
        ("-0.00", "0.00"),
        ("0.0125", "0.0125"),
        ("999999999999999.999999999", "999999999999999.999999999"),
        (5, "5"),
        (0, "0"),
        (Decimal("0.30"), "0.30"),
        (Decimal("1E+2"), "100"),  # not "1E+2"
        (Decimal("0.1000000000000"), "0.100000000"),  # only trailing zeros past 9 places
        (Decimal("0E-20"), "0E-9"),
    ],
)
def test_parse_amount_accepts(value: str | int | Decimal, expected: str) -> None:
    result = parse_amount(value)
    assert isinstance(result, Decimal)
    assert str(result) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0.1, "floats are not accepted .*string such as '0.10'"),
        (1.0, "floats are not accepted"),
        (True, "got bool"),
        (None, "got NoneType"),
        ([1], "got list"),
        ("", "is not a decimal number"),
        ("   ", "is not a decimal number"),
        ("abc", "is not a decimal number"),
        ("1,5", "is not a decimal number"),
        ("1_000", "is not a decimal number"),
        ("1.2.3", "is not a decimal number"),
        ("--1", "is not a decimal number"),
        (".", "is not a decimal number"),
        ("1e3", "is not a decimal number"),
        ("1E-999999999", "is not a decimal number"),
        ("NaN", "is not a decimal number"),
        ("Infinity", "is not a decimal number"),
        ("٣", "is not a decimal number"),  # a non-ASCII digit
        ("1" * 1000, r"is not a decimal number"),
        (Decimal("NaN"), "not a finite amount"),
        (Decimal("Infinity"), "not a finite amount"),
        (Decimal("1E+999999"), "too large"),
        (Decimal("1E-999999"), "more than 9 decimals"),
        ("1" * MAX_INTEGER_DIGITS + "0", "too large"),
        ("0." + "0" * MAX_FRACTION_DIGITS + "1", "more than 9 decimals"),
        ("-0.10", "must not be negative, got -0.10"),
        (-1, "must not be negative"),
    ],
)
def test_parse_amount_rejects(value: object, message: str) -> None:
    with pytest.raises(InvalidAmount, match=f"^price: .*{message}"):
        parse_amount(value, field="price")  # type: ignore[arg-type]


def test_parse_amount_default_field_name() -> None:
    with pytest.raises(InvalidAmount, match=r"^amount: 'x' is not a decimal number"):
        parse_amount("x")


def test_parse_amount_shortens_long_input_in_message() -> None:
    with pytest.raises(InvalidAmount) as info:
        parse_amount("9" * 10_000)
    assert len(str(info.value)) < 200


def test_parse_amount_allows_negative_when_asked() -> None:
    assert parse_amount("-0.10", allow_negative=True) == Decimal("-0.10")
    assert parse_amount(-3, allow_negative=True) == Decimal(-3)


def test_invalid_amount_is_a_value_error() -> None:
    with pytest.raises(InvalidInput):
        parse_amount("abc")
    with pytest.raises(ValueError):
        parse_amount("abc")


@SECONDARY
@given(
    whole=st.integers(min_value=0, max_value=10**MAX_INTEGER_DIGITS - 1),
    fraction=st.text(alphabet="0123456789", max_size=MAX_FRACTION_DIGITS),
    negative=st.booleans(),
)
def test_parse_amount_round_trips_plain_strings(whole: int, fraction: str, negative: bool) -> None:
    text = ("-" if negative else "") + str(whole) + ("." + fraction if fraction else "")
    value = parse_amount(text, allow_negative=True)
    assert value == Decimal(text)
    assert parse_amount(str(value), allow_negative=True) == value
