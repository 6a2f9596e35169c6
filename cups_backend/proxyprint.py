"""proxyprint CUPS backend: stream one job to the proxyprint intake.

Standard library only, and only its cheap parts: CUPS starts this backend
once per job (installed as a launcher that imports this module, compiled
at install: ``proxy.cupsadmin.install_backend``).  Imported:
``_socket`` and ``binascii``; ``posix``, ``_signal``, ``io`` and ``sys`` are
loaded with the interpreter anyway.  Not ``socket`` (it pulls in
``selectors`` and ``enum``), ``signal`` (``enum``), ``json`` (``re``: about
10 ms of imports and pattern compiling), ``os`` (1.5 ms, with
``_collections_abc``), nor ``struct``, ``collections.abc``, ``types``,
``select``, ``http.client``, ``urllib``, ``dataclasses`` or ``typing``: the
metadata JSON is written, and the answer's JSON read, by small functions
below; ``mmap`` is imported when the body is sent.  Start-up (``python -X
importtime -I -S``): under 1 ms of imports over the bare interpreter's
(compiling this file, were it run as a script, would cost about 6 ms more).

Calling conventions (cups/backend.h, backend(7)):

* no arguments: print the discovery line and exit 0;
* ``proxyprint job-id user title copies options [file]``: the document is the
  file, or stdin when there is no sixth argument (the queue has filters).

The device URI comes from ``DEVICE_URI`` (``argv[0]`` is the script path):

* ``proxyprint:/run/proxyprint/intake.sock`` (also ``proxyprint:///path``):
  a Unix socket; the service may identify the caller with ``SO_PEERCRED``.
* ``proxyprint://HOST:PORT`` (or ``[v6addr]:PORT``): TCP, every request
  signed with a shared secret (HMAC-SHA256 over the method, path, metadata,
  a time and a nonce: ``X-Proxyprint-Time``/``-Nonce``/``-Signature``, the
  protocol in ``proxy.pipeline.intake_auth`` and the README), never sent
  itself; ``proxyprints://HOST:PORT``: the same over TLS, the intake's
  certificate verified against ``PROXYPRINT_INTAKE_CA`` (default
  ``/etc/proxyprint/intake-ca.pem``) and its host name; a client certificate
  (PEM with its key) from ``PROXYPRINT_INTAKE_CLIENT_CERT`` when the intake
  wants one.  A certificate that does not verify is a RETRY: nothing is sent.
  Only these paths import ``hashlib``, ``hmac``, ``time`` (and ``socket``,
  ``ssl`` for TLS).  The secret (at least 32 bytes) comes from the environment
  variable ``PROXYPRINT_INTAKE_SECRET`` (cups-files.conf ``SetEnv``, or
  tests; note that cupsd at LogLevel debug logs the backend's environment),
  else from the root-only file ``/etc/proxyprint/intake.secret`` (another
  file with ``PROXYPRINT_INTAKE_SECRET_FILE``): the production choice.  It
  is never in the URI, which ``lpstat -v`` shows to everyone.  The backend is
  installed mode 0700 and runs as root (``proxy.cupsadmin.install_backend``),
  which is what lets it read that file.

The intake protocol: ``POST /intake/v1/jobs`` over HTTP/1.1 with ``Transfer-
Encoding: chunked`` in blocks of up to 1 MiB (memory does not grow with the
job) and the metadata in ``X-Proxyprint-Meta``: base64 of an ASCII JSON
object.  Arguments are re-read as UTF-8 with ``surrogateescape`` whatever the
locale, so bytes that are not UTF-8 arrive as ``\\udcXX`` escapes for the
service to flag.  The request carries ``Expect: 100-continue``: the service
can refuse (bad secret, unknown printer, duplicate ``job_uuid``) before any
byte of the document is sent; aiohttp answers ``100 Continue`` by itself
otherwise.  With no interim answer within 5 s the body is sent anyway (RFC
9110, 10.1.1).  An answer that arrives while the body is being sent stops the
upload too.

A run whose document went but whose answer never came (the service died
between recording and answering) leaves a mark in ``TMPDIR`` (``SentMark``);
the next run of that job says ``"resent": true`` in the metadata, so that a
job the service recorded and printed meanwhile is a duplicate, not a reprint.

On the Unix socket, a document cupsd gives as a file (argv[6], a raw queue)
goes by descriptor instead (``hand_over``): the request announces
``X-Proxyprint-Document: fd`` with a one-byte body; after a ``100 Continue``
that says ``X-Proxyprint-Fd: send`` the byte is sent with the open file
attached (SCM_RIGHTS) and the service copies the file in the kernel.  A plain
``100 Continue`` (a service that would wait for a body) makes the backend hang
up before the byte and stream the document on a new connection.

Exit codes (queues are created with the error policy ``abort-job``):

====================================  =======================================
what happened                         exit code
====================================  =======================================
2xx, hold or ticket mode              OK (0): held (``INFO:`` says for what)
2xx, direct mode, ``follow``          the backend follows the print-out
                                      (``GET /intake/v1/status``, a long poll)
                                      and exits with its end: completed OK,
                                      canceled CANCEL (5), aborted FAILED (1:
                                      the CUPS job aborted, the queue runs)
401, 403                              STOP (4): wrong secret, queue stopped
404, 413 and every other 4xx          CANCEL (5): this job alone is refused
                                      (unknown printer, too large, bad
                                      metadata); the reason is its message
408, 429, 507 (spool full), 5xx,      RETRY (6): CUPS keeps the job and tries
refused, socket missing, reset,       again after JobRetryInterval
timeout, malformed answer,
unreadable document
bad device URI, no or bad secret      STOP (4)
bad command line                      FAILED (1)
SIGTERM while uploading               RETRY (6), see below
SIGTERM while following               CANCEL (5), after ``POST
                                      /intake/v1/cancel``: the print-out is
                                      canceled (at its printer too)
====================================  =======================================

STOP never answers something one user's job did.  While following, a lost
connection (the service restarting) is retried until the service answers
again: the print-out is found again by its id and job-uuid.  Note that cupsd
aborts a job after ``JobRetryLimit`` (default 5) retries;
proxy queues want ``JobRetryLimit 0`` (no limit) in cupsd.conf.  A retry
comes JobRetryInterval (default 300 s) later, never sooner than about 10 s:
cupsd looks at held jobs about that often.

SIGTERM means cupsd canceled, held or stopped the job.  The backend closes the
connection at once *without* the terminating zero-length chunk (TCP with a
reset), so the service sees an incomplete body and discards it, and exits
RETRY.  cupsd ignores the exit code of a job it has already moved out of
"processing" (scheduler/job.c ``finalize_job`` acts only on a job that would
otherwise complete).  Should a stray SIGTERM come while the job is still
processing, RETRY keeps the job, where OK would mark an undelivered job
completed and STOP would stop the queue.
"""

