"""Pro rata split throughput, next to the naive per-share quantize loop.

The naive loop (quantize every share, give the last one whatever is left) is
what billing/prorata.py replaces: its per-share roundings do not add up to the
total, and the fix-up dumps all the error on the last participant. It lives
here, not in billing, so nothing can call it by mistake.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from billing.money import Currency
from billing.prorata import split

CURRENCY = Currency("EUR", 2)
WEIGHTS_PER_SPLIT = 100
CASES = 1_000
MIN_SECONDS = 1.0
SEED = 20_240_601

Splitter = Callable[[Decimal, Sequence[int], Currency], list[Decimal]]


def _quantized(
    total: Decimal, weights: Sequence[int], weight_sum: int, quantum: Decimal
) -> list[Decimal]:
    """The naive per-share loop: each share rounded on its own."""
    return [(total * weight / weight_sum).quantize(quantum, ROUND_HALF_UP) for weight in weights]


def naive_split(total: Decimal, weights: Sequence[int], currency: Currency) -> list[Decimal]:
    """Quantize each share, then give the last one the rest (the baseline)."""
    weight_sum = sum(weights)
    shares = _quantized(total, weights[:-1], weight_sum, currency.quantum)
    shares.append(total - sum(shares, Decimal(0)))
    return shares


def _cases() -> list[tuple[Decimal, list[int]]]:
    rng = random.Random(SEED)
    return [
        (
            CURRENCY.from_minor(rng.randint(0, 10**7)),  # up to 100,000.00
            [rng.randint(1, 1000) for _ in range(WEIGHTS_PER_SPLIT)],
        )
        for _ in range(CASES)
    ]


def _rate(splitter: Splitter, cases: list[tuple[Decimal, list[int]]]) -> float:
    """Splits per second, over whole passes through the cases, for >= MIN_SECONDS."""
    done = 0
    start = time.perf_counter()
    while True:
        for total, weights in cases:
            splitter(total, weights, CURRENCY)
        done += len(cases)
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_SECONDS:
            return done / elapsed


def _off_by(share: Decimal, total: Decimal, weight: int, weight_sum: int) -> Fraction:
    """How far a share is from its exact value, in minor units."""
    exact = Fraction(total) * weight / weight_sum
    return abs(Fraction(share) - exact) / Fraction(CURRENCY.quantum)


def main() -> None:
    cases = _cases()
    split_rate = _rate(split, cases)
    naive_rate = _rate(naive_split, cases)
    print(
        f"prorata split ({WEIGHTS_PER_SPLIT} weights): {split_rate:,.0f} splits/s; "
        f"naive quantize loop: {naive_rate:,.0f} splits/s; "
        f"ratio {split_rate / naive_rate:.2f}x"
    )

    missed = worst_miss = unfair = 0
    worst_unfair = Fraction(0)
    split_bad = 0
    for total, weights in cases:
        weight_sum = sum(weights)
        rounded = _quantized(total, weights, weight_sum, CURRENCY.quantum)
        miss = abs(CURRENCY.to_minor(sum(rounded, Decimal(0)) - total))
        if miss:
            missed += 1
            worst_miss = max(worst_miss, miss)
        last = naive_split(total, weights, CURRENCY)[-1]
        off = _off_by(last, total, weights[-1], weight_sum)
        if off >= 1:
            unfair += 1
            worst_unfair = max(worst_unfair, off)
        shares = split(total, weights, CURRENCY)
        if sum(shares, Decimal(0)) != total or any(
            _off_by(share, total, weight, weight_sum) >= 1
            for share, weight in zip(shares, weights, strict=True)
        ):
            split_bad += 1
    print(
        f"naive quantize loop: shares summed to the total in {CASES - missed:,} of {CASES:,} "
        f"splits, mismatched in {missed:,} (off by up to {worst_miss} minor units); "
        f"giving the last share the rest leaves it >= 1 minor unit from its exact value "
        f"in {unfair:,} (worst {float(worst_unfair):.2f} units)"
    )
    print(
        f"prorata split: exact sum and every share within one minor unit "
        f"in {CASES - split_bad:,} of {CASES:,} splits"
    )


if __name__ == "__main__":
    main()
