"""Page counting of a spooled print file (SPEC §6 intake).

:func:`count_pages` is blocking: call it in a worker thread. It never reads a
whole file into memory: PDFs are opened through qpdf (which reads objects
lazily), everything else is streamed in 1 MiB chunks or walked with seeks, so
a 1 GiB PostScript or raster file is counted with flat memory.

The format is detected from the file's first bytes; CUPS's CONTENT_TYPE is
only a hint (it is often ``application/octet-stream``, and can be wrong).
A leading PJL job header (``ESC%-12345X@PJL …``) is skipped.

- PDF: pikepdf ``len(pdf.pages)``, which walks the page tree (a false
  ``/Count`` is ignored). Exact, unless qpdf had to repair the file or could
  not open it (encrypted with a user password, unrecoverable).
- PostScript: DSC ``%%Page:`` comments outside embedded documents, else
  ``%%Pages: N``. Exact with DSC; without it 1, estimated.
- PWG and CUPS raster (v1/v2/v3, either byte order): page headers walked;
  uncompressed data is seeked over, compressed data scanned (not decoded). Exact.
- Apple raster (URF): page headers walked over the compressed data. Exact.
- PCL XL: the token stream parsed, ``EndPage`` operators counted. Exact when
  the stream parses.
- PCL 5: form feeds and resets outside binary data. Estimated.
- Plain text: 66 lines per page, 80 columns, form feeds. Estimated.
- Images (JPEG, PNG, GIF, TIFF) and anything else: 1 page, estimated; an
  empty file: 0 pages.

Only :class:`OSError` (the file cannot be opened or read) escapes; a broken,
truncated or encrypted document gives an estimate instead.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import pikepdf

PDF = "application/pdf"
POSTSCRIPT = "application/postscript"
PWG_RASTER = "image/pwg-raster"
CUPS_RASTER = "application/vnd.cups-raster"
URF = "image/urf"
PCL = "application/vnd.hp-pcl"
PCLXL = "application/vnd.hp-pclxl"
TEXT = "text/plain"
UNKNOWN = "application/octet-stream"

TEXT_LINES_PER_PAGE = 66
"""Lines of plain text per page: 11 in x 6 lines per inch, the classic line-printer
page (POSIX ``pr``'s default length; CUPS's text filter also prints 6 lpi). The
real figure depends on the filter's margins and the media, hence ``estimated``."""
TEXT_COLUMNS = 80
"""Characters per line before a long line wraps (10 cpi over 8 in)."""

CHUNK = 1 << 20
"""Bytes read at a time while streaming."""
SNIFF_BYTES = 64 * 1024
"""Bytes looked at to detect the format."""
MAX_OPS = 20_000_000
"""Work budget for the byte-level walks (compressed raster, PCL): past it the
count is extrapolated from the part walked, so a hostile file cannot keep a
worker busy for minutes."""


@dataclass(frozen=True, slots=True)
class PageCount:
    """Pages of one document (not multiplied by copies).

    ``estimated`` is True when the count is a guess. ``color`` and ``duplex``
    are None when the format does not say; for raster they come from the page
    headers (colour = rendered in a colour space; duplex = any page asks for it).
    """

    pages: int
    estimated: bool
    detected_type: str
    color: bool | None = None
    duplex: bool | None = None


