"""Fixtures for tests that need CUPS: a private cupsd, an IPP Everywhere printer,
and a fake proxyprint intake (the service side of the backend's protocol).

``tests/conftest.py`` loads this module with ``pytest_plugins``.  When cupsd or
ippeveprinter is missing or does not start, the tests skip with the reason,
except on CI (``CI=true``), where they fail: CI must run them.
"""

import base64
import hashlib
import json
import os
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.exceptions import ProxyPrintError
from proxy.pipeline.intake_auth import IntakeAuth

TCP_SECRET = "s3cret-" * 6  # 42 bytes: the intake wants at least 32


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail on CI: the one rule for missing CUPS tools."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


async def queue_job_uuids(cupsd: PrivateCupsd, queue: str) -> list[str]:
    """The job-uuid of every job a queue of ``cupsd`` has had (its whole history)."""
    from proxy.targets.ipp import IppTarget

    target = IppTarget.for_cups_queue(
        f"cups://{queue}", queue, cups_server=cupsd.server, timeout=30
    )
    try:
        return [str(job.first("job-uuid")) async for job in target.history()]
    finally:
        await target.close()


# --- a fake intake ------------------------------------------------------------


@dataclass
class IntakeRequest:
    """One request as the fake intake saw it; updated while the body arrives."""

    method: str
    path: str
    headers: dict[str, str]
    meta: dict[str, Any] | None
    meta_json: str
    body: bytearray = field(default_factory=bytearray, repr=False)
    size: int = 0
    sha256: str = ""
    complete: bool = False  # the terminating zero-length chunk arrived
    answered: int | None = None  # the status sent back, None if none


@dataclass
class IntakeBehaviour:
    """How the fake intake answers; tests change it between jobs."""

    status: int = 201
    answer: dict[str, Any] | None = None
    answer_before_body: bool = False  # answer at "Expect: 100-continue"
    secret: str | None = None  # requests must be signed with it (401 otherwise)
    read_delay: float = 0.0  # seconds per chunk: a slow service
    close_without_answer: bool = False
    raw_answer: bytes | None = None
    keep_body: bool = True  # False for huge bodies: size only
    answer_after_bytes: int | None = None  # answer mid-body, without reading the rest
    before_answer: Callable[[IntakeRequest], None] | None = None


class FakeIntake:
    """A threaded HTTP/1.1 server speaking the intake protocol, on a Unix socket or TCP."""

    def __init__(self, *, unix_path: Path | None = None) -> None:
        self.behaviour = IntakeBehaviour()
        self.auth: IntakeAuth | None = None
        self.requests: list[IntakeRequest] = []
        self.fd_offers: list[IntakeRequest] = []  # documents offered by descriptor, declined
        self.changed = threading.Condition()
        self.unix_path = unix_path
        self.port = 0
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def device_uri(self) -> str:
        if self.unix_path is not None:
            return f"proxyprint:{self.unix_path}"
        return f"proxyprint://127.0.0.1:{self.port}"

    def start(self) -> "FakeIntake":
        handler = _handler_class(self)
        server: socketserver.BaseServer
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)
            server = _UnixServer(str(self.unix_path), handler)
        else:
            server = _TcpServer(("127.0.0.1", 0), handler)
            self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(f"fake intake: condition not met in {timeout} s")

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler_class(intake: FakeIntake) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            _serve(intake, self.rfile, self.wfile)  # type: ignore[arg-type]

    return Handler