import _socket
import binascii
import io
import posix  # what os wraps; a CUPS backend runs on POSIX only
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import signal as _signal  # the stubs of _signal: signal.py re-exports it
    from collections.abc import Mapping
    from types import FrameType

    Env = Mapping[str, str]
else:
    import _signal

DISCOVERY_LINE = 'network proxyprint "Unknown" "proxyprint delegated print"'
INTAKE_PATH = "/intake/v1/jobs"
# The document by descriptor (local socket): announced, accepted, then the byte.
FD_HEADER = "X-Proxyprint-Document"
FD_READY_HEADER = "x-proxyprint-fd"  # in the 100 Continue; header names read lower-case
FD_BODY = b"F"
BLOCK_SIZE = 1024 * 1024
SECRET_ENV = "PROXYPRINT_INTAKE_SECRET"
SECRET_FILE_ENV = "PROXYPRINT_INTAKE_SECRET_FILE"
DEFAULT_SECRET_FILE = "/etc/proxyprint/intake.secret"
CA_ENV = "PROXYPRINT_INTAKE_CA"
DEFAULT_CA_FILE = "/etc/proxyprint/intake-ca.pem"
CLIENT_CERT_ENV = "PROXYPRINT_INTAKE_CLIENT_CERT"  # PEM: certificate and key (optional)
MIN_SECRET_BYTES = 32
SIGNING = "proxyprint-v1"  # proxy.pipeline.intake_auth: the same message, byte for byte
CONNECT_TIMEOUT = 15.0
CONTINUE_TIMEOUT = 5.0
# Inactivity limit while sending: the service reads as fast as it spools.
SEND_TIMEOUT = 120.0
# The service answers after spooling, counting pages and one DB transaction.
ANSWER_TIMEOUT = 600.0
MAX_HEAD = 64 * 1024
MAX_ANSWER_BODY = 1024 * 1024
RECV_SIZE = 64 * 1024
USER_AGENT = "proxyprint-backend/1"
# A hand-off without an answer leaves this mark (TMPDIR, cupsd's TempDir), so
# that CUPS's retry of the job says "resent" (see ``SentMark``).
SENT_MARK_PREFIX = "proxyprint-sent-"
# struct linger {int l_onoff; int l_linger;} = {1, 0}: close() resets.
LINGER_RESET = (1).to_bytes(4, sys.byteorder) + (0).to_bytes(4, sys.byteorder)
# What os.fsencode and os.environ use.
FS_ENCODING = sys.getfilesystemencoding()
FS_ERRORS = sys.getfilesystemencodeerrors()


class BackendStatus:
    """The exit codes of cups/backend.h (``cups_backend_t``); plain ints, no enum."""

    OK = 0
    FAILED = 1
    AUTH_REQUIRED = 2
    HOLD = 3
    STOP = 4
    CANCEL = 5
    RETRY = 6
    RETRY_CURRENT = 7


class JobTerminated(Exception):
    """cupsd sent SIGTERM: the job was canceled (or held, or cupsd stops)."""


class IntakeUnreachable(Exception):
    """The intake cannot be reached or broke the exchange: retry later."""


class DocumentUnreadable(Exception):
    """The spool file or the filter pipe failed while reading: retry later."""


class ConfigProblem(Exception):
    """The device URI or the secret is unusable: an admin must fix the queue."""


class Target:
    """Where the intake listens: a Unix socket path, or a TCP host and port."""

    __slots__ = ("cafile", "client_cert", "host", "port", "tls", "unix_path")

    def __init__(
        self, unix_path: str | None, host: str = "localhost", port: int = 0, tls: bool = False
    ) -> None:
        self.unix_path = unix_path
        self.host = host
        self.port = port
        self.tls = tls
        self.cafile = DEFAULT_CA_FILE  # TLS: the CA that signed the intake's certificate
        self.client_cert = ""  # TLS: our certificate and key, when the intake wants one

    def __str__(self) -> str:
        return self.unix_path if self.unix_path is not None else f"{self.host}:{self.port}"

    def host_header(self) -> str:
        if self.unix_path is not None:
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Job:
    """The command line of one job, strings re-read as UTF-8."""

    __slots__ = ("copies", "file", "job_id", "options", "title", "user")

    def __init__(self, argv: list[str]) -> None:
        if len(argv) not in (6, 7):
            raise ValueError("expected job-id user title copies options [file]")
        self.job_id = int(argv[1])
        self.user = as_utf8(argv[2])
        self.title = as_utf8(argv[3])
        self.copies = int(argv[4])
        self.options = as_utf8(argv[5])
        self.file = argv[6] if len(argv) == 7 else None


