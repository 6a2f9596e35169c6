"""Ghostscript's view of a document: pages as rendered, colour per page, copies inside.

:func:`analyse` is blocking (call it in a worker thread). Ghostscript runs as a
subprocess on the spooled file (never read here), with ``-dSAFER``, reading only
that file, killed with its process group when ``timeout`` passes.

How it is measured (checked on Ghostscript 10.0):

- Pages: the ``ink_cov`` device prints one line per page it outputs (``C M Y K
  CMYK OK``, percent of the page area at full ink). PostScript without DSC
  comments is counted as rendered.
- Copies inside a PostScript document: gs prints a page once per copy when the
  document sets ``<< /NumCopies N >> setpagedevice`` (or Level 1 ``/#copies N
  def``). A prologue run before the document takes both out of the rendering
  (so the lines are pages) and reports the largest value as the document's
  copies, on marker lines only this run knows.
- Colour: rendered with ``-dUseFastColor`` (no ICC conversion), a neutral grey
  (RGB r=g=b, or DeviceGray, or CMYK K only) gives C = M = Y exactly: an ICC
  conversion would print neutral greys in rich black (C, M, Y all above 0).
  A page is colour when max(C, M, Y) - min(C, M, Y) exceeds ``tolerance``
  (percent of the page area at full ink; the default, 0.01 %, is about 6 mm²
  of a saturated colour on A4). Only a page whose colours balance out exactly
  over the page counts as mono wrongly.
- JPEG: Ghostscript's own ``viewjpeg.ps`` places the image on a page.

A document Ghostscript cannot interpret (an error, a non-zero exit, no page at
all) or that takes longer than ``timeout`` gives a :class:`Failed` with the
reason; the caller keeps its own estimate.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .kinds import PDF, POSTSCRIPT

JPEG = "image/jpeg"
FORMATS = frozenset({PDF, POSTSCRIPT, JPEG})
"""What :func:`analyse` can interpret."""

DEFAULT_TIMEOUT = 60.0
"""Seconds gs may take on one document (the intake passes ``limits.GS_TIMEOUT``)."""
DEFAULT_TOLERANCE = 0.01
"""Colour spread (percent of the page at full ink) above which a page is colour."""
RESOLUTION = 36
"""Dots per inch gs renders at: enough to see a coloured line, fast on 1,000 pages."""
MAX_COPIES = 10_000
"""Larger document copies are not believed (the count fails: the estimate stays)."""

_INK = re.compile(rb"^\s*(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+CMYK OK\s*$")

# Run before the document: NumCopies and #copies are recorded and taken out of the
# rendering, so that every page is output (and measured) once. ``_pp_mark`` is
# replaced by a random token; a marker line is printed at each showpage.
_PROLOGUE = """
/_pp_copies 1 def
/_pp_seen {
  dup type /integertype eq {
    dup _pp_copies gt { /_pp_copies exch store } { pop } ifelse
  } { pop } ifelse
} bind def
/setpagedevice {
  dup type /dicttype eq { dup /NumCopies known {
    dup length dict copy dup /NumCopies get _pp_seen dup /NumCopies undef
  } if } if
  systemdict /setpagedevice get exec
} bind def
/showpage {
  userdict /#copies known { userdict /#copies get _pp_seen userdict /#copies 1 put } if
  (_pp_mark ) print _pp_copies == flush
  systemdict /showpage get exec
} bind def
"""


@dataclass(frozen=True, slots=True)
class Analysis:
    """What Ghostscript rendered: ``pages`` (each once), how many carry colour,
    and the copies the document itself asks for (1 when it does not)."""

    pages: int
    color_pages: int
    document_copies: int = 1


@dataclass(frozen=True, slots=True)
class Failed:
    """Ghostscript could not tell: ``reason`` says why (for the print-out's message)."""

    reason: str


def available() -> bool:
    return shutil.which("gs") is not None


def is_color(cyan: float, magenta: float, yellow: float, tolerance: float) -> bool:
    """A page's colour rule on ``ink_cov`` figures (see the module docstring)."""
    return max(cyan, magenta, yellow) - min(cyan, magenta, yellow) > tolerance


def _command(path: Path, kind: str, mark: str, resolution: int) -> list[str]:
    args = [
        "gs",
        "-q",
        "-dSAFER",
        "-dBATCH",
        "-dNOPAUSE",
        "-dNOINTERPOLATE",
        "-dUseFastColor",
        f"-r{resolution}",
        "-sDEVICE=ink_cov",
        "-sOutputFile=%stdout",
        f"--permit-file-read={path}",
    ]
    if kind == JPEG:
        return [
            *args,
            f"-sPPJPEG={path}",
            "-c",
            _PROLOGUE.replace("_pp_mark", mark),
            "-f",
            "viewjpeg.ps",
            "-c",
            "PPJPEG viewJPEG showpage",
        ]
    if kind == PDF:
        return [*args, "-f", str(path)]
    return [*args, "-c", _PROLOGUE.replace("_pp_mark", mark), "-f", str(path)]


def analyse(
    path: Path,
    kind: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tolerance: float = DEFAULT_TOLERANCE,
    resolution: int = RESOLUTION,
) -> Analysis | Failed:
    """Render ``path`` (of MIME type ``kind``, one of :data:`FORMATS`) with gs; see the module."""
    if kind not in FORMATS:
        return Failed(f"Ghostscript does not read {kind}")
    if not available():
        return Failed("Ghostscript (gs) is not installed")
    mark = "PPCOPIES-" + secrets.token_hex(8)
    marker = re.compile(rb"^" + mark.encode() + rb" (\d+)\s*$")
    try:
        proc = subprocess.Popen(
            _command(path, kind, mark, resolution),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole on timeout
        )
    except OSError as exc:
        return Failed(f"Ghostscript could not be started: {exc}")
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    pages = color_pages = 0
    copies = 1
    error: bytes | None = None  # gs's first "Error: ..." line, for the reason
    other: deque[bytes] = deque(maxlen=2)  # else its last words
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            ink = _INK.match(line)
            if ink is not None:
                pages += 1
                cyan, magenta, yellow = (float(v) for v in ink.groups()[:3])
                color_pages += is_color(cyan, magenta, yellow, tolerance)
                continue
            seen = marker.match(line)
            if seen is not None:
                copies = max(copies, int(seen.group(1)))
            elif error is None and line.startswith(b"Error:"):
                error = line.strip()[:200]
            elif line.strip():
                other.append(line.strip()[:200])
        status = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if timed_out.is_set():
        return Failed(f"Ghostscript took longer than {timeout:g} s")
    said = " / ".join(b.decode("utf-8", "replace") for b in ([error] if error else other))
    if status != 0:
        return Failed(f"Ghostscript cannot interpret the document (exit {status}): {said}")
    if pages == 0:
        return Failed("Ghostscript rendered no page")
    if copies > MAX_COPIES:
        return Failed(f"the document asks for {copies} copies (more than {MAX_COPIES})")
    return Analysis(pages, color_pages, copies)
