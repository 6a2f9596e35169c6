"""The spool: job files written 0600, streamed (or copied from a passed
descriptor, ``copy_in``), hashed on the way in.

A job is written to ``incoming/`` and renamed into ``jobs/`` only once it is
complete, so a partial upload (canceled job, dropped connection) never looks
like a job. Spool files are removed only after the job reached an end state.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import mmap
import os
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .exceptions import BadRequest, ProxyPrintError

CHUNK = 256 * 1024
WRITE_BLOCK = 1024 * 1024
COPY_BLOCK = 64 * 1024 * 1024  # a passed document is copied in blocks: a cancel stops it
HASH_BLOCK = 4 * 1024 * 1024  # a multiple of mmap.ALLOCATIONGRANULARITY
# copy_file_range cannot here (other file system, old kernel): sendfile can.
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


class TooLarge(BadRequest):
    code = "too-large"
    status = 413


class SpoolFull(ProxyPrintError):
    """No room left for the job: the backend retries later (CUPS keeps the job)."""

    code = "spool-full"
    status = 507


# A full disk, a quota, or a file size limit (RLIMIT_FSIZE): no room, not a fault.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class Incomplete(BadRequest):
    """The upload ended before its end (backend canceled or connection lost)."""

    code = "incomplete-upload"


@dataclass(frozen=True)
class SpooledFile:
    path: Path
    sha256: str
    size: int


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.jobs = root / "jobs"

    def prepare(self, min_age: float = 0.0) -> None:
        """Create the directories; delete uploads a crash cut off.

        ``min_age`` (seconds since the file last changed) spares the uploads
        and the not yet committed jobs of other instances sharing this spool.
        """
        for d in (self.root, self.incoming, self.jobs):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        # Leftovers of uploads cut off by a crash are never jobs.
        for stale in self.incoming.glob("*.part"):
            if _older(stale, min_age):
                stale.unlink(missing_ok=True)

    async def receive(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> SpooledFile:
        """Write ``chunks`` to a new spool file; raise (and leave nothing) on failure.

        Hashing and writing run in a worker thread (both release the GIL), one
        block behind the network: receiving and storing overlap on two cores.
        """
        with _no_room():
            return await self._receive(chunks, max_bytes=max_bytes)

    async def _receive(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> SpooledFile:
        part = _Part(self)
        fd = part.fd
        digest = hashlib.sha256()
        size = 0
        block = bytearray()
        writing: asyncio.Future[None] | None = None

        def store(data: bytes) -> None:
            digest.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"job larger than the limit of {max_bytes} bytes")
                    block += chunk
                    if len(block) >= WRITE_BLOCK:
                        if writing is not None:
                            await writing
                        writing = asyncio.ensure_future(asyncio.to_thread(store, bytes(block)))
                        block.clear()
            finally:
                if writing is not None:
                    await writing
            store(bytes(block))
            final = part.keep()
        except BaseException:
            part.discard()
            raise
        return SpooledFile(final, digest.hexdigest(), size)

    async def copy_in(
        self, source: int, *, max_bytes: int, alive: Callable[[], bool]
    ) -> SpooledFile:
        """Copy the open regular file ``source`` into a new spool file, in the kernel.

        ``copy_file_range`` (``sendfile`` where the file systems differ) moves
        the bytes without passing them through the service; a second thread
        hashes them meanwhile from the page cache (a read-only map of the
        source). ``alive()`` is asked between blocks: False (the backend went
        away: the job was canceled in CUPS) discards the copy.
        """
        with _no_room():
            return await self._copy_in(source, max_bytes=max_bytes, alive=alive)

    async def _copy_in(
        self, source: int, *, max_bytes: int, alive: Callable[[], bool]
    ) -> SpooledFile:
        info = os.fstat(source)
        if not stat.S_ISREG(info.st_mode):
            raise BadRequest("the document passed is not a regular file")
        size = info.st_size
        if size > max_bytes:
            raise TooLarge(f"job larger than the limit of {max_bytes} bytes")
        part = _Part(self)
        fd = part.fd
        stop = threading.Event()
        hashing = asyncio.ensure_future(asyncio.to_thread(_hash_file, source, size, stop))
        try:
            try:
                done = 0
                while done < size:
                    if not alive():
                        raise Incomplete("the backend went away while its job was copied")
                    count = min(COPY_BLOCK, size - done)
                    copied = await asyncio.to_thread(_copy_range, source, fd, done, count)
                    if not copied:
                        raise Incomplete("the document is shorter than it was")
                    done += copied
            except BaseException:
                stop.set()
                raise
            finally:
                digest = await hashing
            if not alive():
                raise Incomplete("the backend went away while its job was copied")
            final = part.keep()
        except BaseException:
            part.discard()
            raise
        return SpooledFile(final, digest, size)

    def remove(self, path: str | Path | None) -> None:
        if path is None:
            return
        p = Path(path)
        # Only ever delete inside our own spool.
        if p.parent == self.jobs:
            p.unlink(missing_ok=True)

    def sweep(self, referenced: set[str], min_age: float = 0.0) -> int:
        """Delete job files no print-in refers to (left by a crash); start-up only."""
        removed = 0
        for path in self.jobs.iterdir():
            if str(path) not in referenced and _older(path, min_age):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


@contextlib.contextmanager
def _no_room() -> Iterator[None]:
    """A full disk (or quota) is SpoolFull: the backend retries the job later."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NO_ROOM:
            raise SpoolFull(
                f"the proxyprint spool is full ({exc.strerror}); the job will be retried"
            ) from exc
        raise


class _Part:
    """A new spool file being written in ``incoming/``: ``keep`` moves it into
    ``jobs/`` under the same name, ``discard`` leaves nothing."""

    def __init__(self, spool: Spool) -> None:
        self.name = uuid.uuid4().hex
        self.path = spool.incoming / f"{self.name}.part"
        self.final = spool.jobs / self.name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._open = True

    def _close(self) -> None:
        if self._open:
            self._open = False
            os.close(self.fd)

    def keep(self) -> Path:
        self._close()
        self.path.rename(self.final)
        return self.final

    def discard(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)


def _copy_range(source: int, target: int, offset: int, count: int) -> int:
    """Copy ``count`` bytes at ``offset`` from ``source`` to the same place in ``target``."""
    try:
        return os.copy_file_range(source, target, count, offset, offset)
    except OSError as exc:
        if exc.errno not in _NO_COPY_RANGE:
            raise
    os.lseek(target, offset, os.SEEK_SET)  # sendfile writes at the file position
    return os.sendfile(target, source, offset, count)


def _hash_file(source: int, size: int, stop: threading.Event) -> str:
    """sha256 of the first ``size`` bytes of ``source``, read through maps of it.

    One window of ``HASH_BLOCK`` (4 MiB) at a time, unmapped before the next: the pages
    hashed leave the service's RSS again (a map of the whole file would count
    all of it in the service's peak).
    """
    digest = hashlib.sha256()
    for start in range(0, size, HASH_BLOCK):
        if stop.is_set():
            break
        length = min(HASH_BLOCK, size - start)
        with mmap.mmap(source, length, prot=mmap.PROT_READ, offset=start) as window:
            digest.update(window)
    return digest.hexdigest()


def _older(path: Path, seconds: float) -> bool:
    if seconds <= 0:
        return True
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False
