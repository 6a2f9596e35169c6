"""The format of a document from its first bytes (a PJL header skipped)."""

from __future__ import annotations

import re

from .kinds import (
    CUPS_RASTER,
    PCL,
    PCLXL,
    PDF,
    POSTSCRIPT,
    PWG_RASTER,
    TEXT,
    UNKNOWN,
    URF,
)

UEL = b"\x1b%-12345X"
_PJL_ENTER = re.compile(rb"@PJL[ \t]+ENTER[ \t]+LANGUAGE[ \t]*=[ \t]*([A-Za-z0-9_-]+)", re.I)
RASTER_SYNCS = {
    b"RaSt": (">", 1),
    b"tSaR": ("<", 1),
    b"RaS2": (">", 2),
    b"2SaR": ("<", 2),
    b"RaS3": (">", 3),
    b"3SaR": ("<", 3),
}
PCLXL_HEADER = re.compile(rb"[()'] HP-PCL XL;[^\n]*\n")
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
        if head.startswith(UEL, pos):
            pos += len(UEL)
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
    sync = RASTER_SYNCS.get(head[:4])
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
    xl = PCLXL_HEADER.match(payload) if payload[:1] in b"()'" else None
    if xl is not None or language == "PCLXL":
        found = PCLXL_HEADER.search(head, pos)
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