def count_pages(path: Path, content_type: str | None) -> PageCount:
    """Count the pages of the spooled file at ``path``; see the module docstring."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(SNIFF_BYTES)
        if not head:
            return PageCount(0, False, UNKNOWN)
        kind, offset = detect_type(head, content_type)
        f.seek(0)
        if kind == PDF:
            return _count_pdf(path, f)
        counter = _COUNTERS.get(kind)
        if counter is None:
            return PageCount(1, True, kind)
        return counter(_Reader(f, size), head, offset)


# ---------------------------------------------------------------- detection

_UEL = b"\x1b%-12345X"
_PJL_ENTER = re.compile(rb"@PJL[ \t]+ENTER[ \t]+LANGUAGE[ \t]*=[ \t]*([A-Za-z0-9_-]+)", re.I)
_RASTER_SYNCS = {
    b"RaSt": (">", 1),
    b"tSaR": ("<", 1),
    b"RaS2": (">", 2),
    b"2SaR": ("<", 2),
    b"RaS3": (">", 3),
    b"3SaR": ("<", 3),
}
_PCLXL_HEADER = re.compile(rb"[()'] HP-PCL XL;[^\n]*\n")
_PCL_START = (b"\x1bE", b"\x1b&", b"\x1b*", b"\x1b(", b"\x1b)", b"\x1b%")
_IMAGE_MAGIC = (  # printed by CUPS's image filters, normally one page each (estimated)
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"II*\0", "image/tiff"),
    (b"MM\0*", "image/tiff"),
)
_BAD_CONTROLS = bytes([*range(1, 8), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])


def _skip_pjl(head: bytes) -> tuple[int, str | None]:
    """Offset after a PJL job header (UEL + ``@PJL`` lines) and its ENTER LANGUAGE."""
    pos = 0
    language: str | None = None
    while pos < len(head):
        if head.startswith(_UEL, pos):
            pos += len(_UEL)
        elif head[pos : pos + 4].upper() == b"@PJL":
            nl = head.find(b"\n", pos)
            end = len(head) if nl < 0 else nl + 1
            match = _PJL_ENTER.match(head, pos, end)
            pos = end
            if match:
                language = match.group(1).decode("ascii").upper()
                break
        elif head[pos] in b"\r\n\x04" and pos > 0:
            pos += 1
        else:
            break
    return pos, language


def detect_type(head: bytes, content_type: str | None = None) -> tuple[str, int]:
    """The MIME type of a document from its first bytes, and where its payload starts.

    ``content_type`` (CUPS's CONTENT_TYPE) decides only when the bytes do not:
    a PDF or PostScript type still gets that counter, ``text/*`` counts as text.
    """
    if not head:
        return UNKNOWN, 0
    sync = _RASTER_SYNCS.get(head[:4])
    if sync is not None:
        if sync[1] == 2 and head[4:13] == b"PwgRaster":
            return PWG_RASTER, 0
        return CUPS_RASTER, 0
    if head.startswith(b"UNIRAST\0"):
        return URF, 0
    for magic, image_type in _IMAGE_MAGIC:
        if head.startswith(magic):
            return image_type, 0
    pos, language = _skip_pjl(head)
    if head.startswith(b"\x04", pos):
        pos += 1
    payload = head[pos:]
    if b"%PDF-" in payload[:1024]:
        return PDF, pos
    if payload.startswith((b"%!", b"\xc5\xd0\xd3\xc6")):
        return POSTSCRIPT, pos
    xl = _PCLXL_HEADER.match(payload) if payload[:1] in b"()'" else None
    if xl is not None or language == "PCLXL":
        found = _PCLXL_HEADER.search(head, pos)
        return PCLXL, found.end() if found else len(head)
    if payload.startswith(_PCL_START) or language == "PCL":
        return PCL, 0
    if language in ("POSTSCRIPT", "PS"):
        return POSTSCRIPT, pos
    if language == "PDF":
        return PDF, pos
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in (PDF, "application/vnd.cups-pdf"):
        return PDF, 0
    if base in (POSTSCRIPT, "application/vnd.cups-postscript"):
        return POSTSCRIPT, 0
    if base.startswith("text/") or _looks_like_text(head):
        return TEXT, 0
    return UNKNOWN, 0


def _looks_like_text(head: bytes) -> bool:
    """No NUL, and UTF-8 or (as Latin-1) at most 1 % odd control characters."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and exc.end == len(head):
            return True  # a character cut in two by the sniff window
    else:
        return True
    odd = len(head) - len(head.translate(None, _BAD_CONTROLS))
    return odd * 100 <= len(head)


# ---------------------------------------------------------------- streaming


class _Reader:
    """Buffered forward reading with cheap skips (seeks) over a file of known size."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.ops = 0

    def tell(self) -> int:
        return self.f.tell() - len(self.buf) + self.pos

    def fill(self, n: int) -> None:
        """Make ``n`` bytes available from ``pos`` unless the file ends first."""
        have = len(self.buf) - self.pos
        if have >= n or self.eof:
            return
        parts = [self.buf[self.pos :]]
        while have < n:
            data = self.f.read(max(CHUNK, n - have))
            if not data:
                self.eof = True
                break
            parts.append(data)
            have += len(data)
        self.buf = b"".join(parts)
        self.pos = 0

    def read(self, n: int) -> bytes:
        self.fill(n)
        data = self.buf[self.pos : self.pos + n]
        self.pos += len(data)
        return data

    def skip(self, n: int) -> bool:
        """Advance ``n`` bytes; False (at the end) if the file is shorter."""
        have = len(self.buf) - self.pos
        if n <= have:
            self.pos += n
            return True
        here = self.tell()
        self.buf, self.pos = b"", 0
        if here + n > self.size:
            self.f.seek(0, os.SEEK_END)
            self.eof = True
            return False
        self.f.seek(here + n)
        return True

    def at_end(self) -> bool:
        self.fill(1)
        return self.pos >= len(self.buf)

    def take_buffered(self) -> bytes:
        """Hand over the buffered bytes (the caller reads the rest from ``f``)."""
        rest = self.buf[self.pos :]
        self.buf, self.pos = b"", 0
        return rest

    def skip_packbits(self, lines: int, line_bytes: int, unit: int) -> bool:
        """Skip ``lines`` rows of CUPS/PWG/Apple compressed raster (never decoding pixels).

        Each row: a repeat byte (the row counts repeat + 1 times), then runs:
        0..127 = the next pixel repeated n + 1 times, 128 = rest of the row
        blank, 129..255 = 257 - n literal pixels. A pixel is ``unit`` bytes.
        False if the file ends first or the work budget runs out.
        """
        margin = 2 + 128 * unit
        self.fill(4 * margin)
        buf, pos, n = self.buf, self.pos, len(self.buf)
        limit = n if self.eof else n - margin
        ops = self.ops
        short = False
        while lines > 0 and not short:
            if pos > limit:
                self.pos = pos
                self.fill(max(CHUNK, 4 * margin))
                buf, pos, n = self.buf, self.pos, len(self.buf)
                limit = n if self.eof else n - margin
            if pos >= n or ops > MAX_OPS:
                short = True
                break
            lines -= buf[pos] + 1
            pos += 1
            remaining = line_bytes
            while remaining > 0:
                if pos > limit:
                    self.pos = pos
                    self.fill(max(CHUNK, 4 * margin))
                    buf, pos, n = self.buf, self.pos, len(self.buf)
                    limit = n if self.eof else n - margin
                if pos >= n:
                    short = True
                    break
                code = buf[pos]
                pos += 1
                ops += 1
                if code == 128:
                    break
                if code > 128:
                    count = (257 - code) * unit
                    if count > remaining:  # noqa: PLR1730  (no call in the hot loop)
                        count = remaining
                    pos += count
                    remaining -= count
                else:
                    pos += unit
                    remaining -= (code + 1) * unit
        self.ops = ops
        self.pos = min(pos, n)
        return not short and pos <= n and ops <= MAX_OPS


def _chunks(reader: _Reader) -> Iterator[bytes]:
    """The rest of the file in CHUNK-sized pieces."""
    rest = reader.take_buffered()
    if rest:
        yield rest
    while chunk := reader.f.read(CHUNK):
        yield chunk


def _extrapolate(done: int, reader: _Reader) -> int:
    """Pages in the whole file, from ``done`` pages in the part walked so far."""
    walked = max(reader.tell(), 1)
    return max(done + 1, round(done * reader.size / walked))


# ---------------------------------------------------------------- PDF

_PDF_PAGE = re.compile(rb"/Type\s{0,16}/Page(?=[\s/<>\[\]()%])")
_PDF_OVERLAP = 64
# qpdf warnings that mean the file structure was rebuilt (so pages may be lost);
# others (e.g. "Resources is missing or invalid; repairing") do not touch the count.
_PDF_DAMAGE = re.compile(r"damaged|reconstruct|recover|parse error|unexpected EOF", re.I)


def _count_pdf(path: Path, f: BinaryIO) -> PageCount:
    try:
        with pikepdf.open(path, inherit_page_attributes=False) as pdf:
            pages = len(pdf.pages)
            repaired = any(_PDF_DAMAGE.search(str(w)) for w in pdf.get_warnings())
    except Exception:  # qpdf raises several types on hostile input; all mean "unreadable"
        pages, repaired = 0, True
    if not repaired:
        return PageCount(pages, False, PDF)
    if pages == 0:
        # Encrypted (user password) or unrecoverable: count page objects in the raw
        # bytes. Dictionaries are not encrypted, but object streams hide them: >= 1.
        pages = max(1, _scan_pdf_page_objects(f))
    return PageCount(pages, True, PDF)


def _scan_pdf_page_objects(f: BinaryIO) -> int:
    f.seek(0)
    count = 0
    carry = b""
    while True:
        chunk = f.read(CHUNK)
        data = carry + chunk
        if not chunk:
            return count + len(_PDF_PAGE.findall(data))
        cut = len(data) - _PDF_OVERLAP
        count += sum(1 for m in _PDF_PAGE.finditer(data) if m.start() < cut)
        carry = data[cut:]


# ---------------------------------------------------------------- PostScript

_DSC = re.compile(rb"%%(Pages|Page|BeginDocument|EndDocument)\b:?[ \t]*([^\r\n]{0,64})")
_DSC_CARRY_MAX = 4096
_EOL = re.compile(rb"[\r\n]")


def _count_postscript(reader: _Reader, head: bytes, offset: int) -> PageCount:
    """DSC scan: ``%%Page:`` comments outside embedded documents, else ``%%Pages: N``.

    The page comments win over a ``%%Pages:`` figure (like a PDF's page tree
    over its ``/Count``): concatenated files carry the first file's figure.
    When both are there and disagree, the count is flagged as estimated.
    """
    depth = 0
    page_comments = 0
    declared: int | None = None
    carry = b""
    in_long_line = False
    for chunk in _chunks(reader):
        data = carry + chunk
        if in_long_line:
            match = _EOL.search(data)
            if match is None:
                carry = b""
                continue
            data = data[match.end() :]
            in_long_line = False
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        body, carry = data[:cut], data[cut:]
        if len(carry) > _DSC_CARRY_MAX:
            body, carry, in_long_line = data[: cut + 256], b"", True
        depth, page_comments, declared = _dsc_lines(body, depth, page_comments, declared)
    depth, page_comments, declared = _dsc_lines(carry, depth, page_comments, declared)
    if page_comments:
        return PageCount(page_comments, declared not in (None, page_comments), POSTSCRIPT)
    if declared:
        return PageCount(declared, False, POSTSCRIPT)
    return PageCount(1, True, POSTSCRIPT)


def _dsc_lines(
    body: bytes, depth: int, page_comments: int, declared: int | None
) -> tuple[int, int, int | None]:
    # A DSC comment is "%%" at the start of a line. Look for "%" and check the next
    # byte: find(b"%") is a memchr (0.02 s per GiB), find(b"%%") about 1 ns a byte.
    at = body.find(b"%")
    while at >= 0:
        line_start = at == 0 or body[at - 1] in b"\r\n"
        match = _DSC.match(body, at) if line_start and body.startswith(b"%%", at) else None
        at = body.find(b"%", at + 1)
        if match is None:
            continue
        keyword, value = match.group(1), match.group(2)
        if keyword == b"BeginDocument":
            depth += 1
        elif keyword == b"EndDocument":
            depth = max(depth - 1, 0)
        elif depth:
            continue
        elif keyword == b"Page":
            page_comments += 1
        elif declared is None:  # %%Pages: the first figure that is not "(atend)"
            figure = value.split(maxsplit=1)[:1]
            if figure and figure[0].isdigit():
                declared = int(figure[0])
    return depth, page_comments, declared


# ---------------------------------------------------------------- raster

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


def _count_cups_raster(reader: _Reader, head: bytes, offset: int) -> PageCount:
    """Walk CUPS raster v1/v2/v3 and PWG raster page headers (either byte order)."""
    order, version = _RASTER_SYNCS[head[:4]]
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
    reader: _Reader, pages: int, kind: str, *, clean: bool, color: bool, duplex: bool
) -> PageCount:
    if clean and pages:
        return PageCount(pages, False, kind, color, duplex)
    if reader.ops > MAX_OPS and pages:
        pages = _extrapolate(pages - 1, reader)
    return PageCount(max(pages, 1), True, kind, color if pages else None, duplex if pages else None)


_URF_MONO = frozenset({0, 4})  # sGray, Gray


def _count_urf(reader: _Reader, head: bytes, offset: int) -> PageCount:
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
    if not clean and declared and reader.ops <= MAX_OPS:
        pages = max(pages, declared)
    return _raster_result(reader, pages, URF, clean=clean, color=color, duplex=duplex)


# ---------------------------------------------------------------- PCL XL

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


def _count_pclxl(reader: _Reader, head: bytes, offset: int) -> PageCount:
    """Parse the PCL XL token stream (skipping embedded data) and count EndPage.

    The stream header's first byte is the binding: ``(`` big-endian, ``)``
    little-endian, ``'`` ASCII (not parsed: estimated).
    """
    header = _PCLXL_HEADER.search(head)
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
        if reader.ops > MAX_OPS:
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
    if reader.ops > MAX_OPS and pages:
        return PageCount(_extrapolate(pages, reader), True, PCLXL)
    return PageCount(max(pages, 1), True, PCLXL)


# ---------------------------------------------------------------- PCL 5

_NO_MARK = bytes(range(0x21)) + b"\x7f"


def _count_pcl(reader: _Reader, head: bytes, offset: int) -> PageCount:
    """Heuristic PCL 5: a form feed ejects a page, a reset (``ESC E``) or the end
    ejects a page with marks on it; binary data of ``…W``/``ESC&p…X`` is skipped."""
    pages = 0
    marks = False
    pjl = head.startswith((_UEL, b"@PJL"))
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
        if reader.ops > MAX_OPS:
            return PageCount(_extrapolate(pages, reader), True, PCL)
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


def _pcl_escape(reader: _Reader) -> tuple[str, bool, bool]:
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
    if buf.startswith(_UEL, pos):
        reader.pos = pos + len(_UEL)
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


# ---------------------------------------------------------------- text


def _count_text(reader: _Reader, head: bytes, offset: int) -> PageCount:
    """Lines of text at 66 lines per page, long lines wrapped at 80 columns,
    a form feed ending a page that has anything on it."""
    encoding = "utf-8" if _is_utf8(head) else "latin-1"
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    per_page, cols = TEXT_LINES_PER_PAGE, TEXT_COLUMNS
    pages = rows = col = 0
    for chunk in _chunks(reader):
        text = decoder.decode(chunk).replace("\r", "")
        for n, piece in enumerate(text.split("\f")):
            if n:  # a form feed: finish the line and the page
                rows += -(-col // cols)
                col = 0
                pages += -(-rows // per_page)
                rows = 0
            lines = piece.split("\n")
            col += len(lines[0])
            if len(lines) == 1:
                continue
            rows += max(1, -(-col // cols))
            middle = lines[1:-1]
            rows += len(middle) + sum((k - 1) // cols for k in map(len, middle) if k > cols)
            col = len(lines[-1])
            pages += rows // per_page
            rows %= per_page
    col += len(decoder.decode(b"", final=True))
    rows += -(-col // cols)
    pages += -(-rows // per_page)
    return PageCount(max(pages, 1), True, TEXT)


def _is_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.end == len(head)
    return True


_COUNTERS: dict[str, Callable[[_Reader, bytes, int], PageCount]] = {
    POSTSCRIPT: _count_postscript,
    PWG_RASTER: _count_cups_raster,
    CUPS_RASTER: _count_cups_raster,
    URF: _count_urf,
    PCLXL: _count_pclxl,
    PCL: _count_pcl,
    TEXT: _count_text,
}

__all__ = ["PageCount", "count_pages", "detect_type"]