class Answer:
    """The intake's final HTTP answer."""

    __slots__ = ("body", "reason", "status", "timing", "upload_complete")

    def __init__(
        self, status: int, reason: str, body: bytes, upload_complete: bool, timing: str = ""
    ) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.upload_complete = upload_complete
        self.timing = timing  # the intake's Server-Timing: where its time went


def log(level: str, message: str) -> None:
    """One message line for cupsd (INFO, ERROR, DEBUG, STATE...)."""
    sys.stderr.write(f"{level}: {message}\n")
    sys.stderr.flush()


# --- command line, options, metadata ----------------------------------------


def as_utf8(arg: str) -> str:
    """The argument's original bytes read as UTF-8, bad bytes as surrogates."""
    return arg.encode(FS_ENCODING, FS_ERRORS).decode("utf-8", "surrogateescape")  # os.fsencode


def environment() -> dict[str, str]:
    """``os.environ`` (decoded the same way) as a plain dict."""
    return {
        name.decode(FS_ENCODING, "surrogateescape"): value.decode(FS_ENCODING, "surrogateescape")
        for name, value in posix.environ.items()
    }


def parse_options(text: str) -> dict[str, str]:
    """Split a CUPS options string (``a=1 b='x y' c={d=1 e=2}``) like cupsParseOptions."""
    options: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        start = i
        while i < n and not text[i].isspace() and text[i] != "=":
            i += 1
        name = text[start:i]
        value = "true"
        if i < n and text[i] == "=":
            value, i = _option_value(text, i + 1)
        if name:
            options[name] = value
    return options


def _option_value(text: str, i: int) -> tuple[str, int]:
    """One value from ``text[i]`` on: quotes, backslash escapes, {} nesting."""
    out: list[str] = []
    quote = ""
    depth = 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "\\" and i < len(text):
            out.append(text[i])
            i += 1
        elif quote:
            if ch == quote:
                quote = ""
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch.isspace() and depth <= 0:
            break
        else:
            depth += (ch == "{") - (ch == "}")
            out.append(ch)
    return "".join(out), i


def job_meta(job: Job, env: "Env") -> dict[str, object]:
    """The metadata object of the intake protocol (``X-Proxyprint-Meta``)."""
    options = parse_options(job.options)
    printer = env.get("PRINTER")
    return {
        "printer": as_utf8(printer) if printer is not None else None,
        "job_id": job.job_id,
        "job_uuid": options.get("job-uuid"),
        "user": job.user,
        "title": job.title,
        "copies": job.copies,
        "options": job.options,
        "content_type": env.get("CONTENT_TYPE") or None,
        "host": options.get("job-originating-host-name"),
    }


def encode_meta(meta: dict[str, object]) -> str:
    """base64 (standard alphabet) of ASCII JSON: surrogates stay ``\\udcXX``."""
    raw = json_text(meta).encode("ascii")
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


# --- JSON, without the json module ------------------------------------------------

JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
JSON_UNESCAPES = {"/": "/", **{v[1]: k for k, v in JSON_ESCAPES.items()}}
JSON_SPACE = " \t\n\r"
HEX_DIGITS = "0123456789abcdefABCDEF"
NUMBER_CHARS = "+-.0123456789eE"


def json_text(value: object) -> str:
    """``json.dumps(value, ensure_ascii=True, separators=(",", ":"))``.

    For what the metadata holds: dicts with string keys, strings, ints
    (bools), None.
    """
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, str):
        return json_string(value)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON keys must be strings, not {type(key).__name__}")
            items.append(f"{json_string(key)}:{json_text(item)}")
        return "{" + ",".join(items) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as JSON metadata")


def json_string(text: str) -> str:
    """A JSON string in pure ASCII, as ``json.dumps(text, ensure_ascii=True)``.

    Escaped: ``"``, ``\\``, control characters, DEL and every non-ASCII code
    point as ``\\uXXXX`` (lower-case hex; beyond the BMP as a surrogate pair;
    lone surrogates, such as surrogateescape's ``\\udcXX``, as themselves).
    """
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return '"' + "".join(map(_json_char, text)) + '"'


def _json_char(ch: str) -> str:
    escaped = JSON_ESCAPES.get(ch)
    if escaped is not None:
        return escaped
    code = ord(ch)
    if 0x20 <= code < 0x7F:
        return ch
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"


def parse_json(body: bytes) -> object:
    """The JSON value of a UTF-8 answer body; ValueError if it is not JSON.

    Like ``json.loads``, a little more lenient: control characters in strings
    and numbers such as ``+1`` or ``01`` pass; ``NaN`` and ``Infinity`` do not.
    """
    text = body.decode("utf-8")
    value, end = _json_value(text, _json_space(text, 0))
    if _json_space(text, end) != len(text):
        raise ValueError(f"extra data after the JSON value at {end}")
    return value


def _json_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in JSON_SPACE:
        i += 1
    return i


def _json_value(text: str, i: int) -> tuple[object, int]:
    """The value starting at ``text[i]`` and the index just after it."""
    first = text[i : i + 1]
    if first == '"':
        return _json_string(text, i + 1)
    if first in ("{", "["):
        return _json_container(text, i)
    for word, value in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word, i):
            return value, i + len(word)
    end = i
    while end < len(text) and text[end] in NUMBER_CHARS:
        end += 1
    number = text[i:end]
    try:
        return (int(number) if number.lstrip("-").isdigit() else float(number)), end
    except ValueError:
        raise ValueError(f"no JSON value at {i}") from None


