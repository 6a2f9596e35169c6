"""What dispatch sends: the document's format against what the target takes.

:func:`plan` decides, from the document's format, the job's options and the
target's capabilities, whether the document goes as it is or through a
conversion (``proxy.pipeline.convert``), which job attributes are sent, which
options our conversion applies (page ranges, number-up, copies the printer
cannot make) and which the printer cannot honour at all (dropped, each with a
message, never silently). What is charged follows the plan
(:attr:`Plan.options`: the options as they will be printed).

Formats, best first when a conversion is needed: PDF, PWG raster, Apple
raster (URF), JPEG (one page only). IPP Everywhere printers must take PWG
raster and JPEG; ``application/octet-stream`` in a printer's list is
auto-sensing, not a promise, so it never counts as support for a format.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..pages import PCL, PCLXL, PDF, POSTSCRIPT, PWG_RASTER, TEXT, UNKNOWN, URF
from ..targets.capabilities import Capabilities
from ..targets.ipp_codec import Attribute
from . import convert
from .convert import Step
from .options import JobOptions

JPEG = "image/jpeg"
IMAGES = (JPEG, "image/png", "image/gif", "image/tiff")
DEFAULT_DPI = 300
# cups-filters' texttopdf / imagetopdf, Ghostscript's pdfwrite: what reaches PDF.
_TO_PDF = {POSTSCRIPT: "gs", TEXT: "texttopdf", **dict.fromkeys(IMAGES, "imagetopdf")}
_PAGE_SIZES = {  # PWG media -> the PageSize pdftopdf understands
    "iso_a3_297x420mm": "A3",
    "iso_a4_210x297mm": "A4",
    "iso_a5_148x210mm": "A5",
    "na_letter_8.5x11in": "Letter",
    "na_legal_8.5x14in": "Legal",
}
_NAMES = {
    PDF: "PDF",
    POSTSCRIPT: "PostScript",
    PWG_RASTER: "PWG raster",
    URF: "Apple raster",
    JPEG: "JPEG",
    TEXT: "plain text",
    PCL: "PCL 5",
    PCLXL: "PCL XL",
    UNKNOWN: "an unknown format",
}


class Unsupported(Exception):
    """No way to print this document on this target (held ``format-unsupported``)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How one print-out is sent."""

    document_format: str
    steps: tuple[Step, ...]
    attributes: dict[str, Attribute]
    copies: int
    options: JobOptions  # as printed: what the charge follows
    dropped: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()  # options our conversion applies

    @property
    def converts(self) -> bool:
        return bool(self.steps)


def describe(fmt: str) -> str:
    return _NAMES.get(fmt, fmt)


def formats_of(caps: Capabilities) -> list[str]:
    return sorted(f for f in caps.formats if f != UNKNOWN)


def plan(fmt: str, options: JobOptions, caps: Capabilities) -> Plan:
    """The plan for a document of format ``fmt``; raises :class:`Unsupported`."""
    takes = set(formats_of(caps))
    reaches_pdf = fmt == PDF or fmt in _TO_PDF
    best = _best_output(takes)
    dropped: list[str] = [*options.problems]
    applied: list[str] = []
    printed = options
    steps: list[Step] = []
    copies = options.copies
    page_work = _page_work(fmt, options, caps)
    if fmt in takes and (not page_work or not reaches_pdf or best is None):
        final = fmt
        for name in page_work:  # e.g. raster: we cannot select its pages
            dropped.append(f"{name} cannot be applied to {describe(fmt)} on this printer; ignored")
            printed = _without(printed, name)
            if name == "copies":
                copies = caps.max_copies
                printed = dataclasses.replace(printed, copies=copies)
    elif reaches_pdf and best is not None:
        final = best
        page_work = _page_work(final, options, caps)
        steps += _to_pdf(fmt)
        ranges = options.page_ranges if "page-ranges" in page_work else ()
        ours = copies if "copies" in page_work else 1
        if ranges or ours > 1:
            steps.append(convert.qpdf_select(ranges, ours))
            applied += ["page-ranges"] if ranges else []
            if ours > 1:
                applied.append("copies")
                copies = 1
        if "number-up" in page_work:
            steps.append(_number_up(options))
            applied.append("number-up")
        steps += _from_pdf(final, options, caps)
    else:
        raise Unsupported(_unsupported(fmt, takes, reaches_pdf))
    attributes = printed.attributes()
    for name in applied:
        attributes.pop(name, None)
    rendered = bool(steps) and final in (PWG_RASTER, URF, JPEG)
    for name, attr in list(attributes.items()):
        if name == "print-color-mode" and rendered:
            if not caps.accepts(name, attr.value):
                del attributes[name]  # rendered in the chosen colour space instead
            continue
        if not all(caps.accepts(name, v) for v in attr.values):
            del attributes[name]
            dropped.append(f"{name}={_show(attr)} is not supported by this printer; ignored")
            printed = _without(printed, name)
    if not caps.color or (rendered and _gray(options, caps)):
        printed = dataclasses.replace(printed, color_mode="monochrome")
    return Plan(final, tuple(steps), attributes, copies, printed, tuple(dropped), tuple(applied))


def _best_output(takes: set[str]) -> str | None:
    for candidate in (PDF, PWG_RASTER, URF, JPEG):
        if candidate in takes:
            return candidate
    return None


def _page_work(final: str, options: JobOptions, caps: Capabilities) -> list[str]:
    """Options the printer cannot apply to ``final`` itself."""
    work = []
    if options.page_ranges and not (final == PDF and caps.page_ranges):
        work.append("page-ranges")
    if options.number_up > 1 and not (final == PDF and options.number_up in caps.number_up):
        work.append("number-up")
    if options.copies > caps.max_copies:
        work.append("copies")
    return work


def _to_pdf(fmt: str) -> list[Step]:
    if fmt == PDF:
        return []
    name = _TO_PDF[fmt]
    return [convert.gs_to_pdf() if name == "gs" else convert.cups_filter(name)]


def _number_up(options: JobOptions) -> Step:
    size = _PAGE_SIZES.get(options.media or "")
    text = f"number-up={options.number_up}" + (f" PageSize={size}" if size else "")
    return convert.cups_filter("pdftopdf", options=text)


def _gray(options: JobOptions, caps: Capabilities) -> bool:
    """Render grey: the job asked for it, or the printer takes no colour raster."""
    colour_types = {"srgb_8", "srgb_16", "adobe-rgb_8", "adobe-rgb_16", "cmyk_8"}
    if options.mono:
        return True
    if caps.pwg_types and not (colour_types & caps.pwg_types) and PWG_RASTER in caps.formats:
        return True
    return not caps.color


def _from_pdf(final: str, options: JobOptions, caps: Capabilities) -> list[Step]:
    gray = _gray(options, caps)
    if final == PWG_RASTER:
        dpi = _resolution(caps.pwg_resolutions)
        black_only = gray and "sgray_8" not in caps.pwg_types and "black_1" in caps.pwg_types
        return [convert.gs_raster("pwgraster", dpi, gray=gray, black_1=black_only)]
    if final == URF:
        return [convert.gs_raster("urf", _resolution(caps.urf_resolutions), gray=gray)]
    if final == JPEG:
        return [convert.gs_jpeg(_resolution(()), gray=gray)]
    return []


def _resolution(offered: tuple[int, ...]) -> int:
    if not offered or DEFAULT_DPI in offered:
        return DEFAULT_DPI
    above = [r for r in offered if r >= DEFAULT_DPI]
    return min(above) if above else max(offered)


def _without(options: JobOptions, name: str) -> JobOptions:
    reset = {
        "sides": {"sides": None},
        "print-color-mode": {"color_mode": None},
        "media": {"media": None},
        "page-ranges": {"page_ranges": ()},
        "number-up": {"number_up": 1},
        "orientation-requested": {"orientation": None},
        "print-quality": {"quality": None},
        "finishings": {"finishings": ()},
        "output-bin": {"output_bin": None},
        "multiple-document-handling": {"collate": None},
        "copies": {},
    }
    return dataclasses.replace(options, **reset.get(name, {}))  # type: ignore[arg-type]


def _show(attr: Attribute) -> str:
    return ",".join(str(v) for v in attr.values)[:60]


def _unsupported(fmt: str, takes: set[str], reaches_pdf: bool) -> str:
    offered = ", ".join(describe(f) for f in sorted(takes)) or "no format it names"
    if reaches_pdf:
        return f"{describe(fmt)} cannot be converted to anything this printer takes ({offered})"
    return (
        f"{describe(fmt)} cannot be printed here: the printer takes {offered}, "
        f"and no converter from {describe(fmt)} is installed"
    )
