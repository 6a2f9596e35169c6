"""Pro rata split: largest remainder, exact sums, tie-breaks (SPEC §4)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.exceptions import InvalidAmount, InvalidInput, InvalidWeights
from billing.money import Currency
from billing.prorata import split, split_minor
from tests.hypothesis_profiles import MONEY_PROPERTY  # before any @given: picks the profile

EUR = Currency("EUR", 2)
JPY = Currency("JPY", 0)


def d(text: str) -> Decimal:
    return Decimal(text)


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        # SPEC's example.
        ("1.20", [1, 2, 1], ["0.30", "0.60", "0.30"]),
        # Equal remainders, equal weights: the extra cent goes to the lowest index.
        ("1.00", [1, 1, 1], ["0.34", "0.33", "0.33"]),
        ("0.02", [1, 1, 1], ["0.01", "0.01", "0.00"]),
        ("0.01", [1, 1], ["0.01", "0.00"]),
        # Exact split, nothing left over.
        ("1.00", [1, 2, 1], ["0.25", "0.50", "0.25"]),
        # Largest remainder wins: 101 * 2 / 4 has remainder 2/4, the others 1/4.
        ("1.01", [1, 2, 1], ["0.25", "0.51", "0.25"]),
        ("1.02", [1, 2, 1], ["0.26", "0.51", "0.25"]),  # 25.5 / 51 / 25.5: tie, lower index
        # Equal remainders (both 2/4), different weights: the larger weight wins ...
        ("0.02", [1, 3], ["0.00", "0.02"]),
        ("0.02", [3, 1], ["0.02", "0.00"]),
        # ... then the lower index among the equal weights.
        ("0.02", [1, 1, 2], ["0.01", "0.00", "0.01"]),
        # Zero total, single weight.
        ("0.00", [1, 2, 3], ["0.00", "0.00", "0.00"]),
        ("0", [5], ["0.00"]),
        ("12.34", [7], ["12.34"]),
        ("1.2", [1, 1], ["0.60", "0.60"]),  # 1.2 is representable in 2 decimals
        # Refunds mirror the charge.
        ("-1.00", [1, 1, 1], ["-0.34", "-0.33", "-0.33"]),
        ("-1.20", [1, 2, 1], ["-0.30", "-0.60", "-0.30"]),
    ],
)
def test_split_examples(total: str, weights: list[int], expected: list[str]) -> None:
    shares = split(d(total), weights, EUR)
    assert [str(share) for share in shares] == expected
    assert sum(shares) == d(total)


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (100, [1, 1, 1], ["34", "33", "33"]),
        (1, [1, 2, 1], ["0", "1", "0"]),
        (1000, [3, 7], ["300", "700"]),
    ],
)
def test_split_zero_decimal_currency(total: int, weights: list[int], expected: list[str]) -> None:
    shares = split(Decimal(total), weights, JPY)
    assert [str(share) for share in shares] == expected


def test_split_accepts_trailing_zeros() -> None:
    assert split(d("1.2000"), [1, 1], EUR) == [d("0.60"), d("0.60")]


def test_split_minor() -> None:
    assert split_minor(120, [1, 2, 1]) == [30, 60, 30]
    assert split_minor(-101, [1, 2, 1]) == [-25, -51, -25]
    assert split_minor(0, [4]) == [0]


def test_split_accepts_any_sequence() -> None:
    assert split(d("1.00"), (1, 1, 1), EUR) == [d("0.34"), d("0.33"), d("0.33")]


# -------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([], "must not be empty"),
        ([1, 0], r"weights\[1\] must be at least 1"),
        ([-1], r"weights\[0\] must be at least 1"),
        ([1, True], r"weights\[1\] must be an int, got bool"),
        ([1.0], r"weights\[0\] must be an int, got float"),
        ([Decimal(1)], r"weights\[0\] must be an int, got Decimal"),
        (["1"], r"weights\[0\] must be an int, got str"),
        ("12", "got a string"),
    ],
)
def test_split_rejects_bad_weights(weights: list[object], message: str) -> None:
    with pytest.raises(InvalidWeights, match=message):
        split(d("1.00"), weights, EUR)  # type: ignore[arg-type]
    with pytest.raises(InvalidWeights, match=message):
        split_minor(100, weights)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("total", "message"),
    [
        # Not representable in 2 decimals: refused, not silently rounded.
        (d("1.005"), "total: 1.005 has more than 2 decimals for EUR"),
        (d("0.001"), "more than 2 decimals"),
        (d("NaN"), "not a finite amount"),
        (d("1E+999999999"), "total: 1E\\+999999999 is too large"),
        (d("Infinity"), "not a finite amount"),
        (0.1, "floats are not accepted"),
        ("1.00", "expected a Decimal or int, got str"),
        (True, "got bool"),
    ],
)
def test_split_rejects_bad_totals(total: object, message: str) -> None:
    with pytest.raises(InvalidAmount, match=message):
        split(total, [1, 1], EUR)  # type: ignore[arg-type]


def test_split_rejects_fractional_yen() -> None:
    with pytest.raises(InvalidAmount, match="more than 0 decimals for JPY"):
        split(d("10.5"), [1], JPY)


def test_split_minor_rejects_non_int_total() -> None:
    with pytest.raises(InvalidAmount):
        split_minor(Decimal(1), [1])  # type: ignore[arg-type]


def test_errors_are_invalid_input() -> None:
    # Callers (the HTTP layer) can catch the common base and the ValueError.
    with pytest.raises(InvalidInput):
        split(d("1.00"), [], EUR)
    with pytest.raises(ValueError):
        split(d("1.001"), [1], EUR)


# -------------------------------------------------------------- properties
#
# Hypothesis costs about 1 ms per example here, so the properties share two
# tests rather than one test each: 2 x 10,000 examples stay well under a minute.

CURRENCIES = st.integers(min_value=0, max_value=4).map(lambda places: Currency("XTS", places))
MINOR_TOTALS = st.integers(min_value=0, max_value=10**12)
WEIGHTS = st.one_of(
    st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=200),
    # Small weights repeat a lot: equal weights and equal remainders (ties).
    st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=200),
)


def _units(shares: list[Decimal], currency: Currency) -> list[int]:
    return [currency.to_minor(share) for share in shares]


@MONEY_PROPERTY
@given(
    currency=CURRENCIES,
    minor=MINOR_TOTALS,
    weights=WEIGHTS,
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_split_properties(currency: Currency, minor: int, weights: list[int], seed: int) -> None:
    total = currency.from_minor(minor)
    shares = split(total, weights, currency)

    # Sums exactly, one share per weight, every share in the currency's decimals.
    assert len(shares) == len(weights)
    assert sum(shares) == total
    assert all(share.as_tuple().exponent == -currency.decimals for share in shares)

    # Each share is less than one minor unit from its exact value minor * w / W
    # (in integers: |unit * W - minor * w| < W).
    units = _units(shares, currency)
    weight_sum = sum(weights)
    for unit, weight in zip(units, weights, strict=True):
        assert abs(unit * weight_sum - minor * weight) < weight_sum

    # Largest remainder: whoever was rounded up ranks above whoever was not,
    # by (remainder, weight, lower index).
    def rank(i: int) -> tuple[int, int, int]:
        return (minor * weights[i] % weight_sum, weights[i], -i)

    floors = [minor * weight // weight_sum for weight in weights]
    up = [i for i, unit in enumerate(units) if unit == floors[i] + 1]
    down = [i for i, unit in enumerate(units) if unit == floors[i]]
    assert len(up) + len(down) == len(units)
    if up and down:
        assert min(rank(i) for i in up) > max(rank(i) for i in down)

    # Equal weights: shares differ by at most one unit, the extra to the earlier.
    by_weight: dict[int, list[int]] = {}
    for unit, weight in zip(units, weights, strict=True):
        by_weight.setdefault(weight, []).append(unit)
    for group in by_weight.values():
        assert group[0] - group[-1] <= 1
        assert group == sorted(group, reverse=True)

    # Deterministic; a refund mirrors the charge; scaling all weights changes nothing.
    assert split(total, weights, currency) == shares
    assert split(-total, weights, currency) == [-share for share in shares]
    assert split(total, [3 * weight for weight in weights], currency) == shares

    # Order-stable: a share depends on the weight, not the position (equal
    # weights may trade their extra unit, which leaves the pairs unchanged).
    permuted = list(weights)
    random.Random(seed).shuffle(permuted)
    assert sorted(zip(weights, shares, strict=True)) == sorted(
        zip(permuted, split(total, permuted, currency), strict=True)
    )


@MONEY_PROPERTY
@given(
    currency=CURRENCIES,
    minor=MINOR_TOTALS,
    count=st.integers(min_value=1, max_value=200),
    weight=st.integers(min_value=1, max_value=1000),
)
def test_equal_weights_differ_by_at_most_one_unit(
    currency: Currency, minor: int, count: int, weight: int
) -> None:
    units = _units(split(currency.from_minor(minor), [weight] * count, currency), currency)
    assert max(units) - min(units) <= 1
    assert sum(units) == minor
    # Stable: the extra units go to the first participants.
    assert units == sorted(units, reverse=True)
