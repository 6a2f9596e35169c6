"""Page counting of spooled files (proxy/pages.py): real files made here with
pikepdf and ghostscript, plus hand-made ones for the edge cases."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pikepdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (before any @given: picks the profile)
from proxy import pages
from proxy.pages import (
    CUPS_RASTER,
    PCL,
    PCLXL,
    PDF,
    POSTSCRIPT,
    PWG_RASTER,
    TEXT,
    UNKNOWN,
    URF,
    PageCount,
    count_pages,
)

GS = shutil.which("gs")
# make install installs ghostscript: under CI a missing gs fails (the test runs and errors).
needs_gs = pytest.mark.skipif(
    GS is None and os.environ.get("CI") != "true", reason="ghostscript (gs) is not installed"
)


# ---------------------------------------------------------------- makers


def make_pdf(path: Path, count: int) -> Path:
    """A small PDF whose every page draws a coloured box (ghostscript renders it cleanly)."""
    pdf = pikepdf.new()
    for n in range(count):
        pdf.add_blank_page(page_size=(200, 200))
        pdf.pages[-1].Contents = pdf.make_stream(f"0 0 1 rg 10 10 {20 + n % 150} 50 re f".encode())
    pdf.save(path)
    pdf.close()
    return path


def handmade_pdf(path: Path, *, kids: int, claimed: int, resources: bool = True) -> Path:
    """A PDF written byte by byte (correct xref) whose page tree claims ``claimed`` pages."""
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200]%s >>" % (
        b" /Resources << >>" if resources else b""
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Count %d /Kids [%s] >>"
        % (claimed, b" ".join(b"%d 0 R" % (3 + k) for k in range(kids))),
        *[page] * kids,
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path


def gs(device: str, source: Path, target: Path, *extra: str) -> Path:
    assert GS is not None
    command = [GS, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", f"-sDEVICE={device}", *extra]
    subprocess.run(
        [*command, "-o", str(target), str(source)], check=True, capture_output=True, timeout=60
    )
    return target


def raster_header(
    *,
    order: str = ">",
    width: int = 16,
    height: int = 4,
    bits_color: int = 8,
    bits_pixel: int = 8,
    color_order: int = 0,
    space: int = 18,
    colors: int = 1,
    duplex: int = 0,
    length: int = 1796,
    media_class: bytes = b"PwgRaster",
) -> bytes:
    """A CUPS page header (cups_page_header2_t, or the 420-byte v1 one)."""
    header = bytearray(1796)
    header[: len(media_class)] = media_class
    line_bytes = (width * bits_pixel + 7) // 8
    for offset, value in (
        (272, duplex),
        (372, width),
        (376, height),
        (384, bits_color),
        (388, bits_pixel),
        (392, line_bytes),
        (396, color_order),
        (400, space),
        (420, colors),
    ):
        struct.pack_into(order + "I", header, offset, value)
    return bytes(header[:length])


def packbits_page(width: int, height: int, unit: int) -> bytes:
    """Compressed rows: one literal run, one repeat run, then 'rest blank'."""
    rows = bytearray()
    for row in range(height):
        rows.append(0)  # this row once
        literal = min(3, width)
        rows.append(257 - literal)
        rows += bytes([row % 256]) * (literal * unit)
        if width > literal:
            rows.append(0)  # one pixel repeated once
            rows += b"\x7f" * unit
        if width > literal + 1:
            rows.append(128)  # rest of the row blank
    return bytes(rows)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pages")
    for count in (1, 3, 50):
        make_pdf(root / f"p{count}.pdf", count)
    return root


@pytest.fixture(scope="module")
def gsdocs(docs: Path) -> Path:
    if GS is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and ghostscript (gs) is not installed")
        pytest.skip("ghostscript (gs) is not installed")
    gs("ps2write", docs / "p50.pdf", docs / "p50.ps")
    gs("ps2write", docs / "p3.pdf", docs / "p3.ps")
    gs("pwgraster", docs / "p50.pdf", docs / "p50.pwg", "-r50")
    gs(
        "pwgraster",
        docs / "p3.pdf",
        docs / "p3-color-duplex.pwg",
        "-r50",
        "-dcupsColorSpace=19",
        "-dcupsBitsPerColor=8",
        "-dDuplex",
    )
    gs("cups", docs / "p3.pdf", docs / "p3.cups", "-r50")
    gs("urf", docs / "p3.pdf", docs / "p3.urf", "-r50")
    gs("urf", docs / "p3.pdf", docs / "p3-color.urf", "-r50", "-dcupsColorSpace=19")
    gs("pxlmono", docs / "p3.pdf", docs / "p3.pxl", "-r75")
    gs("ljet4", docs / "p3.pdf", docs / "p3.pcl", "-r75")
    return docs


@pytest.fixture(params=[7, 4096, pages.CHUNK], ids=["chunk7", "chunk4k", "chunk1M"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Run a test with tiny, small and normal read chunks (boundary handling)."""
    monkeypatch.setattr(pages.limits, "CHUNK", request.param)
    yield request.param


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- PDF


