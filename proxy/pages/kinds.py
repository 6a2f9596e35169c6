"""MIME types the counters know and what a count says."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class PageCount:
    """Pages of one document (not multiplied by copies).

    ``estimated`` is True when the count is a guess. ``color`` and ``duplex``
    are None when the format does not say; for raster they come from the page
    headers (colour = rendered in a colour space; duplex = any page asks for it).
    ``method`` says how the pages were counted (one of ``METHODS``): from the
    format and ``estimated``, unless ``counted_by`` names another counter.
    ``color_pages`` is how many pages carry colour (None: not measured);
    ``document_copies`` the copies the document itself asks for (PostScript
    ``NumCopies``/``#copies``, as Ghostscript found them); ``spells_copies``
    whether a PostScript document spells either word anywhere (else it cannot
    set its own copies). ``note`` says why a better count was not had
    (Ghostscript failed or timed out), else None.
    """

    pages: int
    estimated: bool
    detected_type: str
    color: bool | None = None
    duplex: bool | None = None
    counted_by: str | None = None
    color_pages: int | None = None
    document_copies: int = 1
    note: str | None = None
    spells_copies: bool = False

    @property
    def method(self) -> str:
        if self.counted_by is not None:
            return self.counted_by
        if self.estimated:
            return ESTIMATE
        if self.pages == 0 and self.detected_type == UNKNOWN:
            return EMPTY
        return _EXACT_METHODS.get(self.detected_type, ESTIMATE)


PDF_PAGE_TREE = "pdf-page-tree"
DSC = "dsc"
GHOSTSCRIPT = "ghostscript"
RASTER_HEADERS = "raster-headers"
PCLXL_OPERATORS = "pclxl-operators"
ESTIMATE = "estimate"
EMPTY = "empty"
METHODS = (PDF_PAGE_TREE, DSC, GHOSTSCRIPT, RASTER_HEADERS, PCLXL_OPERATORS, ESTIMATE, EMPTY)
"""Values of ``PageCount.method`` (and ``print_ins.count_method``)."""

_EXACT_METHODS = {
    PDF: PDF_PAGE_TREE,
    POSTSCRIPT: DSC,
    PWG_RASTER: RASTER_HEADERS,
    CUPS_RASTER: RASTER_HEADERS,
    URF: RASTER_HEADERS,
    PCLXL: PCLXL_OPERATORS,
}
