"""PCL XL: the token stream parsed and ``EndPage`` operators counted."""

from __future__ import annotations

from typing import Literal

from . import limits
from .detect import PCLXL_HEADER
from .kinds import (
    PCLXL,
    PageCount,
)
from .reader import Reader, extrapolate

# Sizes of PCL XL data types by tag: scalars, xy pairs and boxes.
_XL_FIXED = {
    **dict.fromkeys((0xC0,), 1),
    **dict.fromkeys((0xC1, 0xC3), 2),
    **dict.fromkeys((0xC2, 0xC4, 0xC5), 4),
    0xD0: 2,
    **dict.fromkeys((0xD1, 0xD3), 4),
    **dict.fromkeys((0xD2, 0xD4, 0xD5), 8),
    0xE0: 4,
    **dict.fromkeys((0xE1, 0xE3), 8),
    **dict.fromkeys((0xE2, 0xE4, 0xE5), 16),
    0xF8: 1,  # attribute id (ubyte)
    0xF9: 2,  # attribute id (uint16)
}
_XL_ARRAY = {0xC8: 1, 0xC9: 2, 0xCA: 4, 0xCB: 2, 0xCC: 4, 0xCD: 4}
_XL_WHITESPACE = frozenset(b"\x00\t\n\x0b\x0c\r ")
_XL_END_PAGE = 0x44


def count_pclxl(reader: Reader, head: bytes, offset: int) -> PageCount:
    """Parse the PCL XL token stream (skipping embedded data) and count EndPage.

    The stream header's first byte is the binding: ``(`` big-endian, ``)``
    little-endian, ``'`` ASCII (not parsed: estimated).
    """
    header = PCLXL_HEADER.search(head)
    binding = header.group()[:1] if header else b"'"
    order: Literal["big", "little"] = "big" if binding == b"(" else "little"
    pages = 0
    clean = header is not None and binding != b"'" and reader.skip(header.end())
    while clean:
        reader.fill(32)
        if reader.pos >= len(reader.buf):
            break
        buf, pos = reader.buf, reader.pos
        tag = buf[pos]
        reader.ops += 1
        if reader.ops > limits.MAX_OPS:
            clean = False
            break
        if tag in _XL_WHITESPACE or 0x41 <= tag <= 0xBF:
            reader.pos += 1
            if tag == _XL_END_PAGE:
                pages += 1
        elif tag in _XL_FIXED:
            clean = reader.skip(1 + _XL_FIXED[tag])
        elif tag in _XL_ARRAY and pos + 2 < len(buf):
            if buf[pos + 1] == 0xC0:
                length, used = buf[pos + 2], 3
            elif buf[pos + 1] == 0xC1 and pos + 3 < len(buf):
                length, used = int.from_bytes(buf[pos + 2 : pos + 4], order), 4
            else:
                clean = False
                break
            clean = reader.skip(used + length * _XL_ARRAY[tag])
        elif tag == 0xFA and pos + 4 < len(buf):
            clean = reader.skip(5 + int.from_bytes(buf[pos + 1 : pos + 5], order))
        elif tag == 0xFB and pos + 1 < len(buf):
            clean = reader.skip(2 + buf[pos + 1])
        elif tag == 0x1B:  # UEL: back to PJL, the PCL XL session is over
            break
        else:
            clean = False
    if clean and pages:
        return PageCount(pages, False, PCLXL)
    if reader.ops > limits.MAX_OPS and pages:
        return PageCount(extrapolate(pages, reader), True, PCLXL)
    return PageCount(max(pages, 1), True, PCLXL)
