"""Cost of a print-out from a proxy printer's cost rules (SPEC §4).

cost = copies * (page prices - duplex sheets * duplex discount), where the
discount on a sheet is capped at that sheet's own price, so no job ever costs
less than nothing.

Exactness: every line is exactly quantity * unit price (no rounding, so an
admin can redo the sum by hand), the total is the exact sum rounded once to
the currency (half up), and when that rounding changes anything a "rounding"
line holds the difference. The line amounts therefore always sum exactly to
the total, and the total is the true price rounded once, not an accumulation
of per-line roundings (which could even make a heavily discounted job
negative).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from types import MappingProxyType
from typing import cast

from billing.exceptions import InvalidAmount, InvalidInput
from billing.money import Currency, parse_amount

__all__ = [
    "MAX_COUNT",
    "CostBreakdown",
    "CostLine",
    "CostRules",
    "JobSpec",
    "MediaPrice",
    "compute",
    "ticket_cost",
]

# Sanity bound on pages and copies; with amounts bounded by parse_amount it
# keeps every product far inside the exact context below.
MAX_COUNT = 10**9

# All cost arithmetic is exact: any rounding would raise instead of hiding.
_EXACT = Context(
    prec=100,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, Inexact, Rounded, Overflow, DivisionByZero],
)

# PWG 5101.1 self-describing media name: class_name_WxHunit (iso_a3_297x420mm).
_PWG_MEDIA_RE = re.compile(r"[a-z0-9]+_([a-z0-9.\-]+)_[0-9.]+x[0-9.]+(?:mm|in)", re.ASCII)


def _price(value: object, field: str) -> Decimal:
    # Config values arrive untyped; parse_amount checks the runtime type itself
    # (refusing floats, bools, NaN, negatives) and parses strings.
    return parse_amount(cast("str | int | Decimal", value), field=field)


def _media_key(media: object) -> str:
    """Media names compare case-insensitively ("A3" is "a3")."""
    if not isinstance(media, str) or not media.strip():
        raise InvalidInput(f"media name must be a non-empty string, got {media!r}")
    return media.strip().lower()


def _short_name(key: str) -> str | None:
    """The size name of a PWG media name ("iso_a3_297x420mm" -> "a3"), else None."""
    match = _PWG_MEDIA_RE.fullmatch(key)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class MediaPrice:
    """Per-page prices for one media size, replacing the rule's defaults."""

    mono: Decimal
    color: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(self, "mono", _price(self.mono, "media price mono"))
        object.__setattr__(self, "color", _price(self.color, "media price color"))


