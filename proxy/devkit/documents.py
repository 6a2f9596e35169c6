"""Test documents for the devkit, the tests and ``proxyprint demo``."""

from pathlib import Path

import pikepdf

A4 = (595, 842)


def make_pdf(path: Path, pages: int, *, title: str = "proxyprint test page") -> Path:
    """Write a small valid PDF of ``pages`` A4 pages, each saying its number.

    Every page has its own content stream, so a page counter that parses the
    page tree sees ``pages`` pages (no shared objects, no false ``/Count``).
    """
    if pages < 1:
        raise ValueError("a PDF needs at least one page")
    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    for number in range(1, pages + 1):
        text = _pdf_string(f"{title} - page {number} of {pages}")
        stream = f"BT /F1 18 Tf 72 760 Td ({text}) Tj ET".encode("latin-1", "replace")
        page = pikepdf.Page(
            pikepdf.Dictionary(
                Type=pikepdf.Name.Page,
                MediaBox=[0, 0, *A4],
                Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
                Contents=pdf.make_stream(stream),
            )
        )
        pdf.pages.append(page)
    pdf.docinfo[pikepdf.Name.Title] = title
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.save(path)
    return path


def _pdf_string(text: str) -> str:
    """Escape a literal PDF string's delimiters."""
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