def _json_container(text: str, i: int) -> tuple[object, int]:
    """The object or array starting at ``text[i]``."""
    is_object = text[i] == "{"
    close = "}" if is_object else "]"
    members: dict[str, object] = {}
    elements: list[object] = []
    i = _json_space(text, i + 1)
    if text.startswith(close, i):
        return (members if is_object else elements), i + 1
    while True:
        if is_object:
            if not text.startswith('"', i):
                raise ValueError(f"expected a JSON object key at {i}")
            key, i = _json_string(text, i + 1)
            i = _json_space(text, i)
            if not text.startswith(":", i):
                raise ValueError(f"expected ':' at {i}")
            members[key], i = _json_value(text, _json_space(text, i + 1))
        else:
            value, i = _json_value(text, i)
            elements.append(value)
        i = _json_space(text, i)
        if text.startswith(close, i):
            return (members if is_object else elements), i + 1
        if not text.startswith(",", i):
            raise ValueError(f"expected ',' or {close!r} at {i}")
        i = _json_space(text, i + 1)


def _json_string(text: str, i: int) -> tuple[str, int]:
    """The string whose opening quote is just before ``text[i]``."""
    parts: list[str] = []
    while True:
        quote = text.find('"', i)
        if quote < 0:
            raise ValueError("unterminated JSON string")
        backslash = text.find("\\", i, quote)
        if backslash < 0:
            parts.append(text[i:quote])
            return "".join(parts), quote + 1
        parts.append(text[i:backslash])
        kind = text[backslash + 1 : backslash + 2]
        if kind == "u":
            code = _json_hex4(text, backslash + 2)
            i = backslash + 6
            if 0xD800 <= code < 0xDC00 and text.startswith("\\u", i):
                low = _json_hex4(text, i + 2)
                if 0xDC00 <= low < 0xE000:
                    code = 0x10000 + ((code - 0xD800) << 10 | (low - 0xDC00))
                    i += 6
            parts.append(chr(code))
        elif kind in JSON_UNESCAPES:
            parts.append(JSON_UNESCAPES[kind])
            i = backslash + 2
        else:
            raise ValueError(f"bad escape in a JSON string at {backslash}")


def _json_hex4(text: str, i: int) -> int:
    digits = text[i : i + 4]
    if len(digits) != 4 or digits.strip(HEX_DIGITS):
        raise ValueError(f"bad \\u escape in a JSON string at {i}")
    return int(digits, 16)


# --- device URI and secret ---------------------------------------------------


