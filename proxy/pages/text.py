"""Plain text: lines per page, wrapped columns and form feeds (estimated)."""

from __future__ import annotations

import codecs

from .kinds import (
    TEXT,
    TEXT_COLUMNS,
    TEXT_LINES_PER_PAGE,
    PageCount,
)
from .reader import Reader, chunks


def count_text(reader: Reader, head: bytes, offset: int) -> PageCount:
    """Lines of text at 66 lines per page, long lines wrapped at 80 columns,
    a form feed ending a page that has anything on it."""
    encoding = "utf-8" if _is_utf8(head) else "latin-1"
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    per_page, cols = TEXT_LINES_PER_PAGE, TEXT_COLUMNS
    pages = rows = col = 0
    for chunk in chunks(reader):
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
