"""The TCP intake over TLS with per-request HMAC (issue #17), against the real service.

The backend (run as cupsd runs it) talks to ``proxyprint serve``'s TCP intake
(TLS with a certificate made here by ``openssl``); replayed and stale requests
are built with the backend's own signing code and sent over TLS by hand."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing.models import PrintIn
from cups_backend import proxyprint as backend
from proxy.config import build_config
from proxy.devkit.cupsd import PrivateCupsd, free_port
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.stack import ServiceStack
from proxy.exceptions import ConfigError, Unauthorized
from proxy.pipeline import intake_auth
from tests.fixtures_cups import TCP_SECRET

pytestmark = pytest.mark.cups
REPO = Path(__file__).resolve().parent.parent


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_stack(
    private_cupsd: PrivateCupsd, short_tmp: Path
) -> AsyncIterator[tuple[ServiceStack, int, Path]]:
    cert, key = _certificate(short_tmp, "intake")
    port = free_port()
    intake = {"tcp": f"127.0.0.1:{port}", "secret": TCP_SECRET, "tls_cert": str(cert)}
    intake["tls_key"] = str(key)
    async with ServiceStack(private_cupsd, short_tmp / "svc", extra={"intake": intake}) as svc:
        await svc.add_printer("pp-tls", target="ipp://127.0.0.1:9/ipp/print", mode="hold")
        await svc.add_users("carol")
        yield svc, port, cert


def _backend(
    port: int, cafile: Path, document: Path, printer: str = "pp-tls"
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C",
        "DEVICE_URI": f"proxyprints://127.0.0.1:{port}",
        "PRINTER": printer,
        "CONTENT_TYPE": "application/pdf",
        "PROXYPRINT_INTAKE_SECRET": TCP_SECRET,
        "PROXYPRINT_INTAKE_CA": str(cafile),
    }
    args = [
        "7",
        "carol",
        "report.pdf",
        "1",
        f"job-uuid=urn:uuid:{uuid.uuid4()}",
        str(document),
    ]
    return subprocess.run(
        [sys.executable, "-m", "cups_backend", *args],
        check=False,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _print_ins(stack: ServiceStack) -> int:
    async with stack._sessions()() as session:
        return int(await session.scalar(select(func.count()).select_from(PrintIn)) or 0)


def _raw_request(port: int, cafile: Path, head: bytes, body: bytes) -> tuple[int, str]:
    """One request over TLS, the body chunked as the backend sends it; (status, body)."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(head.replace(b"Expect: 100-continue\r\n", b""))
        tls.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


def _meta(job_uuid: str) -> str:
    doc = {"printer": "pp-tls", "job_id": 9, "job_uuid": job_uuid, "user": "carol", "title": "t",
           "copies": 1, "options": "", "content_type": "application/pdf"}  # fmt: skip
    return base64.b64encode(json.dumps(doc).encode()).decode("ascii")


async def test_a_job_over_tls_with_a_signed_request_is_recorded(
    tls_stack: tuple[ServiceStack, int, Path], short_tmp: Path
) -> None:
    stack, port, cert = tls_stack
    pdf = make_pdf(short_tmp / "report.pdf", 2)
    result = await asyncio.to_thread(_backend, port, cert, pdf)
    assert result.returncode == backend.BackendStatus.OK, result.stderr
    assert "held" in result.stderr.lower() or "Held" in result.stderr
    assert await _print_ins(stack) == 1


async def test_a_direct_job_is_followed_over_tls_to_its_end(
    tls_stack: tuple[ServiceStack, int, Path], short_tmp: Path, ippeve_printer: IppEvePrinter
) -> None:
    """The backend's status long-polls are signed too: it exits OK once printed."""
    stack, port, cert = tls_stack
    await stack.add_printer("pp-tls-direct", target=ippeve_printer.uri, mode="direct")
    pdf = make_pdf(short_tmp / "report.pdf", 1)
    result = await asyncio.to_thread(_backend, port, cert, pdf, "pp-tls-direct")
    assert result.returncode == backend.BackendStatus.OK, result.stderr
    assert "Printed on" in result.stderr, result.stderr


async def test_a_wrong_server_certificate_is_refused_and_cups_retries(
    tls_stack: tuple[ServiceStack, int, Path], short_tmp: Path
) -> None:
    stack, port, _ = tls_stack
    other, _ = _certificate(short_tmp, "other")  # a CA that did not sign the intake's
    pdf = make_pdf(short_tmp / "report.pdf", 1)
    result = await asyncio.to_thread(_backend, port, other, pdf)
    assert result.returncode == backend.BackendStatus.RETRY, result.stderr
    assert "certificate verify failed" in result.stderr
    assert await _print_ins(stack) == 0


