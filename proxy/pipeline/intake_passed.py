"""A document by descriptor: the local intake's zero-copy hand-off (SCM_RIGHTS).

cupsd gives the backend of a raw queue its own spool file (argv[6]). Over the
Unix socket the backend passes that open file instead of its bytes:

1. the request head announces it: ``X-Proxyprint-Document: fd``,
   ``Content-Length: 1``, ``Expect: 100-continue``;
2. the intake decides as for any job (``intake._precheck``: unknown printer,
   duplicate job-uuid... are answered before anything is passed); accepted, it
   stops the transport's reading and answers ``100 Continue`` with
   ``X-Proxyprint-Fd: send``;
3. the backend sends the body's one byte with the descriptor attached
   (``sendmsg``, SCM_RIGHTS); ``receive`` reads it itself with ``recvmsg`` (the
   transport's plain ``recv`` would drop the descriptor), ends the body, and
   lets the transport read again, so that a backend hanging up (a cancel in
   CUPS) is noticed while the file is copied;
4. the spool copies the file in the kernel (``Spool.copy_in``); the answer
   comes after the spool file and the row, as for a streamed job.

A filter's pipe (stdin) and the TCP intake stream the document as before.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket

from aiohttp import web

from ..exceptions import BadRequest
from ..spool import Incomplete

HEADER = "X-Proxyprint-Document"
CONTINUE = b"HTTP/1.1 100 Continue\r\nX-Proxyprint-Fd: send\r\n\r\n"
BODY = b"F"
MAX_FDS = 4  # more than one is refused; room to receive (and close) a few
_HELD = web.RequestKey("passed_fd_held", bool)


def announced(request: web.Request) -> bool:
    """Does the request pass its document by descriptor?  BadRequest if it cannot."""
    value = request.headers.get(HEADER)
    if value is None:
        return False
    if value != "fd":
        raise BadRequest(f"{HEADER}: only 'fd' is known, not {value[:40]!r}")
    transport = request.transport
    if isinstance(transport.get_extra_info("peername") if transport else None, tuple):
        raise BadRequest("a document by descriptor comes only over the local socket")
    if request.content_length != len(BODY):
        raise BadRequest(f"a document by descriptor has a body of {len(BODY)} byte")
    return True


def hold_reading(request: web.Request) -> None:
    """Stop the transport before the backend may send the descriptor."""
    transport = request.transport
    if transport is None:
        raise Incomplete("the backend went away")
    transport.pause_reading()
    request[_HELD] = True


def held(request: web.Request) -> bool:
    return bool(request.get(_HELD, False))


def connected(request: web.Request) -> bool:
    """Is the backend still there (a canceled CUPS job's backend hangs up)?"""
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def receive(request: web.Request, *, timeout: float) -> io.FileIO:
    """The passed document, open for reading (the caller closes it)."""
    transport = request.transport
    if transport is None:
        raise Incomplete("the backend went away")
    loop = asyncio.get_running_loop()
    # A second descriptor of the connection's socket: recvmsg on it, while the
    # transport (paused) does not read.
    sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
    try:
        sock.setblocking(False)
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data, fds, flags, _ = socket.recv_fds(
                        sock, len(BODY), MAX_FDS, socket.MSG_CMSG_CLOEXEC
                    )
                    break
                except BlockingIOError:
                    await _readable(loop, sock)
    except TimeoutError:
        raise Incomplete(f"no document descriptor within {timeout:g} s") from None
    finally:
        sock.close()
        request.content.feed_eof()  # the body's byte is read here (or never comes)
        transport.resume_reading()
    if data != BODY or len(fds) != 1 or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        if not data and not fds:
            raise Incomplete("the backend hung up before passing its document")
        raise BadRequest("expected the body's byte with one document descriptor")
    return io.FileIO(fds[0], "rb", closefd=True)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
