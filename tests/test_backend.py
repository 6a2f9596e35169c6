"""The CUPS backend as CUPS runs it: a subprocess, against a fake intake."""

import base64
import importlib.util
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tests.hypothesis_profiles  # noqa: F401  (before any @given: picks the profile)
from cups_backend import proxyprint
from cups_backend.proxyprint import BackendStatus
from proxy import cupsadmin
from tests.fixtures_cups import TCP_SECRET, FakeIntake, IntakeRequest, free_tcp_port

REPO = Path(__file__).resolve().parent.parent
DISCOVERY = 'network proxyprint "Unknown" "proxyprint delegated print"\n'
UUID = "urn:uuid:6f0b4d0e-3b8a-4c1e-9d51-0c3f2a7e9b10"
OPTIONS = (
    f"delegators=alice,bob:2 job-uuid={UUID} job-originating-host-name=ws17.example.org "
    "shared-accounts='Events/Gala:2' document-name-supplied=report.pdf"
)


# Each environment its own TMPDIR (where the backend leaves its sent-marks):
# the jobs here share one job-uuid, and a mark one test leaves must not reach
# another; a test that runs one job twice passes the same environment.
_TMP_ROOT = tempfile.TemporaryDirectory(prefix="pp-backend-tests-")


def backend_env(device_uri: str, **extra: str) -> dict[str, str]:
    """The environment cupsd gives a backend (the parts ours reads); C locale."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "DEVICE_URI": device_uri,
        "PRINTER": "pp-direct",
        "CONTENT_TYPE": "application/pdf",
        "TMPDIR": tempfile.mkdtemp(dir=_TMP_ROOT.name),
    }
    env.update(extra)
    return env


def job_args(
    title: str | bytes = "report.pdf",
    *,
    options: str = OPTIONS,
    copies: int = 1,
    user: str | bytes = "carol",
    file: Path | None = None,
) -> list[str | bytes]:
    args: list[str | bytes] = ["42", user, title, str(copies), options]
    if file is not None:
        args.append(str(file))
    return args


def backend_cmd(args: Sequence[str | bytes]) -> list[str | bytes]:
    return [sys.executable, "-m", "cups_backend", *args]


def run_backend(
    args: Sequence[str | bytes],
    env: Mapping[str, str],
    *,
    stdin: bytes | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        backend_cmd(args),
        input=stdin if stdin is not None else b"",
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def only_request(intake: FakeIntake) -> IntakeRequest:
    intake.wait_for(lambda: len(intake.requests) == 1, timeout=5)
    return intake.requests[0]


@pytest.fixture
def document(short_tmp: Path) -> Path:
    """2.5 MiB + 1 random bytes: three blocks of the 1 MiB block size, the last partial."""
    assert proxyprint.BLOCK_SIZE == 1 << 20
    path = short_tmp / "doc.bin"
    path.write_bytes(os.urandom((5 << 19) + 1))
    return path


def sparse_file(directory: Path, size: int) -> Path:
    path = directory / f"sparse-{size}.bin"
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


# --- calling conventions ------------------------------------------------------------


def test_without_arguments_prints_the_discovery_line() -> None:
    result = run_backend([], {"PATH": os.environ["PATH"]})
    assert result.returncode == 0
    assert result.stdout == DISCOVERY
    assert result.stderr == ""


def test_wrong_argument_count_fails_without_contacting_anyone(fake_intake: FakeIntake) -> None:
    result = run_backend(["42", "carol"], backend_env(fake_intake.device_uri))
    assert result.returncode == BackendStatus.FAILED
    assert "ERROR: Usage" in result.stderr
    assert fake_intake.requests == []


def test_exit_codes_are_those_of_cups_backend_h() -> None:
    codes = {name: value for name, value in vars(BackendStatus).items() if name.isupper()}
    assert all(type(value) is int for value in codes.values())
    assert codes == {
        "OK": 0,
        "FAILED": 1,
        "AUTH_REQUIRED": 2,
        "HOLD": 3,
        "STOP": 4,
        "CANCEL": 5,
        "RETRY": 6,
        "RETRY_CURRENT": 7,
    }


# --- what the intake receives -------------------------------------------------------


def test_metadata_header_carries_the_job(fake_intake: FakeIntake, document: Path) -> None:
    title = b"Caf\xe9 \xff report"  # Latin-1 bytes: not UTF-8
    args = job_args(title, user="zo\u00eb", copies=3, file=document)
    result = run_backend(args, backend_env(fake_intake.device_uri))

    assert result.returncode == 0, result.stderr
    request = only_request(fake_intake)
    assert (request.method, request.path) == ("POST", "/intake/v1/jobs")
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.headers["transfer-encoding"] == "chunked"
    assert "x-proxyprint-secret" not in request.headers
    assert request.meta == {
        "printer": "pp-direct",
        "job_id": 42,
        "job_uuid": UUID,
        "user": "zo\u00eb",
        "title": "Caf\udce9 \udcff report",
        "copies": 3,
        "options": OPTIONS,
        "content_type": "application/pdf",
        "host": "ws17.example.org",
    }
    # Surrogate escapes travel as JSON \udcXX escapes in pure ASCII.
    assert "Caf\\udce9 \\udcff report" in request.meta_json
    assert request.meta_json.isascii()
    assert base64.b64decode(request.headers["x-proxyprint-meta"], validate=True)


def test_metadata_without_uuid_host_or_content_type(fake_intake: FakeIntake) -> None:
    env = backend_env(fake_intake.device_uri)
    del env["CONTENT_TYPE"]
    result = run_backend(job_args(options="number-up=1"), env, stdin=b"%PDF-1.4\n")

    assert result.returncode == 0, result.stderr
    meta = only_request(fake_intake).meta
    assert meta is not None
    assert (meta["job_uuid"], meta["host"], meta["content_type"]) == (None, None, None)
    assert meta["options"] == "number-up=1"


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_body_is_byte_identical(fake_intake: FakeIntake, document: Path, via: str) -> None:
    data = document.read_bytes()
    if via == "file":
        result = run_backend(job_args(file=document), backend_env(fake_intake.device_uri))
    else:
        result = run_backend(job_args(), backend_env(fake_intake.device_uri), stdin=data)

    assert result.returncode == 0, result.stderr
    request = only_request(fake_intake)
    assert request.complete
    assert bytes(request.body) == data


def test_a_service_that_takes_no_descriptor_gets_the_file_streamed(
    fake_intake: FakeIntake, document: Path
) -> None:
    """argv[6] on the local socket is offered by descriptor first; a plain 100
    Continue (no ``X-Proxyprint-Fd: send``) means the service would wait for a
    body: the backend hangs up before passing anything and streams the file."""
    result = run_backend(job_args(file=document), backend_env(fake_intake.device_uri))

    assert result.returncode == 0, result.stderr
    fake_intake.wait_for(lambda: len(fake_intake.fd_offers) == 1, timeout=5)
    offer = fake_intake.fd_offers[0]
    assert offer.headers["x-proxyprint-document"] == "fd"
    assert offer.headers["content-length"] == "1"
    assert not offer.complete  # the byte (and the descriptor) never sent
    assert offer.meta == only_request(fake_intake).meta
    assert bytes(only_request(fake_intake).body) == document.read_bytes()
    assert "streaming the document" in result.stderr


def test_empty_document_is_an_empty_complete_body(fake_intake: FakeIntake) -> None:
    result = run_backend(job_args(), backend_env(fake_intake.device_uri), stdin=b"")
    assert result.returncode == 0, result.stderr
    request = only_request(fake_intake)
    assert request.complete and request.size == 0


def test_options_parser_handles_quotes_escapes_and_collections() -> None:
    parsed = proxyprint.parse_options(
        "a=1 b='x y' c=\"q r\" d=x\\ y media-col={media-size={x-dimension=1 y-dimension=2}} e"
    )
    assert parsed == {
        "a": "1",
        "b": "x y",
        "c": "q r",
        "d": "x y",
        "media-col": "{media-size={x-dimension=1 y-dimension=2}}",
        "e": "true",
    }


def test_environment_and_arguments_are_decoded_as_os_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROXYPRINT_TEST_VALUE", "caf\u00e9 \udcff")  # not UTF-8 in the C locale
    assert proxyprint.environment() == dict(os.environ)
    for arg in ["plain", "caf\u00e9", "Caf\udce9 \udcff report", "\U0001f600"]:
        expected = os.fsencode(arg).decode("utf-8", "surrogateescape")
        assert proxyprint.as_utf8(arg) == expected


# --- JSON without the json module ---------------------------------------------------------

TRICKY_STRINGS = [
    "",
    "plain ASCII",
    'quote " and backslash \\ and slash /',
    '\\"\\\\"',
    "\b\f\n\r\t",
    "".join(map(chr, range(0x20))) + "\x7f",
    "\x00nul in the middle\x00",
    "caf\u00e9 \u00ff \u0100 \u07ff \u0800 \uffff",
    "\u2028\u2029 line separators",
    "\U0001f600 \U00010000 \U0010ffff non-BMP",
    "Caf\udce9 \udcff report",  # surrogateescape: lone low surrogates
    "\ud800 \udbff lone high surrogates",
    "\ud83d\ude00 a surrogate pair as two code points",
    "\udc00\ud800 reversed pair",
    "ends with a lone surrogate \ud834",
]
# What the metadata may hold; the encoder refuses the rest.
json_scalars = st.none() | st.booleans() | st.integers() | st.text(st.characters(codec=None))
any_code_point = st.characters(exclude_categories=())  # surrogates included


@pytest.mark.parametrize("text", TRICKY_STRINGS)
def test_json_string_is_json_dumps_ensure_ascii(text: str) -> None:
    expected = json.dumps(text, ensure_ascii=True)
    assert proxyprint.json_string(text) == expected
    assert proxyprint.json_string(text).isascii()
    # Decoding joins a high+low surrogate pair written as two code points; json too.
    assert proxyprint.parse_json(expected.encode()) == json.loads(expected)


@given(st.text(any_code_point))
def test_json_string_matches_json_dumps_on_any_text(text: str) -> None:
    assert proxyprint.json_string(text) == json.dumps(text, ensure_ascii=True)


@given(st.dictionaries(st.text(any_code_point), json_scalars | st.text(any_code_point)))
def test_json_text_matches_json_dumps_on_metadata_like_objects(meta: dict[str, object]) -> None:
    expected = json.dumps(meta, ensure_ascii=True, separators=(",", ":"))
    assert proxyprint.json_text(meta) == expected


def test_json_text_of_the_metadata_and_its_base64() -> None:
    meta: dict[str, object] = {
        "printer": "pp-direct",
        "job_id": 42,
        "job_uuid": None,
        "user": "zo\u00eb",
        "title": 'Caf\udce9 "quoted" \\ \U0001f5a8',
        "copies": 3,
        "flag": True,
        "other": False,
        "nested": {"big": -(10**30)},
    }
    expected = json.dumps(meta, ensure_ascii=True, separators=(",", ":"))
    assert proxyprint.json_text(meta) == expected
    assert base64.b64decode(proxyprint.encode_meta(meta), validate=True) == expected.encode()


@pytest.mark.parametrize("value", [1.5, [1], (1,), b"x", {1: "int key"}, object()])
def test_json_text_refuses_what_the_metadata_never_holds(value: object) -> None:
    with pytest.raises(TypeError):
        proxyprint.json_text(value)


json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values, st.booleans(), st.sampled_from([None, 0, 2]))
def test_parse_json_reads_what_json_dumps_writes(
    value: object, ascii_only: bool, indent: int | None
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    # A raw lone surrogate is not UTF-8: no HTTP answer can carry one unescaped.
    assume(ascii_only or not any(0xD800 <= ord(c) <= 0xDFFF for c in text))
    parsed = proxyprint.parse_json(f" \n{text}\t\r\n".encode())
    assert parsed == json.loads(text)


@pytest.mark.parametrize(
    "body",
    [
        b'{"print_in": 7, "duplicate": false, "status": "pending"}',
        b'{"error": {"code": "unknown-printer", "message": "who is \\"pp\\"? \\u00e9\\/"}}',
        b'{"a": [1, -2, 3.5, -0.25e-3, 1E2, true, null, [], {}], "b": "\\ud83d\\ude00"}',
        b'"\\ud800 lone" ',
        b"[]",
        '{"s": "caf\u00e9 \U0001f600"}'.encode(),
    ],
)
def test_parse_json_answer_bodies(body: bytes) -> None:
    assert proxyprint.parse_json(body) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"<html>502 Bad Gateway</html>",
        b'{"a": 1',
        b'{"a" 1}',
        b'{"a": 1,}',
        b"{a: 1}",
        b"[1 2]",
        b'{"a": 1} trailing',
        b'"unterminated',
        b'"bad escape \\x"',
        b'"bad unicode \\u12G4"',
        b'"short unicode \\u12"',
        b"tru",
        b"-",
        b"\xff\xfe not UTF-8",
    ],
)
def test_parse_json_refuses_what_is_not_json(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        proxyprint.parse_json(body)


@pytest.mark.parametrize(
    ("uri", "unix", "host", "port"),
    [
        ("proxyprint:/run/proxyprint/intake.sock", "/run/proxyprint/intake.sock", None, None),
        ("proxyprint:///run/proxyprint/intake.sock", "/run/proxyprint/intake.sock", None, None),
        ("proxyprint://127.0.0.1:6311", None, "127.0.0.1", 6311),
        ("proxyprint://[::1]:6311/", None, "::1", 6311),
        ("proxyprint://intake.example.org:6311", None, "intake.example.org", 6311),
    ],
)
def test_device_uri_forms(uri: str, unix: str | None, host: str | None, port: int | None) -> None:
    target = proxyprint.parse_device_uri(uri)
    assert target.unix_path == unix
    if unix is None:
        assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize(
    "uri", ["", "ipp://x/", "proxyprint:", "proxyprint:relative.sock", "proxyprint://host"]
)
def test_bad_device_uri_stops_the_queue(fake_intake: FakeIntake, uri: str) -> None:
    result = run_backend(job_args(), backend_env(uri), stdin=b"x")
    assert result.returncode == BackendStatus.STOP
    assert "ERROR: The proxyprint queue is misconfigured" in result.stderr


# --- answers and exit codes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer", "code", "says"),
    [
        (201, {"print_in": 7, "duplicate": False, "status": "pending"}, 0, "print-in 7"),
        (200, {"print_in": 7, "duplicate": True, "status": "held"}, 0, "already received"),
        (404, {"error": {"code": "unknown-printer", "message": "?"}}, 5, "does not know"),
        (404, {"error": {"code": "not-found", "message": "no route"}}, 5, "refused this job"),
        (401, {"error": {"code": "unauthorized", "message": "bad secret"}}, 4, "secret"),
        (403, {"error": {"code": "forbidden", "message": "no"}}, 4, "secret"),
        (400, {"error": {"code": "bad-request", "message": "bad meta"}}, 5, "bad meta"),
        (413, {"error": {"code": "too-large", "message": "too big"}}, 5, "refused this job"),
        (429, {"error": {"code": "busy", "message": "slow down"}}, 6, "retry"),
        (500, {"error": {"code": "internal", "message": "db down"}}, 6, "db down"),
        (503, {"error": {"code": "database-busy", "message": "locked"}}, 6, "retry"),
        (507, {"error": {"code": "spool-full", "message": "no room"}}, 6, "spool is full"),
    ],
)
def test_answer_maps_to_exit_code(
    fake_intake: FakeIntake, status: int, answer: dict[str, object], code: int, says: str
) -> None:
    fake_intake.behaviour.status = status
    fake_intake.behaviour.answer = answer
    result = run_backend(job_args(), backend_env(fake_intake.device_uri), stdin=b"%PDF-1.4\n")

    assert result.returncode == code, result.stderr
    assert result.returncode != BackendStatus.STOP or status in (401, 403)
    assert says in result.stderr
    assert ("INFO:" if code == 0 else "ERROR:") in result.stderr
    assert only_request(fake_intake).complete


def test_missing_socket_means_retry(short_tmp: Path) -> None:
    uri = f"proxyprint:{short_tmp / 'no-such.sock'}"
    result = run_backend(job_args(), backend_env(uri), stdin=b"x")
    assert result.returncode == BackendStatus.RETRY
    assert "ERROR: Cannot connect to the intake" in result.stderr


def test_refused_tcp_connection_means_retry() -> None:
    uri = f"proxyprint://127.0.0.1:{free_tcp_port()}"
    result = run_backend(
        job_args(), backend_env(uri, PROXYPRINT_INTAKE_SECRET=TCP_SECRET), stdin=b"x"
    )
    assert result.returncode == BackendStatus.RETRY
    assert "Connection refused" in result.stderr


@pytest.mark.parametrize("raw", [None, b"garbage\r\n\r\n", b"HTTP/1.1 20"])
def test_no_or_malformed_answer_means_retry(fake_intake: FakeIntake, raw: bytes | None) -> None:
    fake_intake.behaviour.close_without_answer = raw is None
    fake_intake.behaviour.raw_answer = raw
    result = run_backend(job_args(), backend_env(fake_intake.device_uri), stdin=b"x" * 1000)
    assert result.returncode == BackendStatus.RETRY, result.stderr
    assert "ERROR:" in result.stderr


def test_a_hand_off_without_an_answer_is_resent_as_such_once(
    fake_intake: FakeIntake, tmp_path: Path
) -> None:
    """No answer after the document went (the service may have recorded it):
    RETRY, and a mark in TMPDIR makes CUPS's retry say ``resent`` (a duplicate
    for the intake, never a reprint). The first answer clears the mark: a later
    run of the same job (``lp -H restart``) is not ``resent``. Nothing sent
    (no intake to connect to): no mark."""
    env = backend_env(fake_intake.device_uri, TMPDIR=str(tmp_path))
    mark = tmp_path / f"proxyprint-sent-{UUID.rpartition(':')[2]}"
    fake_intake.behaviour.close_without_answer = True
    lost = run_backend(job_args(), env, stdin=b"x" * 1000)
    assert lost.returncode == BackendStatus.RETRY, lost.stderr
    assert mark.exists()
    fake_intake.behaviour.close_without_answer = False
    again = run_backend(job_args(), env, stdin=b"x" * 1000)
    assert again.returncode == 0, again.stderr
    restart = run_backend(job_args(), env, stdin=b"x" * 1000)
    assert restart.returncode == 0, restart.stderr
    metas = [r.meta or {} for r in fake_intake.requests]
    assert [m.get("resent") for m in metas] == [None, True, None]
    assert not mark.exists()

    nowhere = backend_env(f"proxyprint:{tmp_path / 'none.sock'}", TMPDIR=str(tmp_path))
    refused = run_backend(job_args(), nowhere, stdin=b"x")
    assert refused.returncode == BackendStatus.RETRY
    assert not mark.exists()


def test_chunked_answer_read_in_pieces(fake_intake: FakeIntake) -> None:
    """A chunked answer body after a long head."""
    body = json.dumps({"print_in": 99, "duplicate": True, "message": "caf\u00e9"}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:]))
    padding = b"".join(b"X-Padding-%d: %s\r\n" % (i, b"p" * 100) for i in range(300))
    fake_intake.behaviour.raw_answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
        + padding
        + b"\r\n"
        + chunks
        + b"0\r\n\r\n"
    )
    result = run_backend(job_args(), backend_env(fake_intake.device_uri), stdin=b"x" * 1000)
    assert result.returncode == 0, result.stderr
    assert "Job accepted as print-in 99 (already received)" in result.stderr


def test_exchange_reads_answers_in_small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recv-based reader: lines and bodies split across many reads."""
    monkeypatch.setattr(proxyprint, "RECV_SIZE", 7)
    body = b'{"print_in": 5, "duplicate": false}'
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conv = proxyprint.Exchange(ours)
        assert not conv.answer_waiting()
        theirs.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert conv.wait_continue() is None
        assert not conv.answer_waiting()
        theirs.sendall(
            b"HTTP/1.1 201 Created Here\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        theirs.close()
        assert conv.answer_waiting()
        answer = conv.read_answer(upload_complete=True)
        assert (answer.status, answer.reason, answer.body) == (201, "Created Here", body)
        assert conv.readline(100) == b""
        assert conv.answer_waiting()  # the service closed: nothing more to wait for


def test_exchange_readline_stops_at_the_limit() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"0123456789\nrest")
        theirs.close()
        conv = proxyprint.Exchange(ours)
        assert conv.readline(4) == b"0123"
        assert conv.readline(100) == b"456789\n"
        assert conv.readline(100) == b"rest"
        assert conv.read(10) == b""


