"""Job options (SPEC §4, §6): the job template attributes a client asked for.

The backend hands us CUPS's argv[4] (copies) and argv[5] (options, parsed by
``delegation.parse_cups_options``). :func:`job_options` reads the options a
printer acts on into :class:`JobOptions`: each as the IPP attribute it is sent
as, validated, with a problem recorded (never silently) for a value that is
not valid. What CUPS itself adds (``job-uuid``, ``time-at-creation``, …) and
the delegation keys are not job options; any other name is kept in
``unknown`` and reported.

The copies rule (SPEC §3): printed copies = CUPS copies × the sum of the
delegation weights (× copies a PostScript document asks for itself). Each
delegator's share keeps its weight, so the pro-rata split is unchanged;
``lp -n 3`` without delegation prints and charges 3.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..targets.ipp_codec import Attribute, IntRange, ValueTag
from .delegation import KEYS as DELEGATION_OPTIONS

MAX_COPIES = 9999
MAX_RANGES = 100
SIDES = ("one-sided", "two-sided-long-edge", "two-sided-short-edge")
COLOR_MODES = ("auto", "bi-level", "color", "monochrome", "process-monochrome", "auto-monochrome")
MONO_MODES = frozenset({"bi-level", "monochrome", "process-monochrome", "auto-monochrome"})
NUMBER_UP = (1, 2, 4, 6, 9, 16)
FINISHINGS_NONE = 3  # cupsd adds finishings=3 to every job
ORIENTATIONS = {"portrait": 3, "landscape": 4, "reverse-landscape": 5, "reverse-portrait": 6}
QUALITIES = {"draft": 3, "normal": 4, "high": 5}
# CUPS's own media names -> PWG self-describing names (PWG 5101.1).
MEDIA_ALIASES = {
    "a3": "iso_a3_297x420mm",
    "a4": "iso_a4_210x297mm",
    "a5": "iso_a5_148x210mm",
    "a6": "iso_a6_105x148mm",
    "b5": "iso_b5_176x250mm",
    "letter": "na_letter_8.5x11in",
    "legal": "na_legal_8.5x14in",
    "tabloid": "na_ledger_11x17in",
    "executive": "na_executive_7.25x10.5in",
    "env10": "na_number-10_4.125x9.5in",
    "dl": "iso_dl_110x220mm",
}
_PWG_MEDIA = re.compile(r"^[a-z0-9]+_[a-z0-9.-]+_[0-9.]+x[0-9.]+(mm|in)$")
_KEYWORD = re.compile(r"^[a-z][a-z0-9._-]{0,254}$")
_RANGE = re.compile(r"^\s*(\d{1,7})\s*(?:-\s*(\d{0,7}))?\s*$")
# What cupsd adds to argv[5] itself, and options that only steer CUPS: not for the printer.
CUPS_INTERNAL = frozenset(
    {
        "job-uuid",
        "job-originating-host-name",
        "job-priority",
        "job-sheets",
        "job-hold-until",
        "job-name",
        "job-cancel-after",
        "date-time-at-creation",
        "date-time-at-processing",
        "time-at-creation",
        "time-at-processing",
        "document-name-supplied",
        "document-format",
        "document-format-detected",
        "job-account-id",
        "job-accounting-user-id",
        "job-password",
        "job-password-encryption",
        "raw",
        "document-format-supplied",
        "job-impressions",
        "job-media-sheets",
        "job-k-octets",
        "notify-events",
        "notify-recipient-uri",
        "fit-to-page",  # applied by CUPS's filters when the queue has them
    }
)
DELEGATION_KEYS = frozenset(DELEGATION_OPTIONS)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What the job asks the printer to do; ``None`` = the printer's default."""

    copies: int = 1
    sides: str | None = None
    color_mode: str | None = None
    media: str | None = None
    page_ranges: tuple[tuple[int, int], ...] = ()
    number_up: int = 1
    orientation: int | None = None
    quality: int | None = None
    finishings: tuple[int, ...] = ()
    output_bin: str | None = None
    collate: bool | None = None
    problems: tuple[str, ...] = ()
    unknown: tuple[str, ...] = field(default=())

    @property
    def duplex(self) -> bool:
        return self.sides is not None and self.sides.startswith("two-sided")

    @property
    def mono(self) -> bool:
        """The job asked for grey: charged mono whatever its pages carry."""
        return self.color_mode in MONO_MODES

    def selected_pages(self, pages: int) -> int:
        """Pages of a ``pages``-page document that the page ranges select."""
        if not self.page_ranges:
            return pages
        # merged and ascending (see _page_ranges), so each page counts once
        return sum(max(0, min(upper, pages) - lower + 1) for lower, upper in self.page_ranges)

    def impressions(self, pages: int) -> int:
        """Printed sides per copy: selected pages, number-up applied."""
        return math.ceil(self.selected_pages(pages) / self.number_up)

    def attributes(self) -> dict[str, Attribute]:
        """The IPP job template attributes to send (copies apart)."""
        out: dict[str, Attribute] = {}
        if self.sides is not None:
            out["sides"] = Attribute.keyword("sides", self.sides)
        if self.color_mode is not None:
            out["print-color-mode"] = Attribute.keyword("print-color-mode", self.color_mode)
        if self.media is not None:
            out["media"] = Attribute.keyword("media", self.media)
        if self.page_ranges:
            ranges = [IntRange(a, b) for a, b in self.page_ranges]
            out["page-ranges"] = Attribute("page-ranges", ValueTag.RANGE, tuple(ranges))
        if self.number_up != 1:
            out["number-up"] = Attribute.integer("number-up", self.number_up)
        if self.orientation is not None:
            out["orientation-requested"] = Attribute.enum("orientation-requested", self.orientation)
        if self.quality is not None:
            out["print-quality"] = Attribute.enum("print-quality", self.quality)
        if self.finishings and self.finishings != (FINISHINGS_NONE,):
            out["finishings"] = Attribute.enum("finishings", *self.finishings)
        if self.output_bin is not None:
            out["output-bin"] = Attribute.keyword("output-bin", self.output_bin)
        if self.collate is not None:
            handling = (
                "separate-documents-collated-copies"
                if self.collate
                else "separate-documents-uncollated-copies"
            )
            out["multiple-document-handling"] = Attribute.keyword(
                "multiple-document-handling", handling
            )
        return out

    def summary(self) -> dict[str, object]:
        """For events and the API: what was asked, in the options' own names."""
        data: dict[str, object] = {"copies": self.copies}
        for name, attr in self.attributes().items():
            values = [f"{v.lower}-{v.upper}" if isinstance(v, IntRange) else v for v in attr.values]
            data[name] = values[0] if len(values) == 1 else values
        return data