def _serve(intake: FakeIntake, rfile: IO[bytes], wfile: IO[bytes]) -> None:
    request_line = rfile.readline(65536).decode("latin-1").split()
    if len(request_line) != 3:
        return
    headers: dict[str, str] = {}
    while (line := rfile.readline(65536)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    meta_b64 = headers.get("x-proxyprint-meta", "")
    meta_json = base64.b64decode(meta_b64).decode("ascii") if meta_b64 else ""
    request = IntakeRequest(
        method=request_line[0],
        path=request_line[1],
        headers=headers,
        meta=json.loads(meta_json) if meta_json else None,
        meta_json=meta_json,
    )
    behaviour = intake.behaviour
    refused = behaviour.secret is not None and not _signed(intake, request, behaviour.secret)
    if "x-proxyprint-document" in headers and not (refused or behaviour.answer_before_body):
        # Offered the document by descriptor: like a service that does not take
        # one, answer a plain 100 Continue; the backend hangs up and streams it.
        with intake.changed:
            intake.fd_offers.append(request)
        try:
            wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            wfile.flush()
            request.complete = rfile.read(1) != b""
        except (ConnectionError, OSError):
            pass
        finally:
            intake.notify()
        return
    with intake.changed:
        intake.requests.append(request)
        intake.changed.notify_all()
    try:
        if refused or behaviour.answer_before_body:
            _answer(intake, request, wfile, 401 if refused else behaviour.status)
            return
        if headers.get("expect", "").lower() == "100-continue":
            wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            wfile.flush()
        _read_chunked(intake, request, rfile, behaviour)
        if behaviour.answer_after_bytes is not None and not request.complete:
            _answer(intake, request, wfile, behaviour.status)
        elif request.complete and not behaviour.close_without_answer:
            if behaviour.before_answer is not None:
                behaviour.before_answer(request)
            _answer(intake, request, wfile, behaviour.status)
    except (ConnectionError, OSError):
        pass
    finally:
        intake.notify()


def _signed(intake: FakeIntake, request: IntakeRequest, secret: str) -> bool:
    """Checked as the service checks it (proxy.pipeline.intake_auth), nonces included."""
    if intake.auth is None or intake.auth.secret != secret:
        intake.auth = IntakeAuth(secret, max_skew=300.0)
    titled = {k.title(): v for k, v in request.headers.items()}
    try:
        intake.auth.check(
            address="127.0.0.1",
            method=request.method,
            path_qs=request.path,
            headers=titled,
            meta=request.headers.get("x-proxyprint-meta", ""),
        )
    except ProxyPrintError:
        return False
    return True


def _read_chunked(
    intake: FakeIntake, request: IntakeRequest, rfile: IO[bytes], behaviour: IntakeBehaviour
) -> None:
    digest = hashlib.sha256()
    while True:
        size_line = rfile.readline(1024)
        if not size_line.endswith(b"\n"):
            return  # connection closed mid-body
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            rfile.readline(1024)
            request.sha256 = digest.hexdigest()
            request.complete = True
            return
        data = rfile.read(size)
        if len(data) < size or rfile.read(2) != b"\r\n":
            return
        if behaviour.keep_body:
            digest.update(data)
            request.body += data
        request.size += size
        if (
            behaviour.answer_after_bytes is not None
            and request.size >= behaviour.answer_after_bytes
        ):
            return
        if behaviour.read_delay:
            time.sleep(behaviour.read_delay)
            intake.notify()


def _answer(intake: FakeIntake, request: IntakeRequest, wfile: IO[bytes], status: int) -> None:
    behaviour = intake.behaviour
    if behaviour.raw_answer is not None:
        wfile.write(behaviour.raw_answer)
        wfile.flush()
        return
    if behaviour.answer is not None:
        doc = behaviour.answer
    elif status < 300:
        doc = {"print_in": len(intake.requests), "duplicate": False, "status": "pending"}
    else:
        doc = {"error": {"code": "test", "message": f"fake intake says {status}"}}
    body = json.dumps(doc).encode()
    head = (
        f"HTTP/1.1 {status} Fake\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    wfile.write(head.encode() + body)
    wfile.flush()
    request.answered = status


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: Unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pp-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_intake(short_tmp: Path) -> Iterator[FakeIntake]:
    """A fake intake on a Unix socket; ``device_uri`` is ``proxyprint:/...sock``."""
    intake = FakeIntake(unix_path=short_tmp / "intake.sock").start()
    yield intake
    intake.stop()


@pytest.fixture
def fake_intake_tcp() -> Iterator[FakeIntake]:
    """A fake intake on 127.0.0.1 whose requests must be signed with ``TCP_SECRET``."""
    intake = FakeIntake().start()
    intake.behaviour.secret = TCP_SECRET
    yield intake
    intake.stop()


# --- CUPS -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def private_cupsd() -> Iterator[PrivateCupsd]:
    """One private cupsd for the session (JobRetryInterval 1 s)."""
    if shutil.which("cupsd") is None:
        unavailable("cupsd is not installed (Debian package cups-daemon)")
    cupsd = PrivateCupsd(retry_interval=1)
    try:
        cupsd.start()
    except (ProxyPrintError, OSError) as exc:
        unavailable(f"the private cupsd did not start: {exc}")
    yield cupsd
    cupsd.stop()


@pytest.fixture(scope="session")
def ippeve_printer() -> Iterator[IppEvePrinter]:
    """One ippeveprinter for the session; tests tell their documents apart by job name."""
    if shutil.which("ippeveprinter") is None:
        unavailable("ippeveprinter is not installed (Debian package cups-ipp-utils)")
    printer = IppEvePrinter()
    try:
        printer.start()
    except (ProxyPrintError, OSError) as exc:
        unavailable(f"ippeveprinter did not start: {exc}")
    yield printer
    printer.stop()


@pytest.fixture
def sample_pdf(short_tmp: Path) -> Path:
    return make_pdf(short_tmp / "sample.pdf", 3)


def unique(prefix: str) -> str:
    """A name no other test uses (queues, job titles)."""
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