def parse_device_uri(uri: str) -> Target:
    """``proxyprint:/path.sock``, ``proxyprint:///path.sock``, ``proxyprint://HOST:PORT``,
    ``proxyprints://HOST:PORT`` (TLS)."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme not in ("proxyprint", "proxyprints"):
        raise ConfigProblem(f"device URI {uri!r} is not a proxyprint: URI")
    rest = rest.partition("?")[0].partition("#")[0]
    if rest.startswith("//"):
        authority, _, path = rest[2:].partition("/")
        if authority:
            return _tcp_target(authority, uri, tls=scheme == "proxyprints")
        rest = "/" + path
    if scheme == "proxyprints":
        raise ConfigProblem(f"device URI {uri!r}: proxyprints:// needs HOST:PORT")
    if not rest.startswith("/") or rest == "/":
        raise ConfigProblem(f"device URI {uri!r} needs an absolute socket path")
    return Target(unix_path=rest)


def _tcp_target(authority: str, uri: str, *, tls: bool) -> Target:
    host_port = authority.rpartition("@")[2]
    if host_port.startswith("["):
        host, _, port_text = host_port[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = host_port.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigProblem(f"device URI {uri!r} needs HOST:PORT")
    return Target(unix_path=None, host=host, port=int(port_text), tls=tls)


def read_secret(env: "Env") -> str:
    """The TCP shared secret: the environment first, then the root-only file."""
    secret = env.get(SECRET_ENV, "").strip()
    if secret:
        return secret
    path = env.get(SECRET_FILE_ENV) or DEFAULT_SECRET_FILE
    try:
        with open(path, encoding="utf-8") as fh:
            secret = fh.read().strip()
    except OSError as exc:
        raise ConfigProblem(f"cannot read the intake secret from {path}: {exc}") from exc
    if not secret:
        raise ConfigProblem(f"the intake secret file {path} is empty")
    return secret


def checked_secret(secret: str) -> str:
    """The HMAC key: printable ASCII without spaces, at least 32 bytes."""
    if not (secret.isascii() and secret.isprintable()) or " " in secret:
        raise ConfigProblem("the intake secret must be printable ASCII without spaces")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigProblem(
            f"the intake secret is {len(secret)} bytes; it needs at least {MIN_SECRET_BYTES}"
        )
    return secret


def signature_lines(secret: str, method: str, path_qs: str, meta: str) -> list[str]:
    """The headers that authenticate one request (README: the intake protocol).

    Imported here, not at the top: only TCP intakes sign, and the Unix
    socket path keeps its start-up cost.
    """
    import hashlib
    import hmac
    import time

    timestamp = str(int(time.time()))
    nonce = binascii.hexlify(posix.urandom(16)).decode("ascii")
    signed = "\n".join((SIGNING, method, path_qs, timestamp, nonce, meta))
    digest = hmac.new(
        secret.encode(), signed.encode("utf-8", "surrogateescape"), hashlib.sha256
    ).hexdigest()
    return [
        f"X-Proxyprint-Time: {timestamp}",
        f"X-Proxyprint-Nonce: {nonce}",
        f"X-Proxyprint-Signature: v1={digest}",
    ]


# --- HTTP exchange ------------------------------------------------------------


def connect(target: Target) -> _socket.socket:
    """Open the connection; any failure is IntakeUnreachable (retry)."""
    try:
        if target.unix_path is None:
            sock = _connect_tcp(target.host, target.port)
            if target.tls:
                sock = _tls(sock, target)
        else:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(target.unix_path)
            except OSError:
                sock.close()
                raise
    except OSError as exc:
        raise IntakeUnreachable(f"Cannot connect to the intake at {target}: {exc}") from exc
    sock.settimeout(SEND_TIMEOUT)
    return sock


def _tls(sock: _socket.socket, target: Target) -> _socket.socket:
    """TLS to the intake, its certificate verified against our CA file and its name.

    A certificate that does not verify is an OSError like a refused
    connection: the job is kept and retried (RETRY), nothing is sent.
    """
    import socket
    import ssl

    cafile = target.cafile
    try:
        context = ssl.create_default_context(cafile=cafile)
        if target.client_cert:
            context.load_cert_chain(target.client_cert)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise ConfigProblem(f"cannot load the TLS files ({cafile}): {exc}") from exc
    plain = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    try:
        return context.wrap_socket(plain, server_hostname=target.host)
    except BaseException:
        plain.close()
        raise


def _connect_tcp(host: str, port: int) -> _socket.socket:
    """``socket.create_connection``: each address of ``host`` in turn."""
    error: OSError | None = None
    for family, kind, proto, _name, address in _socket.getaddrinfo(
        host, port, 0, _socket.SOCK_STREAM
    ):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
        else:
            return sock
    raise error if error is not None else OSError(f"no address for {host}")


def request_head(target: Target, meta: str, secret: str | None, *, by_fd: bool = False) -> bytes:
    lines = [
        f"POST {INTAKE_PATH} HTTP/1.1",
        f"Host: {target.host_header()}",
        f"User-Agent: {USER_AGENT}",
        "Content-Type: application/octet-stream",
        *((f"{FD_HEADER}: fd", "Content-Length: 1") if by_fd else ("Transfer-Encoding: chunked",)),
        "Expect: 100-continue",
        "Connection: close",
        f"X-Proxyprint-Meta: {meta}",
    ]
    if secret is not None:
        lines += signature_lines(secret, "POST", INTAKE_PATH, meta)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class Exchange:
    """One request and its answer on a connected socket.

    What the service sends is read through one buffer (``recv``, no
    ``makefile``): the answer may come before, during or after the body.
    """

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.ended = False  # the service closed its side
        self.continue_headers: dict[str, str] = {}

    def wait_continue(self, timeout: float = CONTINUE_TIMEOUT) -> Answer | None:
        """The final answer if the service refused before the body, else None
        (the ``100 Continue``'s headers are kept in ``continue_headers``)."""
        self.sock.settimeout(timeout)
        try:
            self._receive()
        except TimeoutError:
            return None
        finally:
            self.sock.settimeout(SEND_TIMEOUT)
        while True:
            status, reason, headers = self.read_head()
            if status == 100:
                self.continue_headers = headers
                return None
            if status >= 200:
                return Answer(status, reason, self.read_body(headers), upload_complete=False)

    def send_body(self, source: io.RawIOBase) -> tuple[int, bool]:
        """Send ``source`` in chunks of up to 1 MiB: (bytes sent, body complete).

        One buffer serves every block: the chunk size line is written just
        before the data and CRLF just after it, so each block is one send and
        no copy.  The data starts on a page boundary of an anonymous mmap, the
        size line at the end of the page before it: the kernel's copies into
        and out of a page-aligned buffer took half the CPU time of a bytearray
        (whose data malloc places 16 bytes into a page): 0.36 s against 0.75 s
        per GiB read from a file and sent.

        Stops early (complete=False) when the service answers first: it looks
        before the first block and then after every BLOCK_SIZE bytes (a pipe
        gives smaller blocks; a look costs five system calls).
        """
        import mmap  # only here: the discovery run does without it

        room = mmap.PAGESIZE  # >= 8, the longest size line: "100000\r\n"
        buf = mmap.mmap(-1, room + BLOCK_SIZE + 2)
        view = memoryview(buf)
        data = view[room : room + BLOCK_SIZE]
        total = 0
        looked_at = -BLOCK_SIZE  # ``total`` when the service's side was last looked at
        while True:
            if total - looked_at >= BLOCK_SIZE:
                if self.answer_waiting():
                    return total, False
                looked_at = total
            n = read_block(source, data)
            if not n:
                self.sock.sendall(b"0\r\n\r\n")
                return total, True
            size_line = b"%x\r\n" % n
            start = room - len(size_line)
            buf[start:room] = size_line
            buf[room + n : room + n + 2] = b"\r\n"
            self.sock.sendall(view[start : room + n + 2])
            total += n

    def answer_waiting(self) -> bool:
        """Has the service sent something, or closed?  Never waits."""
        if self.buffer or self.ended:
            return True
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            self._receive()
        except BlockingIOError:
            return False
        except OSError as exc:
            ssl = sys.modules.get("ssl")  # loaded when the connection is TLS
            if ssl is not None and isinstance(exc, ssl.SSLWantReadError):
                return False
            raise
        finally:
            self.sock.settimeout(timeout)
        return True

    def read_answer(self, upload_complete: bool) -> Answer:
        """Read the final (non-1xx) answer; IntakeUnreachable if malformed."""
        self.sock.settimeout(ANSWER_TIMEOUT)
        while True:
            status, reason, headers = self.read_head()
            if status >= 200:
                body = self.read_body(headers)
                return Answer(
                    status, reason, body, upload_complete, headers.get("server-timing", "")
                )

    def read_head(self) -> tuple[int, str, dict[str, str]]:
        line = self.readline(MAX_HEAD)
        if not line:
            raise IntakeUnreachable("The intake closed the connection without an answer")
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise IntakeUnreachable(f"Malformed answer from the intake: {line[:80]!r}")
        headers: dict[str, str] = {}
        used = len(line)
        while True:
            line = self.readline(MAX_HEAD)
            used += len(line)
            if used > MAX_HEAD or not line:
                raise IntakeUnreachable("The intake's answer headers are truncated")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        reason = parts[2].strip() if len(parts) > 2 else ""
        return int(parts[1]), reason, headers

    def read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length = headers.get("content-length", "")
        limit = min(int(length), MAX_ANSWER_BODY) if length.isdigit() else MAX_ANSWER_BODY
        return self.read(limit)

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while len(body) < MAX_ANSWER_BODY:
            size_text = self.readline(1024).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise IntakeUnreachable("Malformed chunked answer from the intake") from exc
            if size == 0:
                break
            body += self.read(size)
            self.readline(16)
        return bytes(body)

    def readline(self, limit: int) -> bytes:
        """Up to and including the next LF, at most ``limit`` bytes; b"" at the end."""
        searched = 0
        while (end := self.buffer.find(b"\n", searched, limit)) < 0:
            searched = len(self.buffer)
            if searched >= limit or not self._receive():
                return self._take(limit)
        return self._take(end + 1)

    def read(self, size: int) -> bytes:
        """``size`` bytes, fewer if the service closes first."""
        while len(self.buffer) < size and self._receive():
            pass
        return self._take(size)

    def _receive(self) -> bool:
        """Append what the service sends next to the buffer; False at the end."""
        if not self.ended:
            data = self.sock.recv(RECV_SIZE)
            self.buffer += data
            self.ended = not data
        return not self.ended

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def abort(self) -> None:
        """Close without the terminating chunk; TCP with a reset (SO_LINGER 0)."""
        if self.sock.family != _socket.AF_UNIX:
            try:
                self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, LINGER_RESET)
            except OSError as exc:
                log("DEBUG", f"SO_LINGER: {exc}")
        self.close()

    def close(self) -> None:
        self.sock.close()