@pytest.mark.parametrize("count", [1, 3, 50])
def test_pdf_page_count(docs: Path, count: int) -> None:
    assert count_pages(docs / f"p{count}.pdf", "application/pdf") == PageCount(count, False, PDF)


def test_pdf_with_lying_count_is_counted_by_its_page_tree(tmp_path: Path) -> None:
    path = handmade_pdf(tmp_path / "lie.pdf", kids=2, claimed=99)
    with pikepdf.open(path) as pdf:
        assert pdf.Root.Pages.Count == 99  # the file really lies
    if shutil.which("qpdf"):  # the reason ARCHITECTURE.md says not to use --show-npages
        shown = subprocess.run(
            ["qpdf", "--show-npages", str(path)], capture_output=True, text=True, check=False
        )
        assert shown.stdout.strip() == "99"
    assert count_pages(path, None) == PageCount(2, False, PDF)


def test_pdf_benign_qpdf_warnings_keep_the_count_exact(tmp_path: Path) -> None:
    # qpdf warns "Resources is missing or invalid; repairing": not damage to the page tree.
    path = handmade_pdf(tmp_path / "nores.pdf", kids=3, claimed=3, resources=False)
    assert count_pages(path, None) == PageCount(3, False, PDF)


def test_pdf_detected_by_magic_whatever_the_content_type(docs: Path) -> None:
    for content_type in (None, "application/octet-stream", "text/plain", "image/pwg-raster"):
        assert count_pages(docs / "p3.pdf", content_type) == PageCount(3, False, PDF)


