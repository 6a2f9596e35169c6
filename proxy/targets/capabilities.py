"""What a target can print: its Get-Printer-Attributes, read once and cached.

IPP Everywhere (PWG 5100.14) requires PWG raster and JPEG; PDF is optional,
and so is every finishing option. ``Capabilities`` is what dispatch plans
with (``proxy.pipeline.plan``): the formats, raster resolutions and colour
types it takes, and which values of the job template attributes it accepts.
An attribute the printer does not list at all is "not supported", as a
client of IPP reads it (RFC 8011 §5.4: ``xxx-supported``).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ipp_codec as codec
from .ipp_codec import IntRange, Resolution

REQUESTED = (
    "document-format-supported",
    "pwg-raster-document-resolution-supported",
    "pwg-raster-document-type-supported",
    "urf-supported",
    "sides-supported",
    "print-color-mode-supported",
    "color-supported",
    "copies-supported",
    "media-supported",
    "page-ranges-supported",
    "number-up-supported",
    "orientation-requested-supported",
    "print-quality-supported",
    "finishings-supported",
    "output-bin-supported",
    "multiple-document-handling-supported",
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A target's ``*-supported`` attributes, as dispatch needs them."""

    formats: frozenset[str]
    pwg_resolutions: tuple[int, ...] = ()
    pwg_types: frozenset[str] = frozenset()
    urf: frozenset[str] = frozenset()
    sides: frozenset[str] = frozenset({"one-sided"})
    color_modes: frozenset[str] = frozenset()
    color: bool = False
    max_copies: int = 1
    media: frozenset[str] = frozenset()
    page_ranges: bool = False
    number_up: frozenset[int] = frozenset({1})
    orientations: frozenset[int] = frozenset()
    qualities: frozenset[int] = frozenset()
    finishings: frozenset[int] = frozenset()
    output_bins: frozenset[str] = frozenset()
    collate: frozenset[str] = frozenset()
    # A cupsd queue takes any job template attribute and hands it to its filters and
    # backend as a job option (a raw queue lists almost no *-supported values).
    passes_options: bool = False

    def accepts(self, name: str, value: codec.Value) -> bool:
        """Does the printer take ``value`` for job attribute ``name``?"""
        accepted: dict[str, frozenset[object]] = {
            "sides": frozenset(self.sides),
            "print-color-mode": frozenset(self.color_modes),
            "media": frozenset(self.media),
            "number-up": frozenset(self.number_up),
            "orientation-requested": frozenset(self.orientations),
            "print-quality": frozenset(self.qualities),
            "finishings": frozenset(self.finishings),
            "output-bin": frozenset(self.output_bins),
            "multiple-document-handling": frozenset(self.collate),
        }
        if name == "page-ranges":
            return self.page_ranges
        if self.passes_options and not accepted.get(name):
            return True  # the queue lists nothing for it: cupsd passes it on as an option
        return value in accepted.get(name, frozenset())

    @property
    def urf_resolutions(self) -> tuple[int, ...]:
        """``RS300-600`` -> (300, 600)."""
        for item in self.urf:
            if item.startswith("RS"):
                return tuple(int(x) for x in item[2:].split("-") if x.isdigit())
        return ()

    @classmethod
    def from_group(cls, group: codec.Group) -> Capabilities:
        def strings(name: str) -> frozenset[str]:
            attr = group.get(name)
            return (
                frozenset(str(v) for v in attr.values if isinstance(v, str))
                if attr
                else frozenset()
            )

        def ints(name: str) -> frozenset[int]:
            attr = group.get(name)
            if attr is None:
                return frozenset()
            out: set[int] = set()
            for v in attr.values:
                if isinstance(v, IntRange):  # number-up-supported may be a range
                    out.update(range(v.lower, min(v.upper, 16) + 1))
                elif isinstance(v, int) and not isinstance(v, bool):
                    out.add(v)
            return frozenset(out)

        resolutions = group.get("pwg-raster-document-resolution-supported")
        dpis = sorted(
            {
                v.x if v.units == 3 else round(v.x * 2.54)
                for v in (resolutions.values if resolutions else ())
                if isinstance(v, Resolution)
            }
        )
        copies = group.first("copies-supported")
        max_copies = copies.upper if isinstance(copies, IntRange) else 1
        return cls(
            formats=strings("document-format-supported"),
            pwg_resolutions=tuple(dpis),
            pwg_types=strings("pwg-raster-document-type-supported"),
            urf=strings("urf-supported"),
            sides=strings("sides-supported") or frozenset({"one-sided"}),
            color_modes=strings("print-color-mode-supported"),
            color=group.first("color-supported") is True,
            max_copies=max(1, max_copies),
            media=strings("media-supported"),
            page_ranges=group.first("page-ranges-supported") is True,
            number_up=ints("number-up-supported") or frozenset({1}),
            orientations=ints("orientation-requested-supported"),
            qualities=ints("print-quality-supported"),
            finishings=ints("finishings-supported"),
            output_bins=strings("output-bin-supported"),
            collate=strings("multiple-document-handling-supported"),
        )
