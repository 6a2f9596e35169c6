"""Job options and the dispatch plan (issue #12), without a printer.

The option reader never raises and reports what it does not use; the planner
either plans or says why not (``Unsupported``), for any options and any
capabilities. The end-to-end behaviour is in tests/test_e2e_options.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (before any @given: picks the profile)
from proxy.pages import PCL, PDF, POSTSCRIPT, PWG_RASTER, TEXT, UNKNOWN, URF
from proxy.pipeline import plan as planning
from proxy.pipeline.convert import qpdf_ranges
from proxy.pipeline.delegation import parse_cups_options
from proxy.pipeline.options import CUPS_INTERNAL, DELEGATION_KEYS, OPTIONS_READ, job_options
from proxy.targets import ipp_codec as codec
from proxy.targets.capabilities import Capabilities

RASTER_ONLY = Capabilities(
    formats=frozenset({PWG_RASTER, "image/jpeg", UNKNOWN}),
    pwg_resolutions=(300, 600),
    pwg_types=frozenset({"sgray_8", "srgb_8"}),
    sides=frozenset({"one-sided", "two-sided-long-edge"}),
    color_modes=frozenset({"monochrome", "color"}),
    color=True,
    max_copies=99,
)
PDF_ONLY = Capabilities(formats=frozenset({PDF}), page_ranges=True, max_copies=1)


def opts(text: str, copies: int = 1):  # type: ignore[no-untyped-def]
    return job_options(parse_cups_options(text), copies)


def test_what_cupsd_adds_is_not_a_job_option() -> None:
    o = opts(
        "finishings=3 number-up=1 job-uuid=urn:uuid:x job-originating-host-name=h "
        "time-at-creation=1 delegators=bob:2 frob=1"
    )
    assert o.attributes() == {} and o.problems == () and o.unknown == ("frob",)


@pytest.mark.parametrize(
    ("text", "attribute", "value"),
    [
        ("sides=two-sided-long-edge", "sides", "two-sided-long-edge"),
        ("Duplex=DuplexTumble", "sides", "two-sided-short-edge"),
        ("print-color-mode=monochrome", "print-color-mode", "monochrome"),
        ("ColorModel=Gray", "print-color-mode", "monochrome"),
        ("media=A4,Tray1", "media", "iso_a4_210x297mm"),
        ("PageSize=Letter", "media", "na_letter_8.5x11in"),
        ("landscape", "orientation-requested", 4),
        ("orientation-requested=reverse-portrait", "orientation-requested", 6),
        ("print-quality=high", "print-quality", 5),
        ("number-up=4", "number-up", 4),
        ("output-bin=face-down", "output-bin", "face-down"),
        ("collate=false", "multiple-document-handling", "separate-documents-uncollated-copies"),
    ],
)
def test_each_option_becomes_its_ipp_attribute(text: str, attribute: str, value: object) -> None:
    attrs = opts(text).attributes()
    assert list(attrs) == [attribute] and attrs[attribute].values == (value,)


def test_page_ranges_are_sorted_merged_and_counted() -> None:
    o = opts("page-ranges=5-6,1-2,2-3,9-")
    assert o.page_ranges == ((1, 3), (5, 6), (9, 9_999_999))
    assert o.selected_pages(10) == 3 + 2 + 2
    assert o.selected_pages(4) == 3
    assert qpdf_ranges(o.page_ranges, 10) == "1-3,5-6,9-10"
    assert qpdf_ranges(o.page_ranges, 2) == "1-2"
    assert qpdf_ranges((), 3) == "1-3"


def test_number_up_counts_impressions() -> None:
    assert opts("number-up=2").impressions(5) == 3
    assert opts("number-up=4 page-ranges=1-6").impressions(10) == 2


@pytest.mark.parametrize("text", ["sides=both", "page-ranges=3-1", "number-up=3", "media=huge"])
def test_a_bad_value_is_a_problem_not_a_crash(text: str) -> None:
    o = opts(text)
    assert (
        o.attributes() == {}
        and len(o.problems) == 1
        and text.split("=", maxsplit=1)[0] in o.problems[0]
    )


def test_pdf_to_a_raster_only_printer_is_rendered_with_the_pages_selected_by_us() -> None:
    p = planning.plan(PDF, opts("page-ranges=2 sides=two-sided-long-edge", 3), RASTER_ONLY)
    assert p.document_format == PWG_RASTER
    assert [s.label for s in p.steps] == ["qpdf page selection", "ghostscript pwgraster 300 dpi"]
    assert "page-ranges" not in p.attributes and p.attributes["sides"].values == (
        "two-sided-long-edge",
    )
    assert p.copies == 3 and p.applied == ("page-ranges",)


def test_copies_beyond_the_printer_are_made_by_us() -> None:
    p = planning.plan(POSTSCRIPT, opts("", 4), PDF_ONLY)
    assert p.document_format == PDF and p.copies == 1 and "copies" in p.applied
    assert p.options.copies == 4  # charged: 4 copies were printed


def test_monochrome_on_a_raster_printer_is_rendered_grey_and_charged_mono() -> None:
    p = planning.plan(TEXT, opts("print-color-mode=monochrome"), RASTER_ONLY)
    assert any("cupsColorSpace=18" in a for a in p.steps[-1].argv)
    assert p.options.mono


def test_what_a_printer_lacks_is_dropped_with_a_message() -> None:
    p = planning.plan(PDF, opts("sides=two-sided-long-edge"), PDF_ONLY)
    assert "sides" not in p.attributes and not p.options.duplex
    assert p.dropped and "sides=two-sided-long-edge" in p.dropped[0]


@pytest.mark.parametrize(
    ("fmt", "caps"), [(PCL, PDF_ONLY), (UNKNOWN, RASTER_ONLY), (URF, PDF_ONLY)]
)
def test_no_conversion_is_unsupported_with_a_message(fmt: str, caps: Capabilities) -> None:
    with pytest.raises(planning.Unsupported, match="cannot be printed here"):
        planning.plan(fmt, opts(""), caps)


OPTION_NAMES = [
    "sides", "duplex", "print-color-mode", "colormodel", "media", "pagesize", "page-ranges",
    "number-up", "orientation-requested", "landscape", "print-quality", "finishings",
    "output-bin", "collate", "multiple-document-handling", "frob", "job-uuid",
]  # fmt: skip
values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["1-3", "2", "0", "-1", "9-", "1,1,1", "two-sided-long-edge", "A4", "4", ""]),
)
capabilities = st.builds(
    Capabilities,
    formats=st.frozensets(
        st.sampled_from([PDF, POSTSCRIPT, PWG_RASTER, URF, "image/jpeg", UNKNOWN])
    ),
    pwg_resolutions=st.tuples(st.integers(72, 1200)),
    pwg_types=st.frozensets(st.sampled_from(["black_1", "sgray_8", "srgb_8"])),
    urf=st.frozensets(st.sampled_from(["RS300", "RS300-600", "W8", "SRGB24"])),
    sides=st.frozensets(st.sampled_from(["one-sided", "two-sided-long-edge"])),
    color=st.booleans(),
    max_copies=st.integers(1, 999),
    page_ranges=st.booleans(),
    number_up=st.frozensets(st.sampled_from([1, 2, 4])),
)


@given(
    options=st.dictionaries(
        st.sampled_from(OPTION_NAMES) | st.text(max_size=10), values, max_size=6
    ),
    copies=st.integers(-5, 20_000),
    fmt=st.sampled_from([PDF, POSTSCRIPT, TEXT, PWG_RASTER, URF, PCL, UNKNOWN, "image/png"]),
    caps=capabilities,
)
def test_any_options_on_any_printer_plan_or_say_why_not(
    options: dict[str, str], copies: int, fmt: str, caps: Capabilities
) -> None:
    o = job_options(options, copies)
    ignored = OPTIONS_READ | CUPS_INTERNAL | DELEGATION_KEYS
    assert set(o.unknown) == {k for k in options if k not in ignored}
    assert o.copies >= 1
    for attr in o.attributes().values():  # every attribute encodes
        codec.request(codec.Operation.PRINT_JOB, 1, "ipp://x/ipp/print", [], [attr]).encode()
    try:
        p = planning.plan(fmt, o, caps)
    except planning.Unsupported as exc:
        assert "cannot" in str(exc)
        return
    assert p.document_format in caps.formats
    assert 1 <= p.copies <= max(caps.max_copies, 1)
    assert all(caps.accepts(n, v) for n, a in p.attributes.items() for v in a.values)
    # What the charge follows (p.options) differs from what was asked only with a message.
    for name, field in (
        ("page-ranges", "page_ranges"),
        ("number-up", "number_up"),
        ("sides", "sides"),
    ):
        if getattr(p.options, field) != getattr(o, field):
            assert any(name in d for d in p.dropped), (name, p.dropped)


def test_a_cups_queue_gets_the_options_it_does_not_list() -> None:
    """A cupsd queue (raw: almost no *-supported values) hands every option to its
    filters and backend: nothing it leaves unlisted is dropped; what it lists decides
    (a raw queue lists sides one-sided only: duplex is dropped and charged simplex)."""
    queue = Capabilities(
        formats=frozenset({PDF}), max_copies=9999, page_ranges=True, passes_options=True
    )
    p = planning.plan(
        PDF, opts("sides=two-sided-long-edge media=A4 print-color-mode=monochrome"), queue
    )
    assert set(p.attributes) == {"media", "print-color-mode"}
    assert p.options.mono and not p.options.duplex and "sides" in p.dropped[0]
