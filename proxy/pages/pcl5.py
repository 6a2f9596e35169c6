"""PCL 5: form feeds and resets outside binary data (estimated)."""

from __future__ import annotations

import re

from . import limits
from .detect import UEL
from .kinds import (
    PCL,
    PageCount,
)
from .reader import Reader, extrapolate

_NO_MARK = bytes(range(0x21)) + b"\x7f"


def count_pcl(reader: Reader, head: bytes, offset: int) -> PageCount:
    """Heuristic PCL 5: a form feed ejects a page, a reset (``ESC E``) or the end
    ejects a page with marks on it; binary data of ``…W``/``ESC&p…X`` is skipped."""
    pages = 0
    marks = False
    pjl = head.startswith((UEL, b"@PJL"))
    while True:
        reader.fill(4096)
        buf, pos = reader.buf, reader.pos
        if pos >= len(buf):
            break
        esc = buf.find(b"\x1b", pos)
        text = buf[pos : len(buf) if esc < 0 else esc]
        if text and not pjl:
            feeds = text.count(b"\x0c")
            if feeds:
                pages += feeds
                marks = bool(text[text.rfind(b"\x0c") + 1 :].translate(None, _NO_MARK))
            else:
                marks = marks or bool(text.translate(None, _NO_MARK))
        reader.pos += len(text)
        if esc < 0:
            continue
        reader.ops += _PCL_ESCAPE_COST
        if reader.ops > limits.MAX_OPS:
            return PageCount(extrapolate(pages, reader), True, PCL)
        row = _PCL_ROW.match(buf, esc)
        if row is not None:  # fast path for the bulk of a job: one raster row
            reader.pos = row.end()
            count = int(row.group(1))
            pjl = False
            if count:
                marks = True
                if not reader.skip(count):
                    break
            continue
        kind, data, data_marks = _pcl_escape(reader)
        if kind == "uel":
            pjl = True
            continue
        pjl = False
        if kind == "reset" and marks:
            pages += 1
            marks = False
        marks = marks or data_marks
        if not data:
            break
    if marks:
        pages += 1
    return PageCount(max(pages, 1), True, PCL)


_PCL_VALUE = re.compile(rb"[+-]?[0-9]*(?:\.[0-9]*)?")
_PCL_ROW = re.compile(rb"\x1b\*b([0-9]{1,9})W")  # ESC*b#W: transfer one raster row
_PCL_ESCAPE_COST = 4  # an escape sequence costs about as much as four packbits runs
_PCL_DATA = frozenset({(0x26, 0x70, 0x58), (0x2A, 0x62, 0x56)})  # ESC&p#X, ESC*b#V
_PCL_MARKING = frozenset({(0x2A, 0x62), (0x26, 0x70)})  # raster rows, transparent print


def _pcl_escape(reader: Reader) -> tuple[str, bool, bool]:
    r"""Consume one escape sequence at ``reader.pos`` (an ESC).

    Returns (kind, ok, marks): kind is "reset", "uel" or "other"; ok is False
    when the file ends inside binary data; marks when printable data was sent.
    A parameterised sequence is ESC, a parameter character (``!``..``/``), an
    optional group character (``\```..``~``), then value + parameter letter
    pairs; a lower-case letter continues the sequence, an upper-case one ends it.
    """
    reader.fill(256)
    buf, pos = reader.buf, reader.pos
    if pos + 1 >= len(buf):
        reader.pos = len(buf)
        return "other", True, False
    if buf.startswith(UEL, pos):
        reader.pos = pos + len(UEL)
        return "uel", True, False
    first = buf[pos + 1]
    if not 0x21 <= first <= 0x2F:  # two-character escape, e.g. ESC E
        reader.pos = pos + 2
        return ("reset" if first == 0x45 else "other"), True, False
    group = buf[pos + 2] if pos + 2 < len(buf) else 0
    i = pos + 3 if 0x60 <= group <= 0x7E else pos + 2
    marks = False
    while i < len(buf):
        value_match = _PCL_VALUE.match(buf, i)
        end = value_match.end() if value_match else i
        if end >= len(buf):
            i = end
            break
        value, letter = buf[i:end], buf[end]
        if not (0x40 <= letter <= 0x5E or 0x60 <= letter <= 0x7E):
            i = end  # malformed: go on scanning text at the odd byte
            break
        i = end + 1
        upper = letter & ~0x20
        carries_data = upper == 0x57 or (first, group, upper) in _PCL_DATA  # ...W, &p X, *b V
        count = _pcl_int(value) if carries_data else 0
        if count > 0:
            marks = marks or (first, group) in _PCL_MARKING
            reader.pos = i
            if not reader.skip(count):
                return "other", False, marks
            if letter < 0x60:
                return "other", True, marks
            reader.fill(256)
            buf, i = reader.buf, reader.pos
        elif letter < 0x60:
            break
    reader.pos = min(i, len(buf))
    return "other", True, marks


def _pcl_int(value: bytes) -> int:
    """The integer part of a PCL value field (``+12``, ``-3``, ``4.5``, ``""``)."""
    digits = value.lstrip(b"+-").split(b".", 1)[0]
    if value.startswith(b"-") or not digits:
        return 0
    return int(digits[:18]) if len(digits) <= 18 else 1 << 62