def job_options(options: dict[str, str], copies: int = 1) -> JobOptions:
    """Read a job's options (keys lower-cased, as ``parse_cups_options`` gives them)."""
    problems: list[str] = []
    unknown: list[str] = []
    found: dict[str, Any] = {}
    if not 1 <= copies <= MAX_COPIES:
        problems.append(f"copies {copies} is outside 1-{MAX_COPIES}; printing 1")
        copies = 1
    for name, value in options.items():
        if name in CUPS_INTERNAL or name in DELEGATION_KEYS:
            continue
        reader = _READERS.get(name)
        if reader is None:
            unknown.append(name)
            continue
        key, parsed = reader(value.strip())
        if parsed is None:
            problems.append(f"{name}={value[:60]!r} is not valid; the printer's default is used")
        else:
            found[key] = parsed
    base = JobOptions(copies=copies, problems=tuple(problems), unknown=tuple(unknown))
    return dataclasses.replace(base, **found)


# ---------------------------------------------------------------- value readers


def _sides(value: str) -> tuple[str, str | None]:
    v = value.lower()
    legacy = {"duplexnotumble": SIDES[1], "duplextumble": SIDES[2], "none": SIDES[0]}
    return "sides", v if v in SIDES else legacy.get(v)


def _duplex(value: str) -> tuple[str, str | None]:  # the PPD-style Duplex option
    return _sides(value)