async def test_a_replayed_request_is_refused_and_records_nothing(
    tls_stack: tuple[ServiceStack, int, Path], short_tmp: Path
) -> None:
    stack, port, cert = tls_stack
    target = backend.Target(unix_path=None, host="127.0.0.1", port=port, tls=True)
    head = backend.request_head(target, _meta(str(uuid.uuid4())), TCP_SECRET)
    body = make_pdf(short_tmp / "r.pdf", 1).read_bytes()
    first = await asyncio.to_thread(_raw_request, port, cert, head, body)
    assert first[0] == 201, first
    assert await _print_ins(stack) == 1
    replay = await asyncio.to_thread(_raw_request, port, cert, head, body)
    assert replay[0] == 401 and "replayed" in replay[1], replay
    assert await _print_ins(stack) == 1


async def test_a_stale_request_is_refused(
    tls_stack: tuple[ServiceStack, int, Path], short_tmp: Path
) -> None:
    stack, port, cert = tls_stack
    meta = _meta(str(uuid.uuid4()))
    stale = str(int(time.time()) - 600)
    nonce = uuid.uuid4().hex
    signed = intake_auth.message("POST", backend.INTAKE_PATH, stale, nonce, meta)
    lines = [
        f"POST {backend.INTAKE_PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Transfer-Encoding: chunked",
        "Connection: close",
        f"X-Proxyprint-Meta: {meta}",
        f"{intake_auth.TIME_HEADER}: {stale}",
        f"{intake_auth.NONCE_HEADER}: {nonce}",
        f"{intake_auth.SIGNATURE_HEADER}: {intake_auth.sign(TCP_SECRET, signed)}",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    status, text = await asyncio.to_thread(_raw_request, port, cert, head, b"%PDF-1.4\n")
    assert status == 401 and "stale" in text, text
    assert await _print_ins(stack) == 0


async def test_failed_attempts_are_throttled_per_address(
    tls_stack: tuple[ServiceStack, int, Path], short_tmp: Path
) -> None:
    stack, port, cert = tls_stack
    target = backend.Target(unix_path=None, host="127.0.0.1", port=port, tls=True)
    statuses = []
    for _ in range(intake_auth.FAILURES_ALLOWED + 2):
        head = backend.request_head(target, _meta(str(uuid.uuid4())), "wrong-" * 8)
        statuses.append((await asyncio.to_thread(_raw_request, port, cert, head, b"x"))[0])
    assert statuses[: intake_auth.FAILURES_ALLOWED] == [401] * intake_auth.FAILURES_ALLOWED
    assert statuses[-1] == 429
    # The right secret from the same address waits for the window too: nothing recorded.
    good = backend.request_head(target, _meta(str(uuid.uuid4())), TCP_SECRET)
    assert (await asyncio.to_thread(_raw_request, port, cert, good, b"x"))[0] == 429
    assert await _print_ins(stack) == 0


def test_the_backend_signs_what_the_service_checks() -> None:
    """The two implementations of the message (standalone backend, service) agree."""
    target = backend.Target(unix_path=None, host="h", port=1)
    head = backend.request_head(target, "bWV0YQ==", TCP_SECRET).decode()
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
    auth = intake_auth.IntakeAuth(TCP_SECRET, max_skew=300)
    auth.check(
        address="a", method="POST", path_qs=backend.INTAKE_PATH, headers=headers, meta="bWV0YQ=="
    )
    with pytest.raises(Unauthorized, match="replayed"):
        auth.check(
            address="a",
            method="POST",
            path_qs=backend.INTAKE_PATH,
            headers=headers,
            meta="bWV0YQ==",
        )
    with pytest.raises(Unauthorized, match="bad signature"):
        other = intake_auth.IntakeAuth(TCP_SECRET, max_skew=300)
        other.check(
            address="a", method="POST", path_qs=backend.INTAKE_PATH, headers=headers, meta="other"
        )


@pytest.mark.parametrize("secret", ["", "short", "x" * 31])
def test_a_tcp_intake_with_a_short_secret_does_not_start(secret: str) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        build_config({"intake": {"tcp": "127.0.0.1:6399", "secret": secret}}, {})
