"""Cost rules: pages x price, duplex discount, media overrides, exact lines."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (before any @given: picks the profile)
from billing.cost import (
    MAX_COUNT,
    CostBreakdown,
    CostLine,
    CostRules,
    JobSpec,
    MediaPrice,
    compute,
    ticket_cost,
)
from billing.exceptions import InvalidAmount, InvalidInput
from billing.money import Currency

# These properties are cheap to cover: 2,000 examples in CI is plenty and keeps
# the suite's time for the 10,000-example pro rata properties.
SECONDARY = settings(max_examples=min(settings().max_examples, 2_000))

EUR = Currency("EUR")
JPY = Currency("JPY", 0)
D = Decimal

RULES = CostRules(mono=D("0.05"), color=D("0.20"), duplex_discount=D("0.02"))


def table(breakdown: CostBreakdown) -> list[tuple[str, int, str, str]]:
    """Lines as plain tuples, easy to compare."""
    return [
        (line.description, line.quantity, str(line.unit_price), str(line.amount))
        for line in breakdown.lines
    ]


def assert_consistent(breakdown: CostBreakdown, currency: Currency) -> None:
    """The invariants every breakdown keeps."""
    assert sum((line.amount for line in breakdown.lines), D(0)) == breakdown.total
    for line in breakdown.lines:
        assert line.amount == line.quantity * line.unit_price
    assert breakdown.total >= 0
    assert breakdown.total.as_tuple().exponent == -currency.decimals


# ------------------------------------------------------------------- prices

MONO_10 = [("mono pages", 10, "0.05", "0.50")]


@pytest.mark.parametrize(
    ("job", "total", "lines"),
    [
        (JobSpec(pages=10), "0.50", MONO_10),
        (JobSpec(pages=10, color=True), "2.00", [("color pages", 10, "0.20", "2.00")]),
        (
            JobSpec(pages=10, color=True, color_pages=3),
            "0.95",
            [("mono pages", 7, "0.05", "0.35"), ("color pages", 3, "0.20", "0.60")],
        ),
        # Printed in mono: colour content is rendered grey and priced mono.
        (
            JobSpec(pages=10, color=False, color_pages=3),
            "0.50",
            [("mono pages", 10, "0.05", "0.50")],
        ),
        (
            JobSpec(pages=10, color=True, color_pages=0),
            "0.50",
            [("mono pages", 10, "0.05", "0.50")],
        ),
        (JobSpec(pages=4, copies=3), "0.60", [("mono pages", 12, "0.05", "0.60")]),
        (JobSpec(pages=0), "0.00", []),
        (JobSpec(pages=0, copies=5, duplex=True), "0.00", []),
    ],
)
def test_page_prices(job: JobSpec, total: str, lines: list[tuple[str, int, str, str]]) -> None:
    breakdown = compute(RULES, job, EUR)
    assert str(breakdown.total) == total
    assert table(breakdown) == lines
    assert_consistent(breakdown, EUR)


@pytest.mark.parametrize(
    ("job", "total", "sheets"),
    [
        (JobSpec(pages=10, duplex=True), "0.40", 5),
        (JobSpec(pages=5, duplex=True), "0.21", 2),  # the last page is single-sided
        (JobSpec(pages=1, duplex=True), "0.05", 0),
        (JobSpec(pages=10, duplex=True, copies=2), "0.80", 10),
        (JobSpec(pages=10, duplex=True, color=True), "1.90", 5),
    ],
)
def test_duplex_discount(job: JobSpec, total: str, sheets: int) -> None:
    breakdown = compute(RULES, job, EUR)
    assert str(breakdown.total) == total
    discount = [line for line in breakdown.lines if line.description.startswith("duplex")]
    if sheets:
        assert [(line.quantity, str(line.unit_price)) for line in discount] == [(sheets, "-0.02")]
    else:
        assert discount == []
    assert_consistent(breakdown, EUR)


def test_no_discount_line_without_a_discount() -> None:
    rules = CostRules(mono=D("0.05"), color=D("0.20"))
    breakdown = compute(rules, JobSpec(pages=10, duplex=True), EUR)
    assert table(breakdown) == [("mono pages", 10, "0.05", "0.50")]


def test_discount_is_capped_at_the_sheet_price() -> None:
    # 0.15 off a sheet whose two mono pages cost 0.10: the sheet is free, not negative.
    rules = CostRules(mono=D("0.05"), color=D("0.20"), duplex_discount=D("0.15"))
    breakdown = compute(rules, JobSpec(pages=10, duplex=True, copies=2), EUR)
    assert breakdown.total == D("0.00")
    assert table(breakdown) == [
        ("mono pages", 20, "0.05", "1.00"),
        ("duplex sheet discount (capped at the sheet price 0.10)", 10, "-0.10", "-1.00"),
    ]
    # An odd page stays single-sided and is paid in full.
    assert compute(rules, JobSpec(pages=5, duplex=True), EUR).total == D("0.05")
    # A free page is free, whatever the discount.
    free = CostRules(mono=D(0), color=D(0), duplex_discount=D("1.00"))
    assert compute(free, JobSpec(pages=4, duplex=True), EUR) == CostBreakdown(
        D("0.00"), (CostLine("mono pages", 4, D(0), D(0)),)
    )


def test_mixed_duplex_pairs_pages_by_kind() -> None:
    # 3 colour + 2 mono pages: a colour/colour sheet (0.40, full 0.15 off), a
    # mono/mono sheet (0.10, capped) and one single-sided colour page.
    rules = CostRules(mono=D("0.05"), color=D("0.20"), duplex_discount=D("0.15"))
    job = JobSpec(pages=5, color=True, color_pages=3, duplex=True, copies=2)
    breakdown = compute(rules, job, EUR)
    assert table(breakdown) == [
        ("mono pages", 4, "0.05", "0.20"),
        ("color pages", 6, "0.20", "1.20"),
        ("duplex sheet discount", 2, "-0.15", "-0.30"),
        ("duplex sheet discount (capped at the sheet price 0.10)", 2, "-0.10", "-0.20"),
    ]
    assert breakdown.total == D("0.90")
    # Both counts odd: one mixed colour/mono sheet (0.25, full discount).
    mixed = compute(rules, JobSpec(pages=4, color=True, color_pages=1, duplex=True), EUR)
    assert table(mixed)[-1] == (
        "duplex sheet discount (capped at the sheet price 0.10)",
        1,
        "-0.10",
        "-0.10",
    )
    assert table(mixed)[-2] == ("duplex sheet discount", 1, "-0.15", "-0.15")
    assert mixed.total == D("0.10")  # 0.20 + 3 x 0.05 - 0.15 - 0.10


# -------------------------------------------------------------------- media

MEDIA_RULES = CostRules(
    mono=D("0.05"),
    color=D("0.20"),
    duplex_discount=D("0.02"),
    media={
        "A3": MediaPrice(mono=D("0.10"), color=D("0.40")),
        "na_letter_8.5x11in": {"mono": "0.06", "color": "0.25"},  # type: ignore[dict-item]
    },
)


@pytest.mark.parametrize(
    ("media", "key", "mono"),
    [
        ("A3", "a3", "0.10"),
        ("a3", "a3", "0.10"),
        (" a3 ", "a3", "0.10"),
        ("iso_a3_297x420mm", "a3", "0.10"),  # PWG name -> size name "a3"
        ("ISO_A3_297x420MM", "a3", "0.10"),
        ("na_letter_8.5x11in", "na_letter_8.5x11in", "0.06"),
        ("Letter", "na_letter_8.5x11in", "0.06"),  # size name -> PWG rule
        ("iso_a4_210x297mm", None, "0.05"),  # no override: defaults
        ("A4", None, "0.05"),
        (None, None, "0.05"),
        ("", None, "0.05"),
    ],
)
def test_media_lookup(media: str | None, key: str | None, mono: str) -> None:
    found, price = MEDIA_RULES.prices_for(media)
    assert found == key
    assert str(price.mono) == mono


def test_media_override_prices_the_job() -> None:
    job = JobSpec(pages=4, duplex=True, media="iso_a3_297x420mm", color=True, color_pages=2)
    breakdown = compute(MEDIA_RULES, job, EUR)
    assert table(breakdown) == [
        ("mono pages (a3)", 2, "0.10", "0.20"),
        ("color pages (a3)", 2, "0.40", "0.80"),
        ("duplex sheet discount", 2, "-0.02", "-0.04"),
    ]
    assert breakdown.total == D("0.96")


def test_media_keys_are_normalised() -> None:
    assert set(MEDIA_RULES.media) == {"a3", "na_letter_8.5x11in"}
    with pytest.raises(TypeError):
        MEDIA_RULES.media["a4"] = MediaPrice(D(1), D(1))  # type: ignore[index]


def test_ambiguous_size_name_only_matches_full_names() -> None:
    rules = CostRules(
        mono=D("0.05"),
        color=D("0.20"),
        media={
            "iso_a3_297x420mm": MediaPrice(D("0.10"), D("0.40")),
            "oe_a3_11.69x16.54in": MediaPrice(D("0.11"), D("0.41")),
        },
    )
    assert rules.prices_for("a3") == (None, MediaPrice(D("0.05"), D("0.20")))
    assert rules.prices_for("oe_a3_11.69x16.54in")[0] == "oe_a3_11.69x16.54in"


# ------------------------------------------------------------ exactness


def test_sub_cent_prices_round_once_with_a_rounding_line() -> None:
    rules = CostRules(mono=D("0.0125"), color=D("0.2"))
    breakdown = compute(rules, JobSpec(pages=3), EUR)
    assert breakdown.total == D("0.04")  # 0.0375 rounded half up, once
    assert table(breakdown) == [
        ("mono pages", 3, "0.0125", "0.0375"),
        ("rounding to 0.01 EUR", 1, "0.0025", "0.0025"),
    ]
    assert_consistent(breakdown, EUR)


def test_rounding_never_makes_a_job_negative() -> None:
    # Rounding each line on its own would give 0.00 + 0.00 - 0.01 = -0.01 here.
    rules = CostRules(mono=D("0.002"), color=D("0.002"), duplex_discount=D("0.008"))
    job = JobSpec(pages=4, color=True, color_pages=2, duplex=True)
    breakdown = compute(rules, job, EUR)
    assert breakdown.total == D("0.00")
    assert_consistent(breakdown, EUR)


def test_zero_decimal_currency() -> None:
    rules = CostRules(mono=D(5), color=D("12.5"))
    breakdown = compute(rules, JobSpec(pages=3, color=True), JPY)
    assert breakdown.total == D(38)
    assert str(breakdown.total) == "38"
    assert breakdown.lines[-1].description == "rounding to 1 JPY"


def test_rules_parse_strings_and_ints() -> None:
    rules = CostRules(mono="0.05", color=1, duplex_discount="0.01")  # type: ignore[arg-type]
    assert (rules.mono, rules.color, rules.duplex_discount) == (D("0.05"), D(1), D("0.01"))


# ------------------------------------------------------------ ticket cost


def test_ticket_cost_adds_extras() -> None:
    breakdown = ticket_cost(RULES, JobSpec(pages=10), EUR, [D("2.50"), D("0.75")])
    assert table(breakdown) == [
        ("mono pages", 10, "0.05", "0.50"),
        ("ticket extra 1", 1, "2.50", "2.50"),
        ("ticket extra 2", 1, "0.75", "0.75"),
    ]
    assert breakdown.total == D("3.75")
    assert ticket_cost(RULES, JobSpec(pages=10), EUR, []) == compute(RULES, JobSpec(pages=10), EUR)


def test_ticket_cost_rounds_once_over_everything() -> None:
    breakdown = ticket_cost(RULES, JobSpec(pages=1), EUR, [D("0.005")])
    assert breakdown.total == D("0.06")
    assert_consistent(breakdown, EUR)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (D("-1"), r"extras\[0\]: must not be negative"),
        (0.5, r"extras\[0\]: floats are not accepted"),
        (D("NaN"), r"extras\[0\]: NaN is not a finite amount"),
    ],
)
def test_ticket_cost_rejects_bad_extras(extra: object, message: str) -> None:
    with pytest.raises(InvalidAmount, match=message):
        ticket_cost(RULES, JobSpec(pages=1), EUR, [extra])  # type: ignore[list-item]


# ------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mono": "abc"}, "^mono: 'abc' is not a decimal number"),
        ({"mono": "-0.05"}, "^mono: must not be negative"),
        ({"color": 0.2}, "^color: floats are not accepted"),
        ({"color": None}, "^color: expected a Decimal or int, got NoneType"),
        ({"duplex_discount": D("NaN")}, "^duplex_discount: NaN is not a finite amount"),
        ({"duplex_discount": "1e2"}, "^duplex_discount: '1e2' is not a decimal number"),
        ({"media": {"a3": {"mono": "x", "color": "1"}}}, "^media 'a3': media price mono: 'x'"),
        ({"media": {"a3": {"mono": "-1", "color": "1"}}}, "must not be negative"),
    ],
)
def test_rules_reject_bad_amounts(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"mono": "0.05", "color": "0.20", **kwargs}
    with pytest.raises(InvalidAmount, match=message):
        CostRules(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("media", "message"),
    [
        ({"A3": MediaPrice(D(1), D(1)), "a3": MediaPrice(D(1), D(1))}, "listed twice"),
        ({"": MediaPrice(D(1), D(1))}, "non-empty string"),
        ({3: MediaPrice(D(1), D(1))}, "non-empty string"),
        ({"a3": D(1)}, "expected a MediaPrice or a mapping"),
        ({"a3": {"mono": "1"}}, "expected a MediaPrice or a mapping"),
        ([("a3", MediaPrice(D(1), D(1)))], "media must be a mapping"),
    ],
)
def test_rules_reject_bad_media(media: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        CostRules(mono=D(1), color=D(1), media=media)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pages": -1}, "pages must be from 0"),
        ({"pages": MAX_COUNT + 1}, "pages must be from 0"),
        ({"pages": 1.0}, "pages must be an int, got float"),
        ({"pages": True}, "pages must be an int, got bool"),
        ({"pages": "3"}, "pages must be an int, got str"),
        ({"copies": 0}, "copies must be from 1"),
        ({"copies": -2}, "copies must be from 1"),
        ({"color": "yes"}, "color must be a bool"),
        ({"duplex": 1}, "duplex must be a bool"),
        ({"media": 3}, "media must be a string or None"),
        ({"color": True, "color_pages": 4}, r"color_pages \(4\) cannot exceed pages \(3\)"),
        ({"color_pages": -1}, "color_pages must be from 0"),
    ],
)
def test_job_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"pages": 3, **kwargs}
    with pytest.raises(InvalidInput, match=message):
        JobSpec(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------ properties

PRICES = st.decimals(min_value=0, max_value=10, places=4)


@st.composite
def jobs(draw: st.DrawFn) -> JobSpec:
    pages = draw(st.integers(min_value=0, max_value=500))
    color_pages = draw(st.none() | st.integers(min_value=0, max_value=pages))
    return JobSpec(
        pages=pages,
        copies=draw(st.integers(min_value=1, max_value=50)),
        color=draw(st.booleans()),
        duplex=draw(st.booleans()),
        color_pages=color_pages,
    )


@SECONDARY
@given(
    mono=PRICES,
    color=PRICES,
    discount=PRICES,
    job=jobs(),
    places=st.integers(min_value=0, max_value=4),
)
def test_breakdown_invariants(
    mono: Decimal, color: Decimal, discount: Decimal, job: JobSpec, places: int
) -> None:
    currency = Currency("XTS", places)
    breakdown = compute(CostRules(mono, color, discount), job, currency)
    assert_consistent(breakdown, currency)
    # Without a discount the total is the exact page price, rounded once.
    plain = compute(CostRules(mono, color), job, currency)
    color_pages = 0
    if job.color:
        color_pages = job.pages if job.color_pages is None else job.color_pages
    exact = job.copies * ((job.pages - color_pages) * mono + color_pages * color)
    assert plain.total == currency.quantize(exact)
    # A discount never raises the price, and takes at most the discount per sheet.
    assert breakdown.total <= plain.total
    if job.duplex:
        floor = exact - job.copies * (job.pages // 2) * discount
        assert breakdown.total >= currency.quantize(max(floor, Decimal(0)))