def read_block(source: io.RawIOBase, into: memoryview) -> int:
    try:
        return source.readinto(into) or 0
    except OSError as exc:
        raise DocumentUnreadable(f"Cannot read the document: {exc}") from exc


def exchange(sock: _socket.socket, source: io.RawIOBase, head: bytes) -> Answer:
    """Send the request and the body, return the answer; abort on any failure."""
    conv = Exchange(sock)
    try:
        sock.sendall(head)
        early = conv.wait_continue()
        if early is not None:
            conv.close()
            return early
        try:
            sent, complete = conv.send_body(source)
        except (BrokenPipeError, ConnectionResetError):
            # The service hung up mid-body; its answer may still be readable.
            sent, complete = -1, False
        log("DEBUG", f"Sent {sent} document bytes, complete={complete}")
        answer = conv.read_answer(upload_complete=complete)
    except BaseException:
        conv.abort()
        raise
    conv.close()
    return answer


class OldIntake(Exception):
    """The service does not take a document by descriptor: stream it instead."""


def hand_over(sock: _socket.socket, source: io.RawIOBase, head: bytes) -> Answer:
    """Pass the open document itself (SCM_RIGHTS) instead of its bytes.

    The request announces it (``X-Proxyprint-Document: fd``, a one-byte body);
    the service decides first, as for a streamed job, and says it takes the
    descriptor in its ``100 Continue`` (``X-Proxyprint-Fd: send``); the byte
    then travels with the descriptor, and the service copies the file into its
    spool in the kernel.  A ``100 Continue`` without that header is a service
    that would wait for a real body: the connection is dropped before the
    byte (the service discards the incomplete request) and the job streamed.
    """
    conv = Exchange(sock)
    try:
        sock.sendall(head)
        early = conv.wait_continue(SEND_TIMEOUT)
        if early is not None:
            conv.close()
            return early
        if conv.continue_headers.get(FD_READY_HEADER, "").lower() != "send":
            raise OldIntake
        rights = [
            (_socket.SOL_SOCKET, _socket.SCM_RIGHTS, source.fileno().to_bytes(4, sys.byteorder))
        ]
        sock.sendmsg([FD_BODY], rights)
        log("DEBUG", "Passed the document's descriptor")
        answer = conv.read_answer(upload_complete=True)
    except BaseException:
        conv.abort()
        raise
    conv.close()
    return answer


# --- deciding ---------------------------------------------------------------


def error_info(body: bytes) -> tuple[str, str]:
    """(code, message) of an ``{"error": {"code", "message"}}`` answer."""
    try:
        doc = parse_json(body)
    except ValueError:
        return "", body[:200].decode("utf-8", "replace").strip()
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code", "")), str(error.get("message", ""))


def decide(answer: Answer, printer: str) -> int:
    """Map a refusal (or an acceptance) to an exit code and tell CUPS why.

    Only what concerns the whole queue stops it (a wrong secret); a refusal
    of this one job (too large, bad metadata, unknown printer) cancels that
    job alone, with the reason as its message; anything passing (busy,
    database locked, spool full, 5xx) is a retry.
    """
    status = answer.status
    if answer.timing:
        log("DEBUG", f"Intake timing: {answer.timing}")
    if 200 <= status < 300:
        accepted(answer_doc(answer))
        return BackendStatus.OK
    code, message = error_info(answer.body)
    detail = f"HTTP {status} {answer.reason}".rstrip()
    if code or message:
        detail += f" ({code}: {message})" if code else f" ({message})"
    if status in (401, 403):
        log("ERROR", f"The proxyprint intake refused the shared secret: {detail}")
        return BackendStatus.STOP
    if status in (408, 429) or not 400 <= status < 500:  # 5xx; a 3xx is no answer of ours
        why = "proxyprint's spool is full" if status == 507 else "The proxyprint intake failed"
        log("ERROR", f"{why}, CUPS will retry the job: {detail}")
        return BackendStatus.RETRY
    if status == 404 and code == "unknown-printer":
        log("ERROR", f"proxyprint does not know the printer {printer!r}, job canceled: {detail}")
        return BackendStatus.CANCEL
    log("ERROR", f"proxyprint refused this job, job canceled: {detail}")
    return BackendStatus.CANCEL