def test_wait_continue_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxyprint, "CONTINUE_TIMEOUT", 0.05)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(proxyprint.SEND_TIMEOUT)
        conv = proxyprint.Exchange(ours)
        assert conv.wait_continue() is None
        assert ours.gettimeout() == proxyprint.SEND_TIMEOUT


def test_size_line_fits_the_room_in_front_of_a_block() -> None:
    """send_body writes the chunk size line in the page before the block."""
    assert len(b"%x\r\n" % proxyprint.BLOCK_SIZE) <= mmap.PAGESIZE


def test_refusal_before_the_body_sends_no_document(fake_intake: FakeIntake) -> None:
    fake_intake.behaviour.answer_before_body = True
    fake_intake.behaviour.status = 404
    fake_intake.behaviour.answer = {"error": {"code": "unknown-printer", "message": "who?"}}
    result = run_backend(job_args(), backend_env(fake_intake.device_uri), stdin=b"x" * 500_000)

    assert result.returncode == BackendStatus.CANCEL  # this job alone, the queue runs
    assert "does not know the printer 'pp-direct'" in result.stderr
    request = only_request(fake_intake)
    assert request.size == 0 and not request.complete


def test_answer_in_the_middle_of_the_body_stops_the_upload(
    fake_intake: FakeIntake, short_tmp: Path
) -> None:
    fake_intake.behaviour.answer_after_bytes = 1 << 20
    fake_intake.behaviour.status = 413
    big = sparse_file(short_tmp, 256 << 20)
    result = run_backend(job_args(file=big), backend_env(fake_intake.device_uri))

    assert result.returncode == BackendStatus.CANCEL, result.stderr
    assert "413" in result.stderr
    request = only_request(fake_intake)
    assert not request.complete and request.size < 256 << 20


