"""Buffered forward reading with cheap skips, so counters stream any size with flat memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from . import limits


class Reader:
    """Buffered forward reading with cheap skips (seeks) over a file of known size."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.ops = 0

    def tell(self) -> int:
        return self.f.tell() - len(self.buf) + self.pos

    def fill(self, n: int) -> None:
        """Make ``n`` bytes available from ``pos`` unless the file ends first."""
        have = len(self.buf) - self.pos
        if have >= n or self.eof:
            return
        parts = [self.buf[self.pos :]]
        while have < n:
            data = self.f.read(max(limits.CHUNK, n - have))
            if not data:
                self.eof = True
                break
            parts.append(data)
            have += len(data)
        self.buf = b"".join(parts)
        self.pos = 0

    def read(self, n: int) -> bytes:
        self.fill(n)
        data = self.buf[self.pos : self.pos + n]
        self.pos += len(data)
        return data

    def skip(self, n: int) -> bool:
        """Advance ``n`` bytes; False (at the end) if the file is shorter."""
        have = len(self.buf) - self.pos
        if n <= have:
            self.pos += n
            return True
        here = self.tell()
        self.buf, self.pos = b"", 0
        if here + n > self.size:
            self.f.seek(0, os.SEEK_END)
            self.eof = True
            return False
        self.f.seek(here + n)
        return True

    def at_end(self) -> bool:
        self.fill(1)
        return self.pos >= len(self.buf)

    def take_buffered(self) -> bytes:
        """Hand over the buffered bytes (the caller reads the rest from ``f``)."""
        rest = self.buf[self.pos :]
        self.buf, self.pos = b"", 0
        return rest

    def skip_packbits(self, lines: int, line_bytes: int, unit: int) -> bool:
        """Skip ``lines`` rows of CUPS/PWG/Apple compressed raster (never decoding pixels).

        Each row: a repeat byte (the row counts repeat + 1 times), then runs:
        0..127 = the next pixel repeated n + 1 times, 128 = rest of the row
        blank, 129..255 = 257 - n literal pixels. A pixel is ``unit`` bytes.
        False if the file ends first or the work budget runs out.
        """
        margin = 2 + 128 * unit
        self.fill(4 * margin)
        buf, pos, n = self.buf, self.pos, len(self.buf)
        limit = n if self.eof else n - margin
        ops = self.ops
        short = False
        while lines > 0 and not short:
            if pos > limit:
                self.pos = pos
                self.fill(max(limits.CHUNK, 4 * margin))
                buf, pos, n = self.buf, self.pos, len(self.buf)
                limit = n if self.eof else n - margin
            if pos >= n or ops > limits.MAX_OPS:
                short = True
                break
            lines -= buf[pos] + 1
            pos += 1
            remaining = line_bytes
            while remaining > 0:
                if pos > limit:
                    self.pos = pos
                    self.fill(max(limits.CHUNK, 4 * margin))
                    buf, pos, n = self.buf, self.pos, len(self.buf)
                    limit = n if self.eof else n - margin
                if pos >= n:
                    short = True
                    break
                code = buf[pos]
                pos += 1
                ops += 1
                if code == 128:
                    break
                if code > 128:
                    count = (257 - code) * unit
                    if count > remaining:  # noqa: PLR1730  (no call in the hot loop)
                        count = remaining
                    pos += count
                    remaining -= count
                else:
                    pos += unit
                    remaining -= (code + 1) * unit
        self.ops = ops
        self.pos = min(pos, n)
        return not short and pos <= n and ops <= limits.MAX_OPS


def chunks(reader: Reader) -> Iterator[bytes]:
    """The rest of the file in CHUNK-sized pieces."""
    rest = reader.take_buffered()
    if rest:
        yield rest
    while chunk := reader.f.read(limits.CHUNK):
        yield chunk


def extrapolate(done: int, reader: Reader) -> int:
    """Pages in the whole file, from ``done`` pages in the part walked so far."""
    walked = max(reader.tell(), 1)
    return max(done + 1, round(done * reader.size / walked))
