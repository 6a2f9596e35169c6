"""Pro rata split of a cost over weighted participants (SPEC §4).

Largest-remainder method in integer minor units: every share is the exact
value total * w / W rounded down or up by less than one minor unit, and the
shares always sum exactly to the total. Rounding each share on its own cannot
promise that (1.00 over three equal weights gives 0.33 * 3 = 0.99), which is
why there is no "quantize each share" shortcut here.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from billing.exceptions import InvalidAmount, InvalidWeights
from billing.money import Currency

__all__ = ["split", "split_minor"]


def _check_weights(weights: Sequence[int]) -> list[int]:
    if isinstance(weights, str | bytes):
        raise InvalidWeights("weights must be a sequence of ints, got a string")
    checked = list(weights)
    if not checked:
        raise InvalidWeights("weights must not be empty")
    # Fast path for the usual case; the loop below finds and names the culprit.
    if all(type(weight) is int for weight in checked) and min(checked) >= 1:
        return checked
    for index, weight in enumerate(checked):
        # bool is an int subclass; True as a weight is almost surely a bug.
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise InvalidWeights(
                f"weights[{index}] must be an int, got {type(weight).__name__} {weight!r}"
            )
        if weight < 1:
            raise InvalidWeights(f"weights[{index}] must be at least 1, got {weight}")
    return checked


def _split_units(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` >= 0 units over checked ``weights``.

    Floor every exact share, then hand the leftover units (fewer than
    len(weights)) to the largest remainders; ties go to the larger weight, then
    to the lower index, so the result is deterministic. O(n log n).
    """
    weight_sum = sum(weights)
    # total * w is the exact share times weight_sum: floor-divide for the share,
    # and share * weight_sum - total * w is minus the remainder. Remainders
    # share the denominator, so comparing numerators compares them exactly.
    scaled = [total * weight for weight in weights]
    shares = [value // weight_sum for value in scaled]
    leftover = total - sum(shares)
    if leftover:
        # Ascending (-remainder, -weight, index) is the priority order.
        ranked = sorted(
            zip(
                [share * weight_sum - value for share, value in zip(shares, scaled, strict=True)],
                [-weight for weight in weights],
                range(len(weights)),
                strict=True,
            )
        )
        for _, _, index in ranked[:leftover]:
            shares[index] += 1
    return shares


def split_minor(total: int, weights: Sequence[int]) -> list[int]:
    """Like ``split`` but in integer minor units (120 over [1, 2, 1] -> [30, 60, 30])."""
    if isinstance(total, bool) or not isinstance(total, int):
        raise InvalidAmount(f"total: expected an int of minor units, got {type(total).__name__}")
    shares = _split_units(abs(total), _check_weights(weights))
    return [-share for share in shares] if total < 0 else shares


def split(total: Decimal, weights: Sequence[int], currency: Currency) -> list[Decimal]:
    """Shares of ``total`` in proportion to ``weights``, summing exactly to ``total``.

    ``total`` must already be in the currency's decimals (1.20 for EUR, not
    1.205): the caller charges one quantized cost and the shares must add up to
    that very amount, so rounding it here would hide a mismatch; InvalidAmount
    is raised instead. A negative total (a refund) is split as its absolute
    value and negated, so a refund mirrors the charge it reverses.
    Weights are ints >= 1 (InvalidWeights otherwise).
    """
    checked = _check_weights(weights)
    minor = currency.to_minor(total, field="total")
    shares = _split_units(abs(minor), checked)
    if minor < 0:
        shares = [-share for share in shares]
    return currency.from_minor_many(shares)
