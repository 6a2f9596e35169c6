"""Page counting of a spooled print file (SPEC §6 intake).

:func:`count_pages` is blocking: call it in a worker thread. It never reads a
whole file into memory: PDFs are opened through qpdf (which reads objects
lazily), everything else is streamed in 1 MiB chunks or walked with seeks, so
a 1 GiB PostScript or raster file is counted with flat memory.

The format is detected from the file's first bytes; CUPS's CONTENT_TYPE is
only a hint (it is often ``application/octet-stream``, and can be wrong).
A leading PJL job header (``ESC%-12345X@PJL …``) is skipped; the copies it
sets (``@PJL SET COPIES=N``/``QTY=N``) are the document's copies.

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

``PageCount.method`` says which of these counted (``kinds.METHODS``).

:func:`refine` (blocking too) then asks Ghostscript (``ghostscript``) where the
cheap count cannot know: PostScript without DSC comments (pages as rendered),
PostScript that sets its own copies (``NumCopies``/``#copies``: Windows drivers
write DSC comments *and* ``setpagedevice`` copies), and PDF, PostScript and
JPEG when colour is priced apart (colour pages). Bounded in time; when
Ghostscript fails, the cheap count stays, with ``note`` saying why.

Only :class:`OSError` (the file cannot be opened or read) escapes; a broken,
truncated or encrypted document gives an estimate instead.

Modules: ``detect`` (format), ``reader`` (streaming), one module per format
(``pdf``, ``postscript``, ``raster``, ``pclxl``, ``pcl5``, ``text``); ``limits`` holds
the tunables the counters read at run time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from . import ghostscript, limits
from .detect import UEL, detect_type
from .kinds import (
    CUPS_RASTER,
    DSC,
    EMPTY,
    ESTIMATE,
    GHOSTSCRIPT,
    METHODS,
    PCL,
    PCLXL,
    PCLXL_OPERATORS,
    PDF,
    PDF_PAGE_TREE,
    POSTSCRIPT,
    PWG_RASTER,
    RASTER_HEADERS,
    TEXT,
    TEXT_COLUMNS,
    TEXT_LINES_PER_PAGE,
    UNKNOWN,
    URF,
    PageCount,
)
from .limits import CHUNK, MAX_OPS, SNIFF_BYTES
from .pcl5 import count_pcl
from .pclxl import count_pclxl
from .pdf import count_pdf
from .pjl import pjl_copies
from .postscript import count_postscript
from .raster import count_cups_raster, count_urf
from .reader import Reader
from .text import count_text


def count_pages(path: Path, content_type: str | None) -> PageCount:
    """Count the pages of the spooled file at ``path``; see the module docstring."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(limits.SNIFF_BYTES)
        if not head:
            return PageCount(0, False, UNKNOWN)
        kind, offset = detect_type(head, content_type)
        f.seek(0)
        if kind == PDF:
            count = count_pdf(path, f)
        elif (counter := _COUNTERS.get(kind)) is not None:
            count = counter(Reader(f, size), head, offset)
        else:
            count = PageCount(1, True, kind)
    copies = pjl_copies(head) if head.startswith((UEL, b"@PJL")) else 1
    return count if copies == 1 else dataclasses.replace(count, document_copies=copies)


def needs_ghostscript(path: Path, count: PageCount, *, color_matters: bool) -> bool:
    """Does :func:`refine` have something to find out about this document?

    PostScript: when its pages are estimated (no DSC), when colour matters, or
    when it spells ``NumCopies``/``#copies`` (a streamed scan). PDF and JPEG:
    when colour matters.
    """
    if count.pages == 0 or count.detected_type not in ghostscript.FORMATS:
        return False
    if color_matters:
        return True
    return count.detected_type == POSTSCRIPT and (count.estimated or count.spells_copies)


def refine(
    path: Path,
    count: PageCount,
    *,
    color_matters: bool,
    timeout: float = ghostscript.DEFAULT_TIMEOUT,
) -> PageCount:
    """``count`` completed by Ghostscript where :func:`needs_ghostscript` says so.

    PostScript: Ghostscript's pages (method ``ghostscript``), colour pages and
    document copies. PDF: the page tree's count stays (a repaired PDF takes
    Ghostscript's), colour pages are added. JPEG: colour pages are added (one
    page, still estimated: CUPS's image filter may tile a large image). When
    Ghostscript fails or times out, ``count`` stays, with ``note`` saying why.
    Copies set both in a PJL header and in the PostScript: the larger figure
    (drivers write one request in both places).
    """
    if not needs_ghostscript(path, count, color_matters=color_matters):
        return count
    found = ghostscript.analyse(path, count.detected_type, timeout=timeout)
    if isinstance(found, ghostscript.Failed):
        return dataclasses.replace(count, note=f"{found.reason}; the count is kept as it was")
    pages, estimated, counted_by = count.pages, count.estimated, count.counted_by
    if count.detected_type == POSTSCRIPT or (count.detected_type == PDF and count.estimated):
        pages, estimated, counted_by = found.pages, False, GHOSTSCRIPT
    color_pages = min(found.color_pages, pages)
    return dataclasses.replace(
        count,
        pages=pages,
        estimated=estimated,
        counted_by=counted_by,
        # The colour mode charged: only where colour is priced apart (measured
        # anyway for PostScript, then shown, not charged).
        color=color_pages > 0 if color_matters else count.color,
        color_pages=color_pages,
        document_copies=max(count.document_copies, found.document_copies),
    )


_COUNTERS: dict[str, Callable[[Reader, bytes, int], PageCount]] = {
    POSTSCRIPT: count_postscript,
    PWG_RASTER: count_cups_raster,
    CUPS_RASTER: count_cups_raster,
    URF: count_urf,
    PCLXL: count_pclxl,
    PCL: count_pcl,
    TEXT: count_text,
}

__all__ = [
    "CHUNK",
    "CUPS_RASTER",
    "DSC",
    "EMPTY",
    "ESTIMATE",
    "GHOSTSCRIPT",
    "MAX_OPS",
    "METHODS",
    "PCL",
    "PCLXL",
    "PCLXL_OPERATORS",
    "PDF",
    "PDF_PAGE_TREE",
    "POSTSCRIPT",
    "PWG_RASTER",
    "RASTER_HEADERS",
    "SNIFF_BYTES",
    "TEXT",
    "TEXT_COLUMNS",
    "TEXT_LINES_PER_PAGE",
    "UNKNOWN",
    "URF",
    "PageCount",
    "count_pages",
    "detect_type",
    "ghostscript",
    "needs_ghostscript",
    "refine",
]