def _color_mode(value: str) -> tuple[str, str | None]:
    v = value.lower()
    if v in COLOR_MODES:
        return "color_mode", v
    model = {"gray": "monochrome", "black": "monochrome", "rgb": "color", "cmyk": "color"}
    return "color_mode", model.get(v)


def _media(value: str) -> tuple[str, str | None]:
    # "A4,Tray1,Plain": the size is the element that names one.
    for element in value.lower().split(","):
        name = element.strip()
        alias = MEDIA_ALIASES.get(name)
        if alias is not None:
            return "media", alias
        if _PWG_MEDIA.match(name) and len(name) <= 64:
            return "media", name
    return "media", None


def _page_ranges(value: str) -> tuple[str, tuple[tuple[int, int], ...] | None]:
    ranges: list[tuple[int, int]] = []
    parts = value.split(",")
    if len(parts) > MAX_RANGES:
        return "page_ranges", None
    for part in parts:
        match = _RANGE.match(part)
        if match is None:
            return "page_ranges", None
        lower = int(match[1])
        upper = lower if match[2] is None else int(match[2] or 9_999_999)
        if lower < 1 or upper < lower:
            return "page_ranges", None
        ranges.append((lower, upper))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for lower, upper in ranges:  # RFC 8011: ascending, not overlapping
        if merged and lower <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], upper))
        else:
            merged.append((lower, upper))
    return "page_ranges", tuple(merged)


def _number_up(value: str) -> tuple[str, int | None]:
    return "number_up", int(value) if value.isdigit() and int(value) in NUMBER_UP else None


def _orientation(value: str) -> tuple[str, int | None]:
    v = value.lower()
    if v.isdigit() and 3 <= int(v) <= 6:
        return "orientation", int(v)
    return "orientation", ORIENTATIONS.get(v)


def _landscape(value: str) -> tuple[str, int | None]:
    return "orientation", 4 if value.lower() in ("true", "yes", "on", "") else 3


def _quality(value: str) -> tuple[str, int | None]:
    v = value.lower()
    if v.isdigit() and 3 <= int(v) <= 5:
        return "quality", int(v)
    return "quality", QUALITIES.get(v)


def _finishings(value: str) -> tuple[str, tuple[int, ...] | None]:
    items = [v.strip() for v in value.split(",")]
    if not all(v.isdigit() and 3 <= int(v) <= 0x7FFFFFFF for v in items) or len(items) > 20:
        return "finishings", None
    return "finishings", tuple(int(v) for v in items)


def _output_bin(value: str) -> tuple[str, str | None]:
    v = value.lower()
    return "output_bin", v if _KEYWORD.match(v) else None


def _collate(value: str) -> tuple[str, bool | None]:
    v = value.lower()
    if v in ("true", "yes", "on"):
        return "collate", True
    return "collate", False if v in ("false", "no", "off") else None


def _handling(value: str) -> tuple[str, bool | None]:
    v = value.lower()
    known = {
        "separate-documents-collated-copies": True,
        "separate-documents-uncollated-copies": False,
    }
    return "collate", known.get(v)


_READERS = {
    "sides": _sides,
    "duplex": _duplex,
    "print-color-mode": _color_mode,
    "colormodel": _color_mode,
    "output-mode": _color_mode,
    "media": _media,
    "pagesize": _media,
    "page-ranges": _page_ranges,
    "number-up": _number_up,
    "orientation-requested": _orientation,
    "landscape": _landscape,
    "print-quality": _quality,
    "finishings": _finishings,
    "output-bin": _output_bin,
    "collate": _collate,
    "multiple-document-handling": _handling,
}
OPTIONS_READ = frozenset(_READERS)
"""Option names :func:`job_options` reads (lower-case, as ``parse_cups_options`` gives)."""