@dataclass(frozen=True, slots=True)
class CostRules:
    """A proxy printer's prices. Strings are parsed with parse_amount.

    ``media`` keys are matched case-insensitively, either exactly or by PWG
    size name: a rule for "A3" prices a job on "iso_a3_297x420mm" and a rule
    for "iso_a3_297x420mm" prices a job on "a3". Values may be MediaPrice or a
    mapping with "mono" and "color".
    """

    mono: Decimal
    color: Decimal
    duplex_discount: Decimal = Decimal(0)
    media: Mapping[str, MediaPrice] = field(default_factory=dict)
    _lookup: Mapping[str, tuple[str, MediaPrice]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mono", _price(self.mono, "mono"))
        object.__setattr__(self, "color", _price(self.color, "color"))
        object.__setattr__(self, "duplex_discount", _price(self.duplex_discount, "duplex_discount"))
        if not isinstance(self.media, Mapping):
            raise InvalidInput(f"media must be a mapping, got {type(self.media).__name__}")
        media: dict[str, MediaPrice] = {}
        for name, price in self.media.items():
            key = _media_key(name)
            if key in media:
                raise InvalidInput(f"media {name!r} is listed twice (names ignore case)")
            media[key] = _media_price(name, price)
        object.__setattr__(self, "media", MappingProxyType(media))
        object.__setattr__(self, "_lookup", MappingProxyType(_build_lookup(media)))

    def prices_for(self, media: str | None) -> tuple[str | None, MediaPrice]:
        """The media key whose prices apply (None for the defaults) and those prices."""
        if media is not None and media.strip():
            key = media.strip().lower()
            found = self._lookup.get(key)
            if found is None and (short := _short_name(key)) is not None:
                found = self._lookup.get(short)
            if found is not None:
                return found
        return None, MediaPrice(self.mono, self.color)


def _media_price(name: str, price: object) -> MediaPrice:
    if isinstance(price, MediaPrice):
        return price
    if not isinstance(price, Mapping) or set(price) != {"mono", "color"}:
        raise InvalidInput(
            f"media {name!r}: expected a MediaPrice or a mapping with 'mono' and 'color'"
        )
    try:
        return MediaPrice(mono=price["mono"], color=price["color"])
    except InvalidAmount as exc:
        raise InvalidAmount(f"media {name!r}: {exc}") from exc


def _build_lookup(media: dict[str, MediaPrice]) -> dict[str, tuple[str, MediaPrice]]:
    """Exact keys, plus the size name of each PWG key unless a rule claims it.

    Two PWG names with the same size name but different prices make that size
    name ambiguous; it is then only matched by the full names.
    """
    lookup = {key: (key, price) for key, price in media.items()}
    aliases: dict[str, tuple[str, MediaPrice] | None] = {}
    for key, price in media.items():
        short = _short_name(key)
        if short is None or short in media:
            continue
        seen = aliases.get(short, (key, price))
        aliases[short] = (key, price) if seen is not None and seen[1] == price else None
    lookup.update({short: hit for short, hit in aliases.items() if hit is not None})
    return lookup


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not minimum <= value <= MAX_COUNT:
        raise InvalidInput(f"{name} must be from {minimum} to {MAX_COUNT}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What was printed. Pages are per copy.

    ``color`` is the colour mode the job printed in. For a colour job,
    ``color_pages`` (when known) says how many pages carry colour: those are
    priced at the colour price, the rest at mono. A job printed in mono is all
    mono whatever ``color_pages`` says (the printer rendered it in grey).
    """

    pages: int
    copies: int = 1
    color: bool = False
    duplex: bool = False
    media: str | None = None
    color_pages: int | None = None

    def __post_init__(self) -> None:
        _count(self.pages, "pages", 0)
        _count(self.copies, "copies", 1)
        for flag in ("color", "duplex"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidInput(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.media is not None and not isinstance(self.media, str):
            raise InvalidInput(f"media must be a string or None, got {self.media!r}")
        if self.color_pages is not None:
            _count(self.color_pages, "color_pages", 0)
            if self.color_pages > self.pages:
                raise InvalidInput(
                    f"color_pages ({self.color_pages}) cannot exceed pages ({self.pages})"
                )


@dataclass(frozen=True, slots=True)
class CostLine:
    """One line of a breakdown: amount == quantity * unit_price, exactly."""

    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """A cost and how it came about; sum(line.amount) == total, exactly."""

    total: Decimal
    lines: tuple[CostLine, ...]


def _line(description: str, quantity: int, unit_price: Decimal) -> CostLine:
    amount = _EXACT.multiply(Decimal(quantity), unit_price)
    return CostLine(description, quantity, unit_price, amount)


def _duplex_discounts(
    color_pages: int, mono_pages: int, price: MediaPrice, discount: Decimal
) -> dict[Decimal, int]:
    """Discount per sheet (capped at the sheet's price) -> number of sheets, per copy.

    Which pages share a sheet is not known, so pages are paired by kind:
    color with color, mono with mono, and one mixed sheet when both counts are
    odd. This gives exactly (color_pages + mono_pages) // 2 sheets.
    """
    sheets = [
        (color_pages // 2, _EXACT.add(price.color, price.color)),
        (color_pages % 2 * (mono_pages % 2), _EXACT.add(price.color, price.mono)),
        (mono_pages // 2, _EXACT.add(price.mono, price.mono)),
    ]
    result: dict[Decimal, int] = {}
    for count, sheet_price in sheets:
        effective = min(discount, sheet_price)
        if count and effective:
            result[effective] = result.get(effective, 0) + count
    return result


def _job_lines(rules: CostRules, job: JobSpec) -> list[CostLine]:
    media_key, price = rules.prices_for(job.media)
    suffix = f" ({media_key})" if media_key else ""
    color_pages = 0  # printed in mono: every page is mono
    if job.color:
        color_pages = job.pages if job.color_pages is None else job.color_pages
    mono_pages = job.pages - color_pages

    lines: list[CostLine] = []
    if mono_pages:
        lines.append(_line(f"mono pages{suffix}", mono_pages * job.copies, price.mono))
    if color_pages:
        lines.append(_line(f"color pages{suffix}", color_pages * job.copies, price.color))
    if job.duplex and rules.duplex_discount:
        discounts = _duplex_discounts(color_pages, mono_pages, price, rules.duplex_discount)
        for effective, sheets in discounts.items():
            description = "duplex sheet discount"
            if effective < rules.duplex_discount:
                description += f" (capped at the sheet price {effective})"
            lines.append(_line(description, sheets * job.copies, -effective))
    return lines


def _breakdown(lines: list[CostLine], currency: Currency) -> CostBreakdown:
    exact = Decimal(0)
    for line in lines:
        exact = _EXACT.add(exact, line.amount)
    total = currency.quantize(exact)
    if total != exact:
        adjustment = _EXACT.subtract(total, exact)
        lines.append(
            CostLine(f"rounding to {currency.quantum} {currency.code}", 1, adjustment, adjustment)
        )
    return CostBreakdown(total=total, lines=tuple(lines))


def compute(rules: CostRules, job: JobSpec, currency: Currency) -> CostBreakdown:
    """The cost of ``job`` under ``rules``, with its lines; total >= 0, in ``currency``."""
    return _breakdown(_job_lines(rules, job), currency)


def ticket_cost(
    rules: CostRules, job: JobSpec, currency: Currency, extras: Sequence[Decimal]
) -> CostBreakdown:
    """``compute`` plus one line per job-ticket extra (each charged once, >= 0)."""
    lines = _job_lines(rules, job)
    for index, extra in enumerate(extras):
        amount = _price(extra, f"extras[{index}]")
        lines.append(CostLine(f"ticket extra {index + 1}", 1, amount, amount))
    return _breakdown(lines, currency)
