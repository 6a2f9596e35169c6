"""TCP listener for network card readers (``[nfc] tcp_listen = "HOST:PORT"``).

The protocol is line based, ASCII, one answer line per request line::

    reader → AUTH2 READER_ID            first line: authenticate (challenge-response)
    proxy  ← CHALLENGE NONCE            32 hex digits, new for every connection
    reader → PROOF HEX                  HMAC-SHA256(key, message), see below
    proxy  ← OK hello READER_ID         or ``ERR auth`` and the connection closes
    (or, over TLS or from loopback only: reader → READER_ID TOKEN, the token itself)
    reader → 04:A1:B2:C3                one card number per line (the reader's format)
    proxy  ← OK released 2 [17,18]      ids of the print-outs released (maybe ``0 []``)
           | ERR unknown-card           nothing released
           | ERR malformed: <reason>    the line is not a card number; keep going
           | ERR internal               the service failed; try again
           | ERR busy / ERR timeout     too many connections / no first line in time
    reader → PING                       keep-alive
    proxy  ← OK pong

The message is ``"proxyprint-reader-v2\n" READER_ID "\n" NONCE``; the
key is the SHA-256 of the reader's token, in lower-case hex (what the
service stores, so the token itself never crosses the network and a
recorded login cannot be replayed: the nonce differs). A copy of the
database is enough to act as a reader: rotate every reader's token after one
leaked. The plain ``READER_ID TOKEN`` login is refused (``ERR auth``) from
any address but loopback unless the listener has TLS (``[nfc] tls_cert`` /
``tls_key``), which also protects the taps that follow.

Lines end in LF (CR LF accepted). A line longer than ``MAX_LINE`` bytes is
answered ``ERR malformed: line longer than 256 bytes`` and the rest of it is
discarded without being buffered. A connection that has not authenticated
within ``AUTH_TIMEOUT`` seconds is closed (``ERR timeout``); an authenticated
one may stay idle for ever (readers keep their connection open). Every
connection is its own task and nothing blocks the loop, so a slow or silent
reader delays no other. A tap here is exactly the HTTP tap: the same
``tap_card`` (same events), the same wake-up of dispatch. The reader's token
is checked again at each tap, so a rotated token or a deleted reader ends
the connection (``ERR auth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
import ssl

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.models import Reader

from .exceptions import ConfigError, ProxyPrintError
from .nfc_admin import (
    TapOutcome,
    authenticate_reader,
    tap_card,
)
from .pipeline.wake import DISPATCH, Waker

log = logging.getLogger(__name__)

MAX_LINE = 256  # bytes, without the line end
AUTH_TIMEOUT = 10.0  # seconds for the first line
MAX_CONNECTIONS = 1000
WRITE_TIMEOUT = 30.0  # a reader that stops reading its answers is dropped

ERR_AUTH = "ERR auth"
PROOF_CONTEXT = "proxyprint-reader-v2"


def reader_key(token: str) -> str:
    """The HMAC key of a reader: SHA-256 of its token in hex (``Reader.token_hash``)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def proof(key: str, reader_id: str, nonce: str) -> str:
    """What a reader answers to ``CHALLENGE nonce`` (readers compute the same)."""
    signed = f"{PROOF_CONTEXT}\n{reader_id}\n{nonce}".encode("utf-8", "surrogateescape")
    return hmac.new(key.encode("ascii"), signed, hashlib.sha256).hexdigest()


def _loopback(peer: object) -> bool:
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        return ipaddress.ip_address(str(peer[0])).is_loopback
    except ValueError:
        return False


class LineTooLong(Exception):
    """A line over the limit; its rest has been read and dropped."""


def parse_hostport(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:7772`` for IPv6; port 0 = any free port)."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"nfc.tcp_listen: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _read_line(stream: asyncio.StreamReader, max_line: int) -> bytes | None:
    """The next line without its line end, None at EOF; LineTooLong over ``max_line``.

    The stream's buffer limit is ``max_line + 2``, so no more than that (plus
    one socket read) is ever held for one line.
    """
    try:
        line = await stream.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:  # EOF; a last line without LF counts
        if not exc.partial:
            return None
        line = exc.partial
    except asyncio.LimitOverrunError as exc:
        await stream.readexactly(exc.consumed)
        while True:
            try:
                await stream.readuntil(b"\n")
                break
            except asyncio.LimitOverrunError as more:
                await stream.readexactly(more.consumed)
            except asyncio.IncompleteReadError:
                break  # EOF inside the long line
        raise LineTooLong from None
    line = line.rstrip(b"\r\n")
    if len(line) > max_line:
        raise LineTooLong
    return line


def released_line(outcome: TapOutcome) -> str:
    ids = ",".join(str(r.print_out.id) for r in outcome.released)
    return f"OK released {len(outcome.released)} [{ids}]"


