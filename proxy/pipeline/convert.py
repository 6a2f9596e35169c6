"""Format conversion at dispatch: the real tools, file to file, in subprocesses.

Each step reads one file and writes the next (never the document in our
memory); the service only waits. The tools come from Debian packages that
``make install`` installs:

- Ghostscript (``ghostscript``): PostScript -> PDF (``pdfwrite``), PDF -> PWG
  raster (``pwgraster``), Apple raster (``urf``) and JPEG, at a resolution and
  colour type the printer advertises;
- cups-filters (``cups-filters``): ``texttopdf``, ``imagetopdf`` (JPEG, PNG,
  GIF, TIFF), ``pdftopdf`` for number-up;
- qpdf (``qpdf``): page ranges and copies, page objects copied as they are.

A step that exits non-zero or outlives the time limit fails the conversion
with the tool's last stderr line (:class:`ConversionError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import ProxyPrintError

FILTER_DIR = Path(os.environ.get("PROXYPRINT_CUPS_FILTERS", "/usr/lib/cups/filter"))
STDERR_TAIL = 2000


class ConversionError(ProxyPrintError):
    """A converter failed, is missing, or ran out of time."""


@dataclass(frozen=True, slots=True)
class Step:
    """One tool run: ``argv`` with ``{src}``/``{dst}`` filled in; ``stdout``:
    the tool writes the result to stdout (the CUPS filters do)."""

    label: str
    argv: tuple[str, ...]
    suffix: str
    stdout: bool = False
    page_ranges: tuple[tuple[int, int], ...] | None = None  # qpdf: filled in at run time
    copies: int = 1

    def command(self, src: Path, dst: Path, pages: int | None = None) -> list[str]:
        argv = [a.replace("{src}", str(src)).replace("{dst}", str(dst)) for a in self.argv]
        if self.page_ranges is None:
            return argv
        chosen = qpdf_ranges(self.page_ranges, pages or 0)
        if not chosen:
            raise ConversionError(f"the page ranges select none of the document's {pages} pages")
        at = argv.index("--pages") + 1
        return [*argv[:at], *[str(src), chosen] * self.copies, *argv[at:]]


def tool(name: str) -> str | None:
    """Path of a converter, or None when its package is not installed."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    found = shutil.which(name)
    if found is not None:
        return found
    candidate = FILTER_DIR / name
    return str(candidate) if os.access(candidate, os.X_OK) else None


# ---------------------------------------------------------------- the steps

_GS = ("-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-dNOINTERPOLATE")


def gs_to_pdf() -> Step:
    return Step(
        "ghostscript pdfwrite", ("gs", *_GS, "-sDEVICE=pdfwrite", "-o", "{dst}", "{src}"), ".pdf"
    )


def cups_filter(name: str, *, copies: int = 1, options: str = "") -> Step:
    """A cups-filters filter run by hand: ``filter job user title copies options file``."""
    path = tool(name) or str(FILTER_DIR / name)
    return Step(
        name, (path, "1", "proxyprint", "proxyprint", str(copies), options, "{src}"), ".pdf", True
    )


def qpdf_select(ranges: tuple[tuple[int, int], ...], copies: int) -> Step:
    """The pages in ``ranges`` (all when empty), ``copies`` times over, collated."""
    argv = ("qpdf", "--empty", "--pages", "--", "{dst}")
    return Step("qpdf page selection", argv, ".pdf", page_ranges=ranges, copies=copies)


def qpdf_ranges(ranges: tuple[tuple[int, int], ...], pages: int) -> str:
    """``((2, 3), (5, 9))`` on a 6-page document -> ``2-3,5-6`` (qpdf's syntax)."""
    if not ranges:
        return f"1-{pages}" if pages else ""
    parts = []
    for lower, wanted in ranges:
        upper = min(wanted, pages)
        if lower <= upper:
            parts.append(f"{lower}-{upper}" if upper > lower else str(lower))
    return ",".join(parts)


def gs_raster(device: str, dpi: int, *, gray: bool, black_1: bool = False) -> Step:
    """PDF -> PWG raster / URF: sRGB 8, sGray 8, or black 1 bit (cupsColorSpace 3)."""
    if black_1:
        color = ("-dcupsColorSpace=3", "-dcupsBitsPerColor=1")
    elif gray:
        color = ("-dcupsColorSpace=18", "-dcupsBitsPerColor=8")
    else:
        color = ("-dcupsColorSpace=19", "-dcupsBitsPerColor=8")
    suffix = ".pwg" if device == "pwgraster" else ".urf"
    argv = ("gs", *_GS, f"-sDEVICE={device}", f"-r{dpi}", *color, "-o", "{dst}", "{src}")
    return Step(f"ghostscript {device} {dpi} dpi", argv, suffix)


def gs_jpeg(dpi: int, *, gray: bool) -> Step:
    device = "jpeggray" if gray else "jpeg"
    argv = ("gs", *_GS, f"-sDEVICE={device}", f"-r{dpi}", "-dJPEGQ=90", "-o", "{dst}", "{src}")
    return Step(f"ghostscript {device} {dpi} dpi", argv, ".jpg")


# ---------------------------------------------------------------- running


async def run(steps: Sequence[Step], src: Path, workdir: Path, *, timeout: float) -> Path:
    """Run ``steps`` in order from ``src``; returns the last output (in ``workdir``).

    ``timeout`` bounds the whole chain. The caller removes ``workdir``.
    """
    workdir = workdir.resolve()
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    current = src = src.resolve()
    for index, step in enumerate(steps):
        dst = workdir / f"step{index}{step.suffix}"
        await _run_step(step, current, dst, workdir, deadline - loop.time())
        if current != src:
            current.unlink(missing_ok=True)
        current = dst
    return current


async def _run_step(step: Step, src: Path, dst: Path, workdir: Path, timeout: float) -> None:
    pages = None
    if step.page_ranges is not None:
        pages = await asyncio.to_thread(_pdf_pages, src)
    argv = step.command(src, dst, pages)
    if tool(argv[0]) is None:
        raise ConversionError(f"{step.label}: {argv[0]} is not installed")
    argv[0] = tool(argv[0]) or argv[0]
    errors = workdir / "stderr.txt"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TMPDIR": str(workdir),
        "HOME": str(workdir),
        "CHARSET": "utf-8",
        "PRINTER": "proxyprint",
    }
    with errors.open("wb") as err, contextlib.ExitStack() as stack:
        out = stack.enter_context(dst.open("wb")) if step.stdout else asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
        try:
            code = await asyncio.wait_for(process.wait(), timeout=max(timeout, 0.01))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            await process.wait()
            raise ConversionError(f"{step.label}: no result within the time limit") from None
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            raise
    if code != 0 or not dst.exists() or dst.stat().st_size == 0:
        raise ConversionError(f"{step.label} failed (exit {code}): {_last_error(errors)}")


def _pdf_pages(path: Path) -> int:
    try:
        import pikepdf  # here: only a page selection needs it

        with pikepdf.open(path) as pdf:
            return len(pdf.pages)
    except Exception as exc:  # qpdf raises several types on a broken file
        raise ConversionError(f"the PDF cannot be read: {exc}") from exc


def _last_error(path: Path) -> str:
    """The last meaningful stderr line (the filters' DEBUG: chatter skipped)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - STDERR_TAIL))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return "no message"
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("DEBUG", "INFO:", "DEBUG2"))]
    return (useful or lines or ["no message"])[-1][:300]