# --- TCP and its secret ----------------------------------------------------------------------


def test_tcp_with_secret_from_the_environment(fake_intake_tcp: FakeIntake) -> None:
    env = backend_env(fake_intake_tcp.device_uri, PROXYPRINT_INTAKE_SECRET=TCP_SECRET)
    result = run_backend(job_args(), env, stdin=b"%PDF-1.4\n")

    assert result.returncode == 0, result.stderr
    request = only_request(fake_intake_tcp)
    assert "x-proxyprint-secret" not in request.headers  # never the secret itself
    assert request.headers["x-proxyprint-signature"].startswith("v1=")
    assert request.headers["host"] == f"127.0.0.1:{fake_intake_tcp.port}"
    assert bytes(request.body) == b"%PDF-1.4\n"


def test_tcp_with_secret_from_a_file(fake_intake_tcp: FakeIntake, short_tmp: Path) -> None:
    secret_file = short_tmp / "intake.secret"
    secret_file.write_text(TCP_SECRET + "\n")
    env = backend_env(fake_intake_tcp.device_uri, PROXYPRINT_INTAKE_SECRET_FILE=str(secret_file))
    result = run_backend(job_args(), env, stdin=b"x")
    assert result.returncode == 0, result.stderr


def test_tcp_with_a_wrong_secret_stops_the_queue(fake_intake_tcp: FakeIntake) -> None:
    env = backend_env(fake_intake_tcp.device_uri, PROXYPRINT_INTAKE_SECRET="guess" * 8)
    result = run_backend(job_args(), env, stdin=b"x" * 100_000)
    assert result.returncode == BackendStatus.STOP
    assert "refused the shared secret" in result.stderr
    assert only_request(fake_intake_tcp).size == 0