def answer_doc(answer: Answer) -> dict[str, object]:
    try:
        doc = parse_json(answer.body)
    except ValueError:
        doc = None
    return doc if isinstance(doc, dict) else {}


def accepted(doc: dict[str, object]) -> None:
    suffix = " (already received)" if doc.get("duplicate") else ""
    if doc.get("reprint_of") is not None:
        suffix = f" (a reprint of print-out {doc.get('reprint_of')})"
    log("INFO", f"Job accepted as print-in {doc.get('print_in')}{suffix}")
    text = doc.get("text")
    if isinstance(text, str) and text:
        log("INFO", text)  # the job's printer-state-message while it waits


# --- following the print-out -----------------------------------------------------

STATUS_PATH = "/intake/v1/status"
CANCEL_PATH = "/intake/v1/cancel"
# The intake answers a status call once the status changes, or after this.
STATUS_WAIT = 30
RECONNECT_MAX = 10.0
CANCEL_TIMEOUT = 20.0
URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:")


def url_quote(text: str) -> str:
    return "".join(
        ch if ch in URL_SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text
    )


def small_request(
    target: Target, secret: str | None, method: str, path: str, timeout: float
) -> dict[str, object]:
    """One short request without a body; the JSON answer (IntakeUnreachable if none).

    An HTTP error answer is returned as ``{"http_status": N, ...error}``.
    """
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {target.host_header()}",
        f"User-Agent: {USER_AGENT}",
        "Content-Length: 0",
        "Connection: close",
    ]
    if secret is not None:
        lines += signature_lines(secret, method, path, "")
    sock = connect(target)
    conv = Exchange(sock)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        sock.settimeout(timeout)
        answer = conv.read_answer(upload_complete=True)
    except OSError as exc:
        raise IntakeUnreachable(f"The exchange with the intake failed: {exc}") from exc
    finally:
        conv.close()
    doc = answer_doc(answer)
    if answer.status != 200:
        code, message = error_info(answer.body)
        return {"http_status": answer.status, "code": code, "message": message}
    return doc


def follow(target: Target, secret: str | None, job_uuid: str | None, doc: dict[str, object]) -> int:
    """Stay with the job until its print-out ends, as CUPS's ipp backend does.

    The exit code tells CUPS the end: completed OK, canceled CANCEL, aborted
    FAILED (the queue's error policy abort-job: the job aborted, the queue
    running). A lost connection (the service restarting) is retried for as
    long as it takes; SIGTERM (the job canceled in CUPS) cancels the print-out.
    """
    import time  # built in; only a followed job needs it

    query = f"print_out={doc.get('print_out')}"
    if job_uuid:
        query += f"&job_uuid={url_quote(job_uuid)}"
    since = str(doc.get("status", ""))
    shown = str(doc.get("text", ""))
    pause = 0.5
    try:
        while True:
            try:
                state = small_request(
                    target,
                    secret,
                    "GET",
                    f"{STATUS_PATH}?{query}&since={url_quote(since)}&wait={STATUS_WAIT}",
                    STATUS_WAIT + 30.0,
                )
            except IntakeUnreachable as exc:
                log("INFO", f"Waiting for proxyprint to come back ({exc})")
                shown = ""
                time.sleep(pause)
                pause = min(RECONNECT_MAX, pause * 2)
                continue
            pause = 0.5
            http_status = state.get("http_status")
            if http_status == 404:
                log("ERROR", f"proxyprint no longer knows this job: {state.get('message')}")
                return BackendStatus.FAILED
            if http_status is not None:
                log("INFO", f"proxyprint answered HTTP {http_status}: {state.get('message')}")
                time.sleep(RECONNECT_MAX)
                continue
            since = str(state.get("status", ""))
            text = str(state.get("text", "") or since)
            if state.get("final"):
                return ended(since, text)
            if text != shown:
                log("INFO", text)
                shown = text
    except JobTerminated:
        return cancel_print_out(target, secret, query)


def ended(status: str, text: str) -> int:
    if status == "completed":
        log("INFO", text)
        return BackendStatus.OK
    log("ERROR", text)  # the job's printer-state-message: the reason stays visible
    return BackendStatus.CANCEL if status == "canceled" else BackendStatus.FAILED


def cancel_print_out(target: Target, secret: str | None, query: str) -> int:
    """cupsd canceled the job: cancel the print-out (and its job at the printer)."""
    try:
        state = small_request(target, secret, "POST", f"{CANCEL_PATH}?{query}", CANCEL_TIMEOUT)
    except IntakeUnreachable as exc:
        log("ERROR", f"Job canceled in CUPS, but proxyprint could not be told: {exc}")
        return BackendStatus.CANCEL
    if state.get("http_status") is not None:
        log("INFO", f"Job canceled in CUPS; proxyprint: {state.get('message')}")
    else:
        log("INFO", f"Job canceled in CUPS; the print-out is {state.get('status')}")
    return BackendStatus.CANCEL


# --- a hand-off that got no answer -------------------------------------------


