"""Ghostscript's analysis (proxy/pages/ghostscript.py) and ``pages.refine``, on real
documents written here (PostScript by hand, PDF with pikepdf, JPEG rendered by gs).

Nothing is mocked: gs runs. ``make install`` installs ghostscript, so nothing skips.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pikepdf
import pytest

from proxy import pages
from proxy.pages import (
    DSC,
    ESTIMATE,
    GHOSTSCRIPT,
    PDF,
    PDF_PAGE_TREE,
    POSTSCRIPT,
    ghostscript,
    limits,
)
from proxy.pages.ghostscript import JPEG, Analysis, Failed, analyse, is_color

# ---------------------------------------------------------------- makers

MARK = "/Helvetica findfont 24 scalefont setfont 72 720 moveto (page) show"


def postscript(path: Path, pages_: list[str], *, header: str = "%!\n", dsc: bool = False) -> Path:
    """One page per entry (its drawing), ``showpage`` after each; DSC comments if ``dsc``."""
    lines = ["%!PS-Adobe-3.0\n%%Pages: " + str(len(pages_)) + "\n" if dsc else header]
    for n, drawing in enumerate(pages_, 1):
        if dsc:
            lines.append(f"%%Page: {n} {n}\n")
        lines.append(f"{drawing}\nshowpage\n")
    if dsc:
        lines.append("%%EOF\n")
    path.write_text("".join(lines))
    return path


def black_pages(path: Path, count: int, *, header: str = "%!\n") -> Path:
    return postscript(path, [MARK] * count, header=header)


def pdf(path: Path, contents: list[bytes]) -> Path:
    """A PDF with one page per content stream (A4-ish, 200 x 200 pt)."""
    doc = pikepdf.new()
    for content in contents:
        doc.add_blank_page(page_size=(200, 200))
        doc.pages[-1].Contents = doc.make_stream(content)
    doc.save(path)
    doc.close()
    return path


def jpeg(tmp_path: Path, name: str, drawing: str, device: str = "jpeg") -> Path:
    source = postscript(tmp_path / f"{name}.ps", [drawing])
    target = tmp_path / f"{name}.jpg"
    command = ["gs", "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", f"-sDEVICE={device}", "-r50"]
    subprocess.run(
        [*command, "-o", str(target), str(source)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return target


RED = "1 0 0 setrgbcolor 100 100 200 200 rectfill"
RGB_GREY = "0.3 0.3 0.3 setrgbcolor 100 100 200 200 rectfill"
DEVICE_GREY = "0.5 setgray 100 100 200 200 rectfill"
K_ONLY = "0 0 0 0.6 setcmykcolor 100 100 200 200 rectfill"
CYAN_CMYK = "0.4 0 0 0 setcmykcolor 100 100 200 200 rectfill"
PASTEL = "0.8 0.6 0.6 setrgbcolor 100 100 200 200 rectfill"  # every ink above 0


# ---------------------------------------------------------------- analyse


def test_postscript_without_dsc_is_counted_as_rendered(tmp_path: Path) -> None:
    path = black_pages(tmp_path / "fifty.ps", 50)
    cheap = pages.count_pages(path, None)
    assert (cheap.pages, cheap.estimated, cheap.method) == (1, True, ESTIMATE)
    assert analyse(path, POSTSCRIPT) == Analysis(pages=50, color_pages=0, document_copies=1)


@pytest.mark.parametrize(
    ("setting", "copies"),
    [
        ("<< /NumCopies 40 >> setpagedevice", 40),
        ("/#copies 3 def", 3),
        ("userdict /#copies 7 put", 7),
        ("<< /NumCopies null >> setpagedevice", 1),
        ("<< /PageSize [595 842] >> setpagedevice", 1),
    ],
)
def test_copies_inside_a_document_are_reported_apart(
    tmp_path: Path, setting: str, copies: int
) -> None:
    """gs prints a page once per NumCopies/#copies (80 lines for 2 pages x 40): the
    prologue takes them out of the rendering and reports them as document copies."""
    path = black_pages(tmp_path / "copies.ps", 2, header=f"%!\n{setting}\n")
    assert analyse(path, POSTSCRIPT) == Analysis(pages=2, color_pages=0, document_copies=copies)


def test_numcopies_with_dsc_comments_as_windows_drivers_write_it(tmp_path: Path) -> None:
    path = tmp_path / "win.ps"
    path.write_text(
        "%!PS-Adobe-3.0\n%%Pages: 2\n%%BeginSetup\n%%BeginFeature: *NumCopies 5\n"
        "<< /NumCopies 5 >> setpagedevice\n%%EndFeature\n%%EndSetup\n"
        f"%%Page: 1 1\n{MARK}\nshowpage\n%%Page: 2 2\n{MARK}\nshowpage\n%%EOF\n"
    )
    cheap = pages.count_pages(path, None)
    assert (cheap.pages, cheap.estimated, cheap.method) == (2, False, DSC)
    refined = pages.refine(path, cheap, color_matters=False)
    assert (refined.pages, refined.method, refined.document_copies) == (2, GHOSTSCRIPT, 5)
    assert refined.note is None


def test_colour_per_page_in_postscript(tmp_path: Path) -> None:
    """Neutral greys in any colour space are mono (with -dUseFastColor C = M = Y exactly:
    an ICC conversion would print RGB grey in rich black); any hue is colour."""
    drawings = [MARK, RED, RGB_GREY, DEVICE_GREY, K_ONLY, CYAN_CMYK, PASTEL, ""]
    path = postscript(tmp_path / "mixed.ps", drawings)
    assert analyse(path, POSTSCRIPT) == Analysis(pages=8, color_pages=3, document_copies=1)


def test_colour_rule() -> None:
    assert not is_color(18.8, 18.8, 18.8, ghostscript.DEFAULT_TOLERANCE)  # neutral grey
    assert not is_color(0, 0, 0, ghostscript.DEFAULT_TOLERANCE)  # black only (K)
    assert is_color(0.0, 1.39, 1.39, ghostscript.DEFAULT_TOLERANCE)  # red
    assert is_color(0.07, 0.089, 0.107, ghostscript.DEFAULT_TOLERANCE)  # a small brown box
    assert not is_color(10.0, 10.004, 10.0, ghostscript.DEFAULT_TOLERANCE)  # noise


def test_colour_per_page_in_a_pdf(tmp_path: Path) -> None:
    path = pdf(
        tmp_path / "three.pdf",
        [b"0 g 10 10 100 50 re f", b"1 0 0 rg 10 10 100 50 re f", b"0.4 0.4 0.4 rg 0 0 50 50 re f"],
    )
    assert analyse(path, PDF) == Analysis(pages=3, color_pages=1, document_copies=1)


def test_colour_of_a_jpeg(tmp_path: Path) -> None:
    red = jpeg(tmp_path, "red", RED)
    grey_rgb = jpeg(tmp_path, "grey-rgb", RGB_GREY)
    grey = jpeg(tmp_path, "grey", DEVICE_GREY, device="jpeggray")
    assert pages.count_pages(red, None).detected_type == JPEG
    assert analyse(red, JPEG) == Analysis(pages=1, color_pages=1)
    assert analyse(grey_rgb, JPEG) == Analysis(pages=1, color_pages=0)
    assert analyse(grey, JPEG) == Analysis(pages=1, color_pages=0)


def test_a_document_gs_cannot_interpret(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ps"
    broken.write_text("%!PS\n72 72 moveto (one) show showpage\n/nosuchoperator 1 2 frobnicate\n")
    found = analyse(broken, POSTSCRIPT)
    assert isinstance(found, Failed)
    assert "cannot interpret" in found.reason and "undefined" in found.reason
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    assert isinstance(analyse(junk, PDF), Failed)
    assert isinstance(analyse(junk, "text/plain"), Failed)  # not a format gs reads


def test_a_timeout_kills_gs_and_says_so(tmp_path: Path) -> None:
    big = black_pages(tmp_path / "big.ps", 3000)
    found = analyse(big, POSTSCRIPT, timeout=0.05, resolution=150)
    assert found == Failed("Ghostscript took longer than 0.05 s")


def test_the_file_name_is_not_postscript_code(tmp_path: Path) -> None:
    """The path reaches gs as an argument, never inside PostScript source."""
    odd = tmp_path / "a (b) \\c %d.jpg"
    odd.write_bytes(jpeg(tmp_path, "red", RED).read_bytes())
    assert analyse(odd, JPEG) == Analysis(pages=1, color_pages=1)


# ---------------------------------------------------------------- refine


def test_refine_keeps_the_estimate_when_gs_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ps"
    broken.write_text("%!PS\n(x) frobnicate showpage showpage\n")
    cheap = pages.count_pages(broken, None)
    refined = pages.refine(broken, cheap, color_matters=True)
    assert (refined.pages, refined.estimated, refined.method) == (1, True, ESTIMATE)
    assert refined.color_pages is None and refined.document_copies == 1
    assert refined.note is not None and "cannot interpret" in refined.note


def test_refine_keeps_the_estimate_on_a_timeout(tmp_path: Path) -> None:
    big = black_pages(tmp_path / "big.ps", 3000)
    cheap = pages.count_pages(big, None)
    refined = pages.refine(big, cheap, color_matters=False, timeout=0.01)
    assert (refined.pages, refined.estimated, refined.method) == (1, True, ESTIMATE)
    assert refined.note is not None and "took longer than 0.01 s" in refined.note


def test_refine_pdf_only_when_colour_matters(tmp_path: Path) -> None:
    path = pdf(tmp_path / "two.pdf", [b"0 g 10 10 50 50 re f", b"0 0 1 rg 10 10 50 50 re f"])
    cheap = pages.count_pages(path, None)
    assert (cheap.pages, cheap.estimated, cheap.method) == (2, False, PDF_PAGE_TREE)
    assert not pages.needs_ghostscript(path, cheap, color_matters=False)
    assert pages.refine(path, cheap, color_matters=False) == cheap
    refined = pages.refine(path, cheap, color_matters=True)
    assert (refined.pages, refined.method, refined.color_pages, refined.color) == (
        2,
        PDF_PAGE_TREE,
        1,
        True,
    )


def test_refine_dsc_postscript_only_for_copies_or_colour(tmp_path: Path) -> None:
    """With DSC and nothing to learn (no copies word, colour priced as mono), gs is not run."""
    plain = postscript(tmp_path / "dsc.ps", [MARK, RED], dsc=True)
    cheap = pages.count_pages(plain, None)
    assert (cheap.pages, cheap.method) == (2, DSC)
    assert pages.refine(plain, cheap, color_matters=False) == cheap
    coloured = pages.refine(plain, cheap, color_matters=True)
    assert (coloured.pages, coloured.method, coloured.color_pages) == (2, GHOSTSCRIPT, 1)
    assert not cheap.spells_copies


@pytest.mark.parametrize("word", [b"NumCopies", b"#copies"])
@pytest.mark.parametrize("at", [0, 3, 60, 63, 64, 120])
def test_a_copies_word_anywhere_is_noticed_by_the_page_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, word: bytes, at: int
) -> None:
    """The DSC scan notes a copies word wherever it is, split by a chunk
    boundary too (64-byte chunks here), so Ghostscript is asked about it;
    a near miss ("copies", "Copies") is not one."""
    monkeypatch.setattr(limits, "CHUNK", 64)
    plain = postscript(tmp_path / "dsc.ps", [MARK], dsc=True)
    body = plain.read_bytes()
    for name, text, expected in (
        ("word.ps", body + b"x" * at + b" /" + word + b" 2\n", True),
        ("near.ps", body + b"x" * at + b" copies Copies opies\n", False),
    ):
        path = tmp_path / name
        path.write_bytes(text)
        cheap = pages.count_pages(path, None)
        assert (cheap.pages, cheap.method, cheap.spells_copies) == (1, DSC, expected), name
        assert pages.needs_ghostscript(path, cheap, color_matters=False) == expected


def test_refine_leaves_other_formats_alone(tmp_path: Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("hello\n")
    cheap = pages.count_pages(text, None)
    assert cheap.method == ESTIMATE
    assert pages.refine(text, cheap, color_matters=True) == cheap
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert pages.count_pages(empty, None).method == pages.EMPTY


# ---------------------------------------------------------------- PJL copies

UEL = b"\x1b%-12345X"


def test_pjl_copies_are_the_documents_copies(tmp_path: Path) -> None:
    pcl = tmp_path / "a.pcl"
    pcl.write_bytes(
        UEL + b"@PJL JOB\r\n@PJL SET QTY=3\r\n@PJL SET COPIES = 3\r\n@PJL ENTER LANGUAGE=PCL\r\n"
        b"\x1bEhello\x0c\x1bE" + UEL + b"@PJL EOJ\r\n" + UEL
    )
    counted = pages.count_pages(pcl, None)
    assert (counted.detected_type, counted.document_copies) == (pages.PCL, 3)  # not 9
    # A PostScript job: PJL's copies and the document's own, the larger one.
    ps = tmp_path / "pjl.ps"
    body = black_pages(tmp_path / "inner.ps", 2, header="%!\n<< /NumCopies 4 >> setpagedevice\n")
    ps.write_bytes(
        UEL + b"@PJL SET COPIES=2\n@PJL ENTER LANGUAGE=POSTSCRIPT\n" + body.read_bytes() + UEL
    )
    cheap = pages.count_pages(ps, None)
    assert (cheap.detected_type, cheap.document_copies, cheap.estimated) == (POSTSCRIPT, 2, True)
    refined = pages.refine(ps, cheap, color_matters=False)
    assert (refined.pages, refined.document_copies, refined.method) == (2, 4, GHOSTSCRIPT)
    # Without PJL, or with a figure no one means: 1.
    assert pages.count_pages(black_pages(tmp_path / "b.ps", 1), None).document_copies == 1
    huge = tmp_path / "huge.pcl"
    huge.write_bytes(UEL + b"@PJL SET COPIES=999999\n@PJL ENTER LANGUAGE=PCL\n\x1bEx\x0c")
    assert pages.count_pages(huge, None).document_copies == 1
