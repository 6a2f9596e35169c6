"""PDF: the page tree through qpdf (lazy objects); a damaged file is scanned for page objects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

from . import limits
from .kinds import (
    PDF,
    PageCount,
)

_PDF_PAGE = re.compile(rb"/Type\s{0,16}/Page(?=[\s/<>\[\]()%])")
_PDF_OVERLAP = 64
# qpdf warnings that mean the file structure was rebuilt (so pages may be lost);
# others (e.g. "Resources is missing or invalid; repairing") do not touch the count.
_PDF_DAMAGE = re.compile(r"damaged|reconstruct|recover|parse error|unexpected EOF", re.I)


def count_pdf(path: Path, f: BinaryIO) -> PageCount:
    try:
        import pikepdf  # here, not at the top: the idle service does without it (~5 MiB)

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
        chunk = f.read(limits.CHUNK)
        data = carry + chunk
        if not chunk:
            return count + len(_PDF_PAGE.findall(data))
        cut = len(data) - _PDF_OVERLAP
        count += sum(1 for m in _PDF_PAGE.finditer(data) if m.start() < cut)
        carry = data[cut:]