def test_tcp_without_any_secret_stops_before_connecting(
    fake_intake_tcp: FakeIntake, short_tmp: Path
) -> None:
    missing = str(short_tmp / "none.secret")
    env = backend_env(fake_intake_tcp.device_uri, PROXYPRINT_INTAKE_SECRET_FILE=missing)
    result = run_backend(job_args(), env, stdin=b"x")
    assert result.returncode == BackendStatus.STOP
    assert "cannot read the intake secret" in result.stderr
    assert fake_intake_tcp.requests == []


def test_tcp_secret_that_does_not_fit_a_header_stops(fake_intake_tcp: FakeIntake) -> None:
    env = backend_env(fake_intake_tcp.device_uri, PROXYPRINT_INTAKE_SECRET="s3\ncret" * 8)
    result = run_backend(job_args(), env, stdin=b"x")
    assert result.returncode == BackendStatus.STOP
    assert "printable ASCII" in result.stderr
    assert fake_intake_tcp.requests == []


def test_tcp_secret_shorter_than_32_bytes_stops_before_connecting(
    fake_intake_tcp: FakeIntake,
) -> None:
    env = backend_env(fake_intake_tcp.device_uri, PROXYPRINT_INTAKE_SECRET="s3cret")
    result = run_backend(job_args(), env, stdin=b"x")
    assert result.returncode == BackendStatus.STOP
    assert "at least 32" in result.stderr
    assert fake_intake_tcp.requests == []


