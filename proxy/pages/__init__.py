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

Modules: ``detect`` (format), ``reader`` (streaming), one module per format
(``pdf``, ``postscript``, ``raster``, ``pclxl``, ``pcl5``, ``text``); ``limits`` holds
the tunables the counters read at run time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from . import limits
from .detect import detect_type
from .kinds import (
    CUPS_RASTER,
    PCL,
    PCLXL,
    PDF,
    POSTSCRIPT,
    PWG_RASTER,
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
            return count_pdf(path, f)
        counter = _COUNTERS.get(kind)
        if counter is None:
            return PageCount(1, True, kind)
        return counter(Reader(f, size), head, offset)


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
    "MAX_OPS",
    "PCL",
    "PCLXL",
    "PDF",
    "POSTSCRIPT",
    "PWG_RASTER",
    "SNIFF_BYTES",
    "TEXT",
    "TEXT_COLUMNS",
    "TEXT_LINES_PER_PAGE",
    "UNKNOWN",
    "URF",
    "PageCount",
    "count_pages",
    "detect_type",
]