def test_truncated_pdf_is_estimated(docs: Path, tmp_path: Path) -> None:
    data = (docs / "p3.pdf").read_bytes()
    result = count_pages(write(tmp_path, "cut.pdf", data[: len(data) // 2]), None)
    assert result.estimated
    assert result.detected_type == PDF
    assert 1 <= result.pages <= 3


def test_garbage_pdf_is_estimated_never_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 10)
    assert count_pages(path, "application/pdf") == PageCount(1, True, PDF)


def test_pdf_header_only(tmp_path: Path) -> None:
    assert count_pages(write(tmp_path, "h.pdf", b"%PDF-1.4\n"), None) == PageCount(1, True, PDF)


def test_encrypted_pdf_with_user_password_is_estimated_from_raw_page_objects(
    docs: Path, tmp_path: Path
) -> None:
    path = tmp_path / "locked.pdf"
    with pikepdf.open(docs / "p3.pdf") as pdf:
        pdf.save(path, encryption=pikepdf.Encryption(user="secret", owner="owner"))
    assert count_pages(path, None) == PageCount(3, True, PDF)


def test_encrypted_pdf_with_owner_password_only_is_exact(docs: Path, tmp_path: Path) -> None:
    path = tmp_path / "owner.pdf"
    with pikepdf.open(docs / "p3.pdf") as pdf:
        pdf.save(path, encryption=pikepdf.Encryption(user="", owner="owner"))
    assert count_pages(path, None) == PageCount(3, False, PDF)


def test_pdf_content_type_without_magic_goes_to_pdf_counter(tmp_path: Path) -> None:
    path = write(tmp_path, "x.bin", b"\x00\x01 not really a pdf")
    assert count_pages(path, "application/pdf; charset=binary") == PageCount(1, True, PDF)


# ---------------------------------------------------------------- PostScript


@needs_gs
@pytest.mark.parametrize("count", [3, 50])
def test_postscript_from_ghostscript(gsdocs: Path, count: int) -> None:
    result = count_pages(gsdocs / f"p{count}.ps", "application/postscript")
    # ps2write's prolog spells a copies word: Ghostscript is asked about copies.
    assert result == PageCount(count, False, POSTSCRIPT, spells_copies=True)


DSC_ATEND = b"""%!PS-Adobe-3.0
%%Creator: hand
%%Pages: (atend)
%%EndComments
%%Page: 1 1
showpage
%%Page: 2 2
%%BeginDocument: inner.eps
%!PS-Adobe-3.0 EPSF-3.0
%%Pages: 12
%%Page: 1 1
%%Page: 2 2
%%EndDocument
showpage
%%Page: 3 3
showpage
%%Page: 4 4
showpage
%%Trailer
%%Pages: 4
%%EOF
"""


def test_postscript_atend_with_embedded_document(tmp_path: Path, chunk: int) -> None:
    path = write(tmp_path, "atend.ps", DSC_ATEND)
    assert count_pages(path, None) == PageCount(4, False, POSTSCRIPT)


def test_postscript_crlf_and_pjl_header(tmp_path: Path, chunk: int) -> None:
    data = b"\x1b%-12345X@PJL JOB\r\n@PJL ENTER LANGUAGE = POSTSCRIPT\r\n" + DSC_ATEND.replace(
        b"\n", b"\r\n"
    )
    assert count_pages(write(tmp_path, "pjl.ps", data), None) == PageCount(4, False, POSTSCRIPT)


def test_postscript_cr_only_line_ends(tmp_path: Path) -> None:
    data = DSC_ATEND.replace(b"\n", b"\r")
    assert count_pages(write(tmp_path, "mac.ps", data), None) == PageCount(4, False, POSTSCRIPT)


def test_postscript_pages_in_trailer_only(tmp_path: Path, chunk: int) -> None:
    data = b"%!PS-Adobe-3.0\n%%Pages: (atend)\n%%EndComments\nshowpage\n%%Trailer\n%%Pages: 7\n"
    assert count_pages(write(tmp_path, "t.ps", data), None) == PageCount(7, False, POSTSCRIPT)


def test_postscript_page_comments_win_over_a_wrong_figure(tmp_path: Path) -> None:
    data = b"%!PS-Adobe-3.0\n%%Pages: 5\n%%Page: 1 1\nshowpage\n%%Page: 2 2\nshowpage\n"
    assert count_pages(write(tmp_path, "w.ps", data), None) == PageCount(2, True, POSTSCRIPT)


def test_postscript_without_dsc_is_estimated(tmp_path: Path) -> None:
    data = b"%!\n/Helvetica findfont 12 scalefont setfont 72 72 moveto (hi) show showpage\n"
    assert count_pages(write(tmp_path, "nodsc.ps", data), None) == PageCount(1, True, POSTSCRIPT)


def test_postscript_ignores_page_comments_not_at_line_start(tmp_path: Path, chunk: int) -> None:
    long_line = b"x" * 10_000 + b" %%Page: 9 9 (inside a long line)\n"
    data = b"%!PS-Adobe-3.0\n" + long_line + b"%%Page: 1 1\nshowpage\n" + long_line
    assert count_pages(write(tmp_path, "long.ps", data), None) == PageCount(1, False, POSTSCRIPT)


def test_postscript_ctrl_d_and_dos_eps_header(tmp_path: Path) -> None:
    assert count_pages(write(tmp_path, "d.ps", b"\x04" + DSC_ATEND), None).pages == 4
    eps = b"\xc5\xd0\xd3\xc6" + b"\0" * 26 + DSC_ATEND
    assert count_pages(write(tmp_path, "dos.eps", eps), None) == PageCount(4, False, POSTSCRIPT)


def _dsc_lines_reference(
    body: bytes, depth: int, page_comments: int, declared: int | None
) -> tuple[int, int, int | None]:
    """The former scan (find(b"%%") from one pair to the next): the new one must agree."""
    at = body.find(b"%%")
    while at >= 0:
        at_line_start = at == 0 or body[at - 1] in b"\r\n"
        match = pages.postscript._DSC.match(body, at) if at_line_start else None
        at = body.find(b"%%", at + 2)
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
        elif declared is None:
            figure = value.split(maxsplit=1)[:1]
            if figure and figure[0].isdigit():
                declared = int(figure[0])
    return depth, page_comments, declared


_DSC_PIECES = [
    b"%",
    b"%%",
    b"%%%",
    b"\n",
    b"\r",
    b"\r\n",
    b" ",
    b"x",
    b"Page: 1 1",
    b"%%Page: 2 2",
    b"Pages: 3",
    b"%%Pages: 4",
    b"%%Pages: (atend)",
    b"%%BeginDocument: a.eps",
    b"%%EndDocument",
    b"% comment",
]


@given(
    body=st.lists(st.sampled_from(_DSC_PIECES), max_size=40).map(b"".join),
    depth=st.integers(0, 2),
    declared=st.none() | st.integers(0, 9),
)
def test_dsc_scan_agrees_with_the_former_double_percent_search(
    body: bytes, depth: int, declared: int | None
) -> None:
    expected = _dsc_lines_reference(body, depth, 5, declared)
    scan = pages.postscript._Scan()
    scan.depth, scan.page_comments, scan.declared = depth, 5, declared
    scan._lines(body, 0, len(body))
    assert (scan.depth, scan.page_comments, scan.declared) == expected


def test_postscript_single_percent_signs_at_chunk_boundaries(tmp_path: Path, chunk: int) -> None:
    """Lone "%" (comments, "%" ending a line, "% %%Page:" mid-line) shifted across
    every position around the read chunk boundaries; only line-start "%%Page:" counts."""
    lines = [
        b"%!PS-Adobe-3.0",
        b"%%Pages: (atend)",
        b"% a comment line, not DSC",
        b"%",
        b"%%Page: 1 1",
        b"50 % 7 mod % a % b %% c",
        b"%Page: 9 9 (one percent sign: not DSC)",
        b"x %%Page: 9 9 (not at a line start)",
        b"%",
        b"%%Page: 2 2",
        b"%%%Page: 9 9 (three percent signs)",
        b"%% %%Page: 9 9",
        b"%%Trailer",
        b"%%Pages: 2",
    ]
    text = b"\n".join(lines) + b"\n"
    if chunk < len(text):  # a boundary every few bytes: every alignment
        pads = range(chunk + 1)
    elif chunk < 100 * len(text):  # the first boundary at every byte of the text
        pads = range(chunk - len(text) - 3, chunk + 3)
    else:  # the file is one chunk
        pads = range(3)
    for pad in pads:
        # A "%"-only padding line of ``pad`` bytes moves everything after it.
        data = lines[0] + b"\n" + b"%" * pad + b"\n" + text[len(lines[0]) + 1 :]
        for eol in (b"\n", b"\r\n", b"\r"):
            path = write(tmp_path, "pct.ps", data.replace(b"\n", eol))
            assert count_pages(path, None) == PageCount(2, False, POSTSCRIPT), (pad, eol)


# ---------------------------------------------------------------- raster


@needs_gs
def test_pwg_raster_from_ghostscript(gsdocs: Path, chunk: int) -> None:
    result = count_pages(gsdocs / "p50.pwg", "image/pwg-raster")
    assert result == PageCount(50, False, PWG_RASTER, color=False, duplex=False)


@needs_gs
def test_pwg_raster_colour_and_duplex_from_headers(gsdocs: Path) -> None:
    result = count_pages(gsdocs / "p3-color-duplex.pwg", None)
    assert result == PageCount(3, False, PWG_RASTER, color=True, duplex=True)


@needs_gs
def test_cups_raster_v3_little_endian_from_ghostscript(gsdocs: Path) -> None:
    assert (gsdocs / "p3.cups").read_bytes()[:4] in (b"3SaR", b"RaS3")
    result = count_pages(gsdocs / "p3.cups", "application/vnd.cups-raster")
    assert result == PageCount(3, False, CUPS_RASTER, color=False, duplex=False)


@pytest.mark.parametrize(
    ("sync", "order", "length"),
    [(b"RaS3", ">", 1796), (b"3SaR", "<", 1796), (b"RaSt", ">", 420), (b"tSaR", "<", 420)],
)
def test_uncompressed_raster_every_version_and_byte_order(
    tmp_path: Path, sync: bytes, order: str, length: int
) -> None:
    width, height = 10, 5
    data = bytearray(sync)
    for page in range(4):
        header = raster_header(
            order=order, width=width, height=height, space=1, bits_pixel=24, length=length,
            duplex=1 if page == 2 else 0, media_class=b"",
        )  # fmt: skip
        data += header + bytes(width * 3 * height)
    result = count_pages(write(tmp_path, "r.ras", bytes(data)), None)
    assert result == PageCount(4, False, CUPS_RASTER, color=True, duplex=True)


def test_uncompressed_raster_planar(tmp_path: Path) -> None:
    # CMYK planar: four planes of 3 rows each, 2 bytes per row.
    header = raster_header(width=16, height=3, bits_pixel=1, bits_color=1, space=6, colors=4,
                           color_order=2, media_class=b"")  # fmt: skip
    data = b"RaS3" + (header + bytes(2 * 3 * 4)) * 2
    result = count_pages(write(tmp_path, "planar.ras", data), None)
    assert result == PageCount(2, False, CUPS_RASTER, color=True, duplex=False)


@pytest.mark.parametrize(("sync", "order"), [(b"RaS2", ">"), (b"2SaR", "<")])
def test_compressed_raster_both_byte_orders(
    tmp_path: Path, chunk: int, sync: bytes, order: str
) -> None:
    data = bytearray(sync)
    for _ in range(5):
        data += raster_header(order=order, width=20, height=30, bits_pixel=24, space=19, colors=3)
        data += packbits_page(20, 30, 3)
    result = count_pages(write(tmp_path, "c.pwg", bytes(data)), None)
    assert result == PageCount(5, False, PWG_RASTER, color=True, duplex=False)


def test_compressed_raster_row_repeat_counts(tmp_path: Path) -> None:
    # 1000 rows as 4 compressed rows repeated 250 times each, then a 2nd page.
    page = bytes([249, 128]) * 4
    data = b"RaS2" + (raster_header(width=8, height=1000) + page) * 2
    assert count_pages(write(tmp_path, "rep.pwg", data), None).pages == 2


def test_truncated_raster_is_estimated(gsdocs: Path, tmp_path: Path) -> None:
    data = (gsdocs / "p50.pwg").read_bytes()
    result = count_pages(write(tmp_path, "cut.pwg", data[: len(data) // 2]), None)
    assert result.estimated
    assert result.detected_type == PWG_RASTER
    assert 20 <= result.pages <= 30


def test_raster_with_invalid_header_is_estimated(tmp_path: Path) -> None:
    bad = raster_header(bits_pixel=0)
    result = count_pages(write(tmp_path, "bad.pwg", b"RaS2" + bad + b"\0" * 100), None)
    assert result == PageCount(1, True, PWG_RASTER)
    only_sync = count_pages(write(tmp_path, "sync.pwg", b"RaS2"), None)
    assert only_sync == PageCount(1, True, CUPS_RASTER)  # no header: not known to be PWG


def test_raster_work_budget_extrapolates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages.limits, "MAX_OPS", 1_000)
    page = raster_header(width=20, height=30, bits_pixel=24, space=19, colors=3)
    page += packbits_page(20, 30, 3)  # 90 runs a page
    result = count_pages(write(tmp_path, "many.pwg", b"RaS2" + page * 40), None)
    assert result.estimated
    assert 30 <= result.pages <= 50


@needs_gs
def test_apple_raster_from_ghostscript(gsdocs: Path, chunk: int) -> None:
    assert count_pages(gsdocs / "p3.urf", "image/urf") == PageCount(3, False, URF, False, False)
    colour = count_pages(gsdocs / "p3-color.urf", None)
    assert colour == PageCount(3, False, URF, color=True, duplex=False)


def test_apple_raster_handmade_duplex(tmp_path: Path) -> None:
    def page(duplex: int) -> bytes:
        header = bytes([24, 1, duplex, 0]) + bytes(8)
        header += struct.pack(">III", 20, 30, 300) + bytes(8)
        return header + packbits_page(20, 30, 3)

    data = b"UNIRAST\0" + struct.pack(">I", 2) + page(1) + page(3)
    result = count_pages(write(tmp_path, "d.urf", data), None)
    assert result == PageCount(2, False, URF, color=True, duplex=True)
    truncated = count_pages(write(tmp_path, "t.urf", data[:-200]), None)
    assert truncated == PageCount(2, True, URF, color=True, duplex=True)


# ---------------------------------------------------------------- PCL


@needs_gs
def test_pcl_xl_from_ghostscript(gsdocs: Path, chunk: int) -> None:
    assert count_pages(gsdocs / "p3.pxl", None) == PageCount(3, False, PCLXL)


@needs_gs
def test_pcl5_from_ghostscript_is_estimated(gsdocs: Path, chunk: int) -> None:
    assert count_pages(gsdocs / "p3.pcl", "application/vnd.hp-pcl") == PageCount(3, True, PCL)


def test_pcl5_handmade(tmp_path: Path, chunk: int) -> None:
    row = b"\x1b*b4W\x0c\x0c\x1b\x0c"  # form feeds and ESC inside raster data: not pages
    page = b"\x1b*r1A" + row * 3 + b"\x1b*rB"
    data = (
        b"\x1b%-12345X@PJL JOB\n@PJL ENTER LANGUAGE=PCL\n\x1bE"
        + b"\x1b(s0p10h12v0s0b3T\x1b)s6W\x0c\x0c\x0c\x0c\x0c\x0c"  # font data with form feeds
        + page + b"\x0c"
        + b"Hello text page\x0c"
        + page + b"\x1bE"  # the reset ejects the third page
        + b"\x1b%-12345X@PJL EOJ\n\x1b%-12345X"
    )  # fmt: skip
    assert count_pages(write(tmp_path, "h.pcl", data), None) == PageCount(3, True, PCL)


def test_pcl_xl_ascii_binding_is_estimated(tmp_path: Path) -> None:
    data = b"' HP-PCL XL;2;0\nBeginSession EndPage EndPage EndSession\n"
    assert count_pages(write(tmp_path, "a.pxl", data), None) == PageCount(1, True, PCLXL)


# ---------------------------------------------------------------- text, empty, unknown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello\n", 1),
        ("no newline at the end", 1),
        ("line\n" * 66, 1),
        ("line\n" * 67, 2),
        ("line\n" * 132, 2),
        ("line\n" * 133, 3),
        ("a\fb\fc", 3),
        ("a\f\f\fb", 2),  # form feeds on an empty page add no page
        ("x" * 81 + "\n", 1),
        (("x" * 81 + "\n") * 33, 1),  # 33 lines wrapped to 66 rows
        (("x" * 81 + "\n") * 34, 2),
        ("x" * 80 * 67, 2),  # one very long line
        ("crlf line\r\n" * 67, 2),
        ("zoë € 漢字 " * 8 + "\n", 1),
        ("\f", 1),
    ],
)
def test_plain_text(tmp_path: Path, chunk: int, text: str, expected: int) -> None:
    path = write(tmp_path, "t.txt", text.encode("utf-8"))
    assert count_pages(path, None) == PageCount(expected, True, TEXT)


def test_latin1_text_and_content_type(tmp_path: Path) -> None:
    data = "Grüße aus Köln\n".encode("latin-1") * 70
    assert count_pages(write(tmp_path, "l.txt", data), None) == PageCount(2, True, TEXT)
    odd = b"\x01\x02\x03 looks binary but is said to be text\n" * 3
    assert count_pages(write(tmp_path, "o.txt", odd), "text/plain") == PageCount(1, True, TEXT)


def test_empty_file_has_no_pages(tmp_path: Path) -> None:
    path = write(tmp_path, "empty", b"")
    for content_type in (None, "application/pdf", "text/plain"):
        assert count_pages(path, content_type) == PageCount(0, False, UNKNOWN)


def test_random_binary_is_estimated(tmp_path: Path) -> None:
    data = random.Random(42).randbytes(100_000)
    path = write(tmp_path, "r.bin", data)
    assert count_pages(path, "application/octet-stream") == PageCount(1, True, UNKNOWN)


def test_images_are_one_page_estimated(tmp_path: Path) -> None:
    path = write(tmp_path, "i.jpg", b"\xff\xd8\xff\xe0" + bytes(100))
    assert count_pages(path, None) == PageCount(1, True, "image/jpeg")


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        count_pages(tmp_path / "nope", None)


# ---------------------------------------------------------------- memory


def _peak_python_memory(path: Path) -> tuple[PageCount, int]:
    tracemalloc.start()
    try:
        result = count_pages(path, None)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_postscript_streams_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.ps"
    body = b"0 0 moveto 100 100 lineto stroke % some drawing\n" * 20_000
    with path.open("wb") as f:
        f.write(b"%!PS-Adobe-3.0\n%%Pages: (atend)\n")
        for n in range(1, 41):
            f.write(b"%%%%Page: %d %d\n" % (n, n) + body + b"showpage\n")
        f.write(b"%%Trailer\n%%Pages: 40\n")
    assert os.path.getsize(path) > 30_000_000
    result, peak = _peak_python_memory(path)
    assert result == PageCount(40, False, POSTSCRIPT)
    assert peak < 6 * pages.CHUNK


def test_large_raster_walks_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.ras"
    width, height = 2000, 1000  # 6 MB of RGB per page, seeked over
    with path.open("wb") as f:
        f.write(b"RaS3")
        for _ in range(8):
            f.write(raster_header(width=width, height=height, bits_pixel=24, space=19, colors=3))
            f.write(bytes(width * 3 * height))
    result, peak = _peak_python_memory(path)
    assert result == PageCount(8, False, CUPS_RASTER, color=True, duplex=False)
    assert peak < 4 * pages.CHUNK


# ---------------------------------------------------------------- never raises

_PREFIXES = [
    b"",
    b"%PDF-1.4\n",
    b"%!PS-Adobe-3.0\n",
    b"RaS2PwgRaster",
    b"3SaR",
    b"RaSt",
    b"UNIRAST\0",
    b"\x1bE",
    b"\x1b%-12345X@PJL ENTER LANGUAGE=PCLXL\n) HP-PCL XL;2;0\n",
]


@settings(
    max_examples=300,  # file I/O and qpdf per example; the fuzzing below is not profile-bound
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(prefix=st.sampled_from(_PREFIXES), body=st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(tmp_path: Path, prefix: bytes, body: bytes) -> None:
    path = write(tmp_path, "fuzz", prefix + body)
    result = count_pages(path, None)
    assert result.pages >= 0
    assert result.pages > 0 or not (prefix + body)