class SentMark:
    """A file that says this job's document went to the intake and no answer
    came back (the service may have recorded it, then died before answering).

    CUPS retries such a job (RETRY) with the same job-uuid; by then the
    print-out may have printed and ended, and a known job-uuid whose
    print-out ended is otherwise a reprint (``lp -i N -H restart``). So the
    mark is made once the request is on its way, removed at the first answer,
    and a run that finds it tells the intake ``resent``: a duplicate, never a
    second print. Without a job-uuid (nothing to name the mark after) the
    intake treats every repeat as a duplicate anyway.
    """

    __slots__ = ("path",)

    def __init__(self, env: "Env", job_uuid: object) -> None:
        self.path = ""
        if isinstance(job_uuid, str):
            name = "".join(c for c in job_uuid.rpartition(":")[2] if c.isalnum() or c == "-")
            if name:
                directory = env.get("TMPDIR") or "/tmp"
                self.path = f"{directory.rstrip('/')}/{SENT_MARK_PREFIX}{name[:64]}"

    def found(self) -> bool:
        if not self.path:
            return False
        try:
            posix.lstat(self.path)
        except OSError:
            return False
        return True

    def make(self) -> None:
        # O_EXCL: never through a link someone else put there (root writes here).
        flags = posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW
        if self.path:
            try:
                posix.close(posix.open(self.path, flags, 0o600))
            except FileExistsError:
                pass  # marked by an earlier attempt
            except OSError as exc:  # the job still goes; only a retry's "resent" is lost
                log("DEBUG", f"Cannot mark the hand-off in {self.path}: {exc}")

    def clear(self) -> None:
        if self.path:
            try:  # noqa: SIM105 (contextlib would cost the start-up its imports)
                posix.unlink(self.path)
            except OSError:
                pass


# --- running ------------------------------------------------------------------


def open_document(job: Job) -> io.RawIOBase:
    try:
        if job.file is None:
            return io.FileIO(posix.dup(sys.stdin.fileno()), "rb")
        return io.FileIO(job.file, "rb")
    except OSError as exc:
        raise DocumentUnreadable(f"Cannot open the document: {exc}") from exc


def passable(job: Job, target: Target, source: io.RawIOBase) -> bool:
    """Can the document go by descriptor?  cupsd's own spool file (argv[6], a
    raw queue) to the local socket; a filter's pipe (stdin) and TCP stream."""
    if job.file is None or target.unix_path is None:
        return False
    try:
        return posix.fstat(source.fileno()).st_mode & 0o170000 == 0o100000  # S_ISREG
    except OSError:
        return False


def deliver(job: Job, target: Target, secret: str | None, meta: str, mark: SentMark) -> Answer:
    with open_document(job) as source:
        by_fd = passable(job, target, source)
        while True:
            log("STATE", "+connecting-to-device")
            try:
                sock = connect(target)
            finally:
                log("STATE", "-connecting-to-device")
            how = "its spool file passed" if by_fd else "streamed"
            log("INFO", f"Sending job to proxyprint ({how})")
            mark.make()  # from here on the intake may record the job
            try:
                if by_fd:
                    answer = hand_over(sock, source, request_head(target, meta, secret, by_fd=True))
                else:
                    answer = exchange(sock, source, request_head(target, meta, secret))
                mark.clear()  # answered: recorded, a duplicate, or refused
                return answer
            except OldIntake:
                log("DEBUG", "The intake does not take descriptors: streaming the document")
                by_fd = False
            except OSError as exc:
                raise IntakeUnreachable(f"The exchange with the intake failed: {exc}") from exc


def run(argv: list[str], env: "Env") -> int:
    try:
        job = Job(argv)
    except ValueError as exc:
        log("ERROR", f"Usage: proxyprint job-id user title copies options [file] ({exc})")
        return BackendStatus.FAILED
    try:
        target = parse_device_uri(env.get("DEVICE_URI", ""))
        target.cafile = env.get(CA_ENV) or DEFAULT_CA_FILE
        target.client_cert = env.get(CLIENT_CERT_ENV, "")
        secret = checked_secret(read_secret(env)) if target.unix_path is None else None
        meta = job_meta(job, env)
        mark = SentMark(env, meta.get("job_uuid"))
        if mark.found():
            meta["resent"] = True
            log("DEBUG", "Sent before without an answer: the intake is told so (no reprint)")
        answer = deliver(job, target, secret, encode_meta(meta), mark)
    except ConfigProblem as exc:
        log("ERROR", f"The proxyprint queue is misconfigured: {exc}")
        return BackendStatus.STOP
    except (IntakeUnreachable, DocumentUnreadable) as exc:
        log("ERROR", f"{exc}; CUPS will retry the job")
        return BackendStatus.RETRY
    code = decide(answer, env.get("PRINTER", ""))
    doc = answer_doc(answer) if code == BackendStatus.OK else {}
    if doc.get("follow") and doc.get("print_out") is not None:
        job_uuid = meta.get("job_uuid")
        return follow(target, secret, job_uuid if isinstance(job_uuid, str) else None, doc)
    return code


def on_sigterm(signum: int, frame: "FrameType | None") -> None:
    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)  # one cancel is enough
    raise JobTerminated


def main(argv: list[str] | None = None) -> int:
    args = sys.argv if argv is None else argv
    if len(args) == 1:
        print(DISCOVERY_LINE, flush=True)
        return BackendStatus.OK
    _signal.signal(_signal.SIGTERM, on_sigterm)
    try:
        return run(args, environment())
    except JobTerminated:
        log("INFO", "Job canceled; upload aborted")
        return BackendStatus.RETRY


if __name__ == "__main__":
    sys.exit(main())
