"""PostScript: DSC ``%%Page:`` comments outside embedded documents, else ``%%Pages:``.

The same pass notes whether the document spells ``NumCopies`` or ``#copies``
(``PageCount.spells_copies``): one that does not cannot set its own copies,
and Ghostscript need not be asked. Each chunk is searched in place (bounded
``find``, no slicing): on a 1 GiB file the pass costs little more than
reading it.
"""

from __future__ import annotations

import re
from dataclasses import replace

from .kinds import (
    POSTSCRIPT,
    PageCount,
)
from .reader import Reader, chunks

_DSC = re.compile(rb"%%(Pages|Page|BeginDocument|EndDocument)\b:?[ \t]*([^\r\n]{0,64})")
_DSC_CARRY_MAX = 4096
_LONG_LINE_HEAD = 256  # of a line longer than the carry: enough for a DSC comment
_EOL = re.compile(rb"[\r\n]")
# Both words end in "opies": one search for the stem, then a look before it.
_COPIES_STEM = b"opies"
_COPIES_WORDS = (b"NumCopies", b"#copies")
_COPIES_BEFORE = 4  # bytes before the stem that complete the longer word


class _Scan:
    """The DSC state across chunks: lines are cut at EOL, a line split by a
    chunk boundary is carried (up to ``_DSC_CARRY_MAX``)."""

    def __init__(self) -> None:
        self.depth = 0
        self.page_comments = 0
        self.declared: int | None = None
        self.carry = b""
        self.in_long_line = False
        self.spells_copies = False
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        if not self.spells_copies:
            self._copies(chunk)
        start = 0
        if self.carry or self.in_long_line:
            match = _EOL.search(chunk)
            if match is None:
                if not self.in_long_line:
                    self._carry(self.carry + chunk)
                return
            if not self.in_long_line:
                line = self.carry + chunk[: match.end()]
                self._lines(line, 0, len(line))
            self.carry, self.in_long_line = b"", False
            start = match.end()
        cut = max(chunk.rfind(b"\n", start), chunk.rfind(b"\r", start)) + 1
        if cut == 0:
            cut = start
        self._lines(chunk, start, cut)
        self._carry(chunk[cut:])

    def _carry(self, rest: bytes) -> None:
        if len(rest) <= _DSC_CARRY_MAX:
            self.carry = rest
            return
        head = rest[:_LONG_LINE_HEAD]
        self._lines(head, 0, len(head))
        self.carry, self.in_long_line = b"", True

    def finish(self) -> PageCount:
        if self.carry:
            self._lines(self.carry, 0, len(self.carry))
        pages, declared = self.page_comments, self.declared
        if pages:
            count = PageCount(pages, declared not in (None, pages), POSTSCRIPT)
        elif declared:
            count = PageCount(declared, False, POSTSCRIPT)
        else:
            count = PageCount(1, True, POSTSCRIPT)
        return replace(count, spells_copies=True) if self.spells_copies else count

    def _copies(self, chunk: bytes) -> None:
        edge = self.tail + chunk[:16]  # a word split by the chunk boundary
        if any(word in edge for word in _COPIES_WORDS):
            self.spells_copies = True
            return
        self.tail = chunk[-16:]
        at = chunk.find(_COPIES_STEM)
        while at >= 0:
            before = chunk[max(at - _COPIES_BEFORE, 0) : at + len(_COPIES_STEM)]
            if before.endswith(_COPIES_WORDS):
                self.spells_copies = True
                return
            at = chunk.find(_COPIES_STEM, at + 1)

    def _lines(self, body: bytes, start: int, end: int) -> None:
        """DSC comments in ``body[start:end]``, which starts at a line start."""
        # A DSC comment is "%%" at the start of a line. Look for "%" and check the
        # next byte: find(b"%") is a memchr (0.02 s per GiB), find(b"%%") about 1 ns a byte.
        at = body.find(b"%", start, end)
        while at >= 0:
            line_start = at == start or body[at - 1] in b"\r\n"
            match = _DSC.match(body, at, end) if line_start and body.startswith(b"%%", at) else None
            at = body.find(b"%", at + 1, end)
            if match is None:
                continue
            keyword, value = match.group(1), match.group(2)
            if keyword == b"BeginDocument":
                self.depth += 1
            elif keyword == b"EndDocument":
                self.depth = max(self.depth - 1, 0)
            elif self.depth:
                continue
            elif keyword == b"Page":
                self.page_comments += 1
            elif self.declared is None:  # %%Pages: the first figure that is not "(atend)"
                figure = value.split(maxsplit=1)[:1]
                if figure and figure[0].isdigit():
                    self.declared = int(figure[0])


def count_postscript(reader: Reader, head: bytes, offset: int) -> PageCount:
    """DSC scan: ``%%Page:`` comments outside embedded documents, else ``%%Pages: N``.

    The page comments win over a ``%%Pages:`` figure (like a PDF's page tree
    over its ``/Count``): concatenated files carry the first file's figure.
    When both are there and disagree, the count is flagged as estimated.
    """
    scan = _Scan()
    for chunk in chunks(reader):
        scan.feed(chunk)
    return scan.finish()