# --- cancel, memory, start-up -------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_sigterm_aborts_the_upload_incomplete(
    fake_intake: FakeIntake, fake_intake_tcp: FakeIntake, short_tmp: Path, transport: str
) -> None:
    intake = fake_intake if transport == "unix" else fake_intake_tcp
    intake.behaviour.read_delay = 0.002  # a slow service: the backend blocks in send
    big = sparse_file(short_tmp, 512 << 20)
    env = backend_env(intake.device_uri, PROXYPRINT_INTAKE_SECRET=TCP_SECRET)
    proc = subprocess.Popen(
        backend_cmd(job_args(file=big)), env=env, cwd=REPO, stderr=subprocess.PIPE
    )
    try:
        intake.wait_for(lambda: bool(intake.requests) and intake.requests[0].size > 1 << 20)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    proc.stderr.close()

    assert code == BackendStatus.RETRY, stderr
    assert "upload aborted" in stderr
    intake.behaviour.read_delay = 0
    time.sleep(0.3)  # let the server drain what was in flight
    request = intake.requests[0]
    assert not request.complete
    assert request.answered is None
    assert request.size < 512 << 20


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def peak_rss_kib(intake: FakeIntake, size: int) -> tuple[int, int]:
    """Stream ``size`` generated bytes through a pipe (no page cache involved).

    Returns the backend's peak RSS in KiB, read from /proc while it waits for
    the answer, and the number of bytes the intake received.
    """
    peaks: list[int] = []
    intake.requests.clear()
    intake.behaviour.keep_body = False
    generator = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    assert generator.stdout is not None
    proc = subprocess.Popen(
        backend_cmd(job_args()),
        stdin=generator.stdout,
        env=backend_env(intake.device_uri),
        cwd=REPO,
        stderr=subprocess.DEVNULL,
    )
    generator.stdout.close()
    intake.behaviour.before_answer = lambda _request: peaks.append(vm_hwm_kib(proc.pid))
    assert proc.wait(timeout=120) == 0
    assert generator.wait(timeout=10) == 0
    request = only_request(intake)
    assert request.complete
    return peaks[0], request.size