class ReaderListener:
    """The TCP server and its connections; ``open_connections`` is the live count."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        waker: Waker,
        host: str,
        port: int,
        *,
        auth_timeout: float = AUTH_TIMEOUT,
        max_line: int = MAX_LINE,
        max_connections: int = MAX_CONNECTIONS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sessions = sessions
        self.waker = waker
        self.host, self.port = host, port
        self.auth_timeout = auth_timeout
        self.max_line = max_line
        self.max_connections = max_connections
        self.tls = tls
        self.open_connections = 0
        self.authenticated_connections = 0
        self.taps = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=self.max_line + 2, ssl=self.tls
        )
        # Port 0 asks the OS for a free port: report the real one.
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("NFC reader listener on %s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.open_connections += 1
        peer = writer.get_extra_info("peername")
        try:
            if self.open_connections > self.max_connections:
                await self._send(writer, "ERR busy")
                return
            await self._serve(stream, writer, peer)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("reader connection %s ended: %r", peer, exc)
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, line: str) -> None:
        writer.write(line.encode("ascii", "replace") + b"\n")
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()

    async def _authenticate(
        self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> tuple[int, str, str] | None:
        """(reader row id, reader id, token hash) after ``OK hello``, or None (closed)."""
        try:
            async with asyncio.timeout(self.auth_timeout):
                line = await _read_line(stream, self.max_line)
        except TimeoutError:
            await self._send(writer, "ERR timeout")
            return None
        except LineTooLong:
            line = b""
        if line is None:
            return None
        parts = line.decode("ascii", "replace").split()
        reader: Reader | None = None
        try:
            if len(parts) == 2 and parts[0] == "AUTH2":
                reader = await self._challenge(stream, writer, parts[1])
            elif len(parts) == 2 and (self.tls is not None or _loopback(peer)):
                async with self.sessions() as session, session.begin():
                    reader = await authenticate_reader(session, parts[0], parts[1])
        except ProxyPrintError:  # Unauthorized, Forbidden
            reader = None
        except (TimeoutError, LineTooLong):
            reader = None
        except Exception:  # the database is down...: say so, log it whole
            log.exception("reader connection %s: authentication failed", peer)
            await self._send(writer, "ERR internal")
            return None
        if reader is None:
            log.warning("reader connection %s: authentication failed", peer)
            await self._send(writer, ERR_AUTH)
            return None
        await self._send(writer, f"OK hello {reader.reader_id}")
        return reader.id, reader.reader_id, reader.token_hash

    async def _challenge(
        self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter, reader_id: str
    ) -> Reader | None:
        """``AUTH2``: a fresh nonce out, the reader's HMAC of it in."""
        nonce = secrets.token_hex(16)
        await self._send(writer, f"CHALLENGE {nonce}")
        async with asyncio.timeout(self.auth_timeout):
            line = await _read_line(stream, self.max_line)
        words = (line or b"").decode("ascii", "replace").split()
        if len(words) != 2 or words[0] != "PROOF":
            return None
        async with self.sessions() as session, session.begin():
            reader = await session.scalar(select(Reader).where(Reader.reader_id == reader_id))
        if reader is None:
            return None
        expected = proof(reader.token_hash, reader.reader_id, nonce)
        return reader if hmac.compare_digest(words[1].lower(), expected) else None

    async def _serve(
        self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        who = await self._authenticate(stream, writer, peer)
        if who is None:
            return
        self.authenticated_connections += 1
        try:
            while True:
                try:
                    line = await _read_line(stream, self.max_line)
                except LineTooLong:
                    answer = f"ERR malformed: line longer than {self.max_line} bytes"
                else:
                    if line is None:
                        return
                    answer = await self._tap(who, line)
                await self._send(writer, answer)
                if answer == ERR_AUTH:
                    return
        finally:
            self.authenticated_connections -= 1

    async def _tap(self, who: tuple[int, str, str], line: bytes) -> str:
        reader_pk, reader_id, token_hash = who
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return "ERR malformed: card number is not ASCII"
        if text.strip().upper() == "PING":
            return "OK pong"

        async def work(session: AsyncSession) -> TapOutcome | None:
            reader = await session.get(Reader, reader_pk)
            if reader is None or reader.token_hash != token_hash:
                return None
            return await tap_card(session, reader, text)

        try:
            async with self.sessions() as session, session.begin():
                outcome = await work(session)
        except Exception:  # the database is down...: answer, log, keep the connection
            log.exception("reader %s: tap failed", reader_id)
            return "ERR internal"
        if outcome is None:
            log.warning("reader %s: token rotated or reader removed", reader_id)
            return ERR_AUTH
        self.taps += 1
        if outcome.malformed is not None:
            return f"ERR malformed: {outcome.malformed}"
        if outcome.unknown_card:
            return "ERR unknown-card"
        if outcome.released:
            self.waker.wake(DISPATCH)
        return released_line(outcome)
