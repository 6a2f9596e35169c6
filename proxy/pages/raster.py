"""CUPS/PWG raster (v1-v3, either byte order) and Apple raster (URF): page headers walked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from . import limits
from .detect import RASTER_SYNCS
from .kinds import (
    CUPS_RASTER,
    PWG_RASTER,
    URF,
    PageCount,
)
from .reader import Reader, extrapolate

_MONO_SPACES = frozenset({0, 3, 12, 13, 14, 18})  # W, K, WHITE, GOLD, SILVER, SW
_THREE = frozenset({1, 4, 5, 15, 16, 19, 20, *range(32, 47)})
_FOUR = frozenset({2, 6, 7, 8, 10, 11, 17})
_ORDER_PLANAR = 2


def _num_colors(space: int, bits_per_pixel: int) -> int:
    """cupsNumColors for a colour space (CUPS's cups_raster_update); 0 = unknown."""
    if space in _MONO_SPACES:
        return 1
    if space in _THREE:
        return 3
    if space in _FOUR:
        return 4
    if space == 9:  # KCMYcm
        return 6 if bits_per_pixel < 8 else 4
    if 48 <= space <= 62:  # DEVICE1..DEVICEF
        return space - 47
    return 0


def count_cups_raster(reader: Reader, head: bytes, offset: int) -> PageCount:
    """Walk CUPS raster v1/v2/v3 and PWG raster page headers (either byte order)."""
    order, version = RASTER_SYNCS[head[:4]]
    kind = PWG_RASTER if version == 2 and head[4:13] == b"PwgRaster" else CUPS_RASTER
    header_len = 420 if version == 1 else 1796
    reader.skip(4)
    pages = 0
    color = duplex = False
    clean = True
    while not reader.at_end():
        header = reader.read(header_len)
        if len(header) < header_len:
            clean = False
            break
        word = _words(header, order)
        width, height = word(372), word(376)
        bits_color, bits_pixel, line_bytes = word(384), word(388), word(392)
        color_order, space = word(396), word(400)
        colors = word(420) if version > 1 else 0
        colors = colors or _num_colors(space, bits_pixel)
        unit = max(1, ((bits_pixel if color_order == 0 else bits_color) + 7) // 8)
        if not (
            0 < bits_pixel <= 240
            and 0 < bits_color <= 16
            and 0 < line_bytes <= 0x7FFFFFFF
            and height > 0
            and width > 0
            and colors > 0
            and line_bytes % unit == 0
        ):
            clean = False
            break
        rows = height * colors if color_order == _ORDER_PLANAR else height
        pages += 1
        color = color or max(colors, _num_colors(space, bits_pixel)) > 1
        duplex = duplex or word(272) != 0
        if version == 2:
            whole = reader.skip_packbits(rows, line_bytes, unit)
        else:
            whole = reader.skip(rows * line_bytes)
        if not whole:
            clean = False
            break
    return _raster_result(reader, pages, kind, clean=clean, color=color, duplex=duplex)


def _words(header: bytes, order: str) -> Callable[[int], int]:
    byteorder: Literal["big", "little"] = "big" if order == ">" else "little"

    def word(offset: int) -> int:
        return int.from_bytes(header[offset : offset + 4], byteorder)

    return word


def _raster_result(
    reader: Reader, pages: int, kind: str, *, clean: bool, color: bool, duplex: bool
) -> PageCount:
    if clean and pages:
        return PageCount(pages, False, kind, color, duplex)
    if reader.ops > limits.MAX_OPS and pages:
        pages = extrapolate(pages - 1, reader)
    return PageCount(max(pages, 1), True, kind, color if pages else None, duplex if pages else None)


_URF_MONO = frozenset({0, 4})  # sGray, Gray


def count_urf(reader: Reader, head: bytes, offset: int) -> PageCount:
    """Walk Apple raster: ``UNIRAST\\0``, a page count (often 0), 32-byte page headers."""
    declared = int.from_bytes(head[8:12], "big")
    reader.skip(12)
    pages = 0
    color = duplex = False
    clean = True
    while not reader.at_end():
        header = reader.read(32)
        if len(header) < 32:
            clean = False
            break
        bits_pixel, space = header[0], header[1]
        width = int.from_bytes(header[12:16], "big")
        height = int.from_bytes(header[16:20], "big")
        if not (0 < bits_pixel <= 240 and width > 0 and height > 0):
            clean = False
            break
        pages += 1
        color = color or space not in _URF_MONO
        duplex = duplex or header[2] in (2, 3)
        unit = (bits_pixel + 7) // 8
        if not reader.skip_packbits(height, (width * bits_pixel + 7) // 8, unit):
            clean = False
            break
    if not clean and declared and reader.ops <= limits.MAX_OPS:
        pages = max(pages, declared)
    return _raster_result(reader, pages, URF, clean=clean, color=color, duplex=duplex)
