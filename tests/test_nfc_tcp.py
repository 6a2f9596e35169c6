"""Network card readers over TCP (``nfc.tcp_listen``): protocol, robustness, latency.

The listener runs inside the real app (its cleanup_ctx), next to the HTTP
API, on SQLite and PostgreSQL. Seed data as in test_nfc_api.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import select

from billing.enums import PrintStatus
from billing.models import Event
from proxy import nfc_admin, nfc_listener
from proxy.app import serve_readers
from proxy.exceptions import ConfigError
from proxy.keys import READER_LISTENER, SESSIONS, WAKE
from proxy.nfc_listener import MAX_LINE, ReaderListener, parse_hostport, proof, reader_key
from proxy.pipeline.wake import Waker
from tests.test_nfc_api import (
    ALICE_LSB,
    Sessions,
    World,
    make_app,
    seed,
    statuses,
    tap,
    tap_events,
)

Client = TestClient[web.Request, web.Application]
TIMEOUT = 10.0
CAROL_LSB = "33:22:99:04"  # carol's card 04:99:22:33 as the LSB lobby reader sends it


@pytest.fixture
async def world(sessionmaker: Sessions) -> World:
    return await seed(sessionmaker)


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path, world: World
) -> Client:
    app = make_app(db_url, tmp_path, nfc={"tcp_listen": "127.0.0.1:0"})  # any free port
    if serve_readers not in app.cleanup_ctx:  # until create_app wires it
        app.cleanup_ctx.append(serve_readers)
    return await aiohttp_client(app)


def listener_of(client: Client) -> ReaderListener:
    listener = client.app[READER_LISTENER]
    assert isinstance(listener, ReaderListener)
    return listener


class Line:
    """A test reader: one TCP connection, line in, line out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Line:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def recv(self) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        assert raw.endswith(b"\n"), f"connection closed ({raw!r})"
        return raw.decode("ascii").rstrip("\r\n")

    async def ask(self, line: str | bytes) -> str:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\n")
        return await self.recv()

    async def closed_by_peer(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def connected(
    port: int, reader_id: str | None = None, token: str = ""
) -> AsyncIterator[Line]:
    line = await Line.connect(port)
    try:
        if reader_id is not None:
            assert await line.ask(f"{reader_id} {token}") == f"OK hello {reader_id}"
        yield line
    finally:
        await line.close()


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


# --- the protocol -------------------------------------------------------------


async def test_bad_authentication_closes(client: Client, world: World) -> None:
    port = listener_of(client).port
    for first in (
        "lobby pp_wrong",
        f"lobby {world.readers['far']}",  # another reader's token
        f"nobody {world.readers['lobby']}",  # unknown reader id
        f"lobby {world.tokens['admin']}",  # an API token is not a reader token
        world.readers["lobby"],  # one word
        f"lobby {world.readers['lobby']} extra",
        "x" * 1000,
    ):
        async with connected(port) as line:
            assert await line.ask(first) == "ERR auth", first
            assert await line.closed_by_peer()
    await wait_until(lambda: listener_of(client).open_connections == 0, "connections closed")


async def test_a_reader_session(client: Client, world: World, sessionmaker: Sessions) -> None:
    async with connected(listener_of(client).port, "lobby", world.readers["lobby"]) as line:
        answer = await line.ask(ALICE_LSB)
        assert answer == f"OK released 3 [{','.join(map(str, world.held))}]"
        assert await statuses(sessionmaker, world.held) == [PrintStatus.PENDING] * 3
        # Errors answer a line and keep the connection usable.
        assert (await line.ask("zz:zz")).startswith("ERR malformed: ")
        assert await line.ask("de:ad:be:ef") == "ERR unknown-card"
        assert await line.ask("x" * 1000) == f"ERR malformed: line longer than {MAX_LINE} bytes"
        assert (await line.ask("a" * MAX_LINE)).startswith("ERR malformed: card number too long")
        assert await line.ask(b"\xff\xfe04a1b2c3") == "ERR malformed: card number is not ASCII"
        assert await line.ask("") == "ERR malformed: card number is empty"
        assert await line.ask("PING") == "OK pong"
        # CR LF, framing, and the same card again: nothing new.
        assert await line.ask(";7A:2D:68:FC?\r") == "OK released 0 []"
        assert await line.ask(CAROL_LSB) == "OK released 0 []"  # carol has nothing held
    # The same events as HTTP taps, one per card line (not for PING / over-long lines).
    assert await tap_events(sessionmaker) == [
        "tap",
        "tap-malformed-card",
        "tap-unknown-card",
        "tap-malformed-card",
        "tap-malformed-card",
        "tap",
        "tap",
    ]


async def test_many_lines_at_once_and_a_huge_one(client: Client, world: World) -> None:
    async with connected(listener_of(client).port, "far", world.readers["far"]) as line:
        # Pipelined lines are answered in order; a 1 MB line is dropped without
        # being buffered, and the next line is read normally.
        await line.send(b"fc682d7a\n" + b"9" * 1_000_000 + b"\nPING\nfc:68:2d:7a\n")
        assert await line.recv() == "OK released 1 [" + str(world.elsewhere) + "]"
        assert await line.recv() == f"ERR malformed: line longer than {MAX_LINE} bytes"
        assert await line.recv() == "OK pong"
        assert await line.recv() == "OK released 0 []"


async def test_rotated_token_ends_the_connection(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    async with connected(listener_of(client).port, "lobby", world.readers["lobby"]) as line:
        async with sessionmaker() as s, s.begin():
            await nfc_admin.rotate_reader_token(s, "lobby")
        assert await line.ask(ALICE_LSB) == "ERR auth"
        assert await line.closed_by_peer()
    assert await statuses(sessionmaker, world.held) == [PrintStatus.HELD] * 3


async def test_unauthenticated_connections_time_out_idle_readers_stay(
    client: Client, world: World
) -> None:
    listener = ReaderListener(
        client.app[SESSIONS], client.app[WAKE], "127.0.0.1", 0, auth_timeout=0.3
    )
    await listener.start()
    try:
        async with (
            connected(listener.port) as silent,
            connected(listener.port) as slow,
            connected(listener.port, "lobby", world.readers["lobby"]) as idle,
        ):
            await slow.send("lobby ")  # half a line, then nothing
            assert await silent.recv() == "ERR timeout"
            assert await silent.closed_by_peer()
            assert await slow.recv() == "ERR timeout"
            await asyncio.sleep(0.5)  # past the auth timeout: still connected
            assert await idle.ask("PING") == "OK pong"
            assert listener.open_connections == 1
    finally:
        await listener.close()
    assert listener.open_connections == 0


# --- many readers -----------------------------------------------------------------


async def http_taps(client: Client, world: World, count: int) -> None:
    """``count`` HTTP taps (carol's card: never releases anything), each answered."""
    for _ in range(count):
        await tap(client, world, CAROL_LSB)


async def test_idle_readers_and_http_taps_are_served_together(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    """Connected readers (idle, and one stuck mid-line) block no HTTP tap and are
    still served afterwards. How fast: benchmarks/bench_nfc_listener.py."""
    listener = listener_of(client)
    await http_taps(client, world, 5)
    token = world.readers["lobby"]
    async with contextlib.AsyncExitStack() as stack:
        lines = [
            await stack.enter_async_context(connected(listener.port, "lobby", token))
            for _ in range(50)
        ]
        assert listener.open_connections == 50
        half = await stack.enter_async_context(connected(listener.port))
        await half.send("lobby pp_")
        await http_taps(client, world, 40)
        answers = await asyncio.gather(*(line.ask("PING") for line in lines))
        assert answers == ["OK pong"] * 50
    await wait_until(lambda: listener.open_connections == 0, "connections closed")
    async with sessionmaker() as s:
        taps = await s.scalars(select(Event.id).where(Event.reason == "tap"))
        assert len(taps.all()) == 45


async def test_limits_and_shutdown_with_readers_connected(client: Client, world: World) -> None:
    listener = ReaderListener(
        client.app[SESSIONS], client.app[WAKE], "127.0.0.1", 0, max_connections=2
    )
    await listener.start()
    token = world.readers["lobby"]
    async with (
        connected(listener.port, "lobby", token) as first,
        connected(listener.port, "lobby", token),
        connected(listener.port) as third,
    ):
        assert await third.recv() == "ERR busy"
        assert await third.closed_by_peer()
        await wait_until(lambda: listener.open_connections == 2, "third one gone")
        # Stopping the service closes the connections of readers that stay connected.
        await listener.close()
        assert await first.closed_by_peer()
        assert listener.open_connections == 0


def test_listen_address() -> None:
    assert parse_hostport("127.0.0.1:7772") == ("127.0.0.1", 7772)
    assert parse_hostport("[::1]:0") == ("::1", 0)
    assert parse_hostport(":7772") == ("127.0.0.1", 7772)
    for bad in ("7772x", "host", "host:", "host:99999"):
        with pytest.raises(ConfigError, match=r"nfc\.tcp_listen"):
            parse_hostport(bad)


async def test_no_listener_without_tcp_listen(
    aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path
) -> None:
    app = make_app(db_url, tmp_path)
    app.cleanup_ctx.append(serve_readers)
    client = await aiohttp_client(app)
    assert READER_LISTENER not in client.app


# --- challenge-response and TLS (issue #17) --------------------------------------


async def login_v2(line: Line, reader_id: str, key: str) -> str:
    challenge = await line.ask(f"AUTH2 {reader_id}")
    word, nonce = challenge.split()
    assert word == "CHALLENGE" and len(nonce) == 32, challenge
    return await line.ask(f"PROOF {proof(key, reader_id, nonce)}")


async def test_challenge_response_login_never_sends_the_token(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    port = listener_of(client).port
    key = reader_key(world.readers["lobby"])
    async with connected(port) as line:
        assert await login_v2(line, "lobby", key) == "OK hello lobby"
        assert (await line.ask(ALICE_LSB)).startswith("OK released")
    async with connected(port) as line:  # the wrong key, another reader's
        assert await login_v2(line, "lobby", reader_key(world.readers["far"])) == "ERR auth"
        assert await line.closed_by_peer()
    async with connected(port) as line:  # an unknown reader
        assert await login_v2(line, "nobody", key) == "ERR auth"


async def test_a_recorded_proof_cannot_be_replayed(client: Client, world: World) -> None:
    port = listener_of(client).port
    key = reader_key(world.readers["lobby"])
    async with connected(port) as line:
        nonce = (await line.ask("AUTH2 lobby")).split()[1]
        recorded = proof(key, "lobby", nonce)
        assert await line.ask(f"PROOF {recorded}") == "OK hello lobby"
    async with connected(port) as line:  # a new connection, a new nonce: the old proof fails
        assert (await line.ask("AUTH2 lobby")).startswith("CHALLENGE ")
        assert await line.ask(f"PROOF {recorded}") == "ERR auth"


async def test_the_plain_token_is_refused_from_the_network_without_tls(
    client: Client, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From loopback (the tests, a reader bridge on the host) the v1 login stays."""
    monkeypatch.setattr(nfc_listener, "_loopback", lambda peer: False)
    port = listener_of(client).port
    async with connected(port) as line:
        assert await line.ask(f"lobby {world.readers['lobby']}") == "ERR auth"
    async with connected(port) as line:
        assert await login_v2(line, "lobby", reader_key(world.readers["lobby"])) == "OK hello lobby"


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "nfc.pem", directory / "nfc.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_a_tls_listener_takes_the_plain_token_inside_tls(
    sessionmaker: Sessions, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = await asyncio.to_thread(self_signed, tmp_path)
    monkeypatch.setattr(nfc_listener, "_loopback", lambda peer: False)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    listener = ReaderListener(sessionmaker, Waker(), "127.0.0.1", 0, tls=server)
    await listener.start()
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.port, ssl=client_tls, server_hostname="127.0.0.1"
        )
        line = Line(reader, writer)
        assert await line.ask(f"lobby {world.readers['lobby']}") == "OK hello lobby"
        assert (await line.ask(ALICE_LSB)).startswith("OK released")
        await line.close()
        plain = await Line.connect(listener.port)  # no TLS to a TLS listener: nothing works
        with contextlib.suppress(ConnectionError, AssertionError, TimeoutError, UnicodeDecodeError):
            assert await plain.ask(f"lobby {world.readers['lobby']}") != "OK hello lobby"
        await plain.close()
    finally:
        await listener.close()