def test_memory_stays_flat_for_a_1_gib_job(fake_intake: FakeIntake) -> None:
    small_peak, small_size = peak_rss_kib(fake_intake, 1 << 20)
    started = time.monotonic()
    big_peak, big_size = peak_rss_kib(fake_intake, 1 << 30)
    elapsed = time.monotonic() - started

    assert (small_size, big_size) == (1 << 20, 1 << 30)
    assert big_peak < 40 * 1024, f"peak RSS {big_peak} KiB"
    assert big_peak - small_peak < 4 * 1024, (small_peak, big_peak)
    assert elapsed < 60


def imported_modules(importtime_stderr: str) -> set[str]:
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.add(name.split(".")[0])
    return names


def assert_only_stdlib(names: set[str]) -> None:
    foreign = names - set(sys.stdlib_module_names) - {"cups_backend", cupsadmin.MODULE_NAME}
    assert not foreign, f"the backend imports {sorted(foreign)}"
    assert not names & {"aiohttp", "sqlalchemy", "proxy", "billing", "cups", "pikepdf"}


def test_module_start_up_imports_only_the_standard_library() -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-m", "cups_backend"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == DISCOVERY
    names = imported_modules(result.stderr)
    assert "cups_backend" in names
    assert_only_stdlib(names)


def test_installed_backend_runs_a_job_with_only_the_standard_library(
    fake_intake: FakeIntake, short_tmp: Path
) -> None:
    installed = cupsadmin.install_backend(short_tmp / "serverbin")
    # The installed copy's own "#!python -IS", plus -X importtime.
    cmd = [sys.executable, "-IS", "-X", "importtime", str(installed), *job_args()]
    result = subprocess.run(
        cmd,
        input=b"%PDF-1.4\n",
        env=backend_env(fake_intake.device_uri),
        capture_output=True,
        timeout=30,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "INFO: Job accepted as print-in 1" in stderr
    names = imported_modules(stderr)
    assert_only_stdlib(names)
    # Start-up: none of the costly modules, not even to write or read the JSON.
    costly = {"json", "re", "enum", "socket", "selectors", "select", "signal", "struct"}
    costly |= {"collections", "types", "typing", "functools", "http", "urllib"}
    assert not names & costly, sorted(names & costly)


def test_install_backend_is_an_executable_root_only_copy(short_tmp: Path) -> None:
    serverbin = short_tmp / "serverbin"
    first = cupsadmin.install_backend(serverbin)
    content = first.read_bytes()
    second = cupsadmin.install_backend(serverbin)

    assert first == second == serverbin / "backend" / "proxyprint"
    assert second.read_bytes() == content
    assert list((serverbin / "backend").iterdir()) == [second]  # no temp files left
    assert second.stat().st_mode & 0o777 == 0o700
    assert content.startswith(f"#!{sys.executable} -IS\n".encode())
    assert b"import aiohttp" not in content
    result = subprocess.run([str(second)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, DISCOVERY)
    # Its module: root's alone to write, imported from the byte code compiled
    # at install (a script would be compiled at every job's start).
    module_dir = serverbin / cupsadmin.MODULE_DIR
    module = module_dir / f"{cupsadmin.MODULE_NAME}.py"
    assert module.read_bytes() == (REPO / "cups_backend" / "proxyprint.py").read_bytes()
    assert module_dir.stat().st_mode & 0o777 == 0o755
    assert module.stat().st_mode & 0o777 == 0o644
    verbose = subprocess.run(
        [sys.executable, "-IS", "-v", str(second)], capture_output=True, text=True, check=False
    )
    assert verbose.returncode == 0, verbose.stderr
    cached = importlib.util.cache_from_source(str(module))
    assert f"# code object from '{cached}'" in verbose.stderr
    assert f"# wrote '{cached}'" not in verbose.stderr


def test_only_a_wrong_secret_stops_the_queue() -> None:
    """No answer about one job stops the queue: 4xx cancel that job, 5xx retry it."""
    for status in (*range(200, 208), *range(300, 309), *range(400, 452), *range(500, 512)):
        answer = proxyprint.Answer(status, "x", json.dumps({"x": 1}).encode(), True)
        code = proxyprint.decide(answer, "p")
        if status in (401, 403):
            assert code == BackendStatus.STOP
        elif status in (408, 429) or status >= 500 or 300 <= status < 400:
            assert code == BackendStatus.RETRY
        elif status >= 400:
            assert code == BackendStatus.CANCEL, status
        else:
            assert code == BackendStatus.OK
