"""Per-request authentication of the TCP intake: HMAC over the request, a time and a nonce.

A static bearer secret can be replayed by whoever saw one request; this
cannot. Each request over TCP carries (protocol ``proxyprint-v1``, also in the
README for other senders)::

    X-Proxyprint-Time: 1764754800              (Unix seconds)
    X-Proxyprint-Nonce: 5f0c...                 (16-64 of [A-Za-z0-9_-], fresh per request)
    X-Proxyprint-Signature: v1=<hex HMAC-SHA256(secret, message)>

    message = "proxyprint-v1\\n" METHOD "\\n" PATH?QUERY "\\n" TIME "\\n" NONCE "\\n" META

where META is the ``X-Proxyprint-Meta`` header's value ("" when there is
none). The service refuses (401) a bad signature, a time more than
``[intake] max_skew_secs`` away from its clock, and a nonce it has seen
within twice that window (so a replay is refused by the instance that saw
the original; a replay at another instance carries a job-uuid already
recorded, which the intake de-duplicates). The document body is not signed:
TLS (``[intake] tls_cert``) protects it on the wire. Failed attempts are
throttled per address: after ``FAILURES_ALLOWED`` in ``FAILURE_WINDOW``
seconds the address gets 429 until the window passes.

The backend (``cups_backend/proxyprint.py``) implements the sending side;
it cannot import this module (it runs as a standalone script), so the
message format is fixed here and tested against the backend.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Mapping

from ..exceptions import TooManyAttempts, Unauthorized

PROTOCOL = "proxyprint-v1"
TIME_HEADER = "X-Proxyprint-Time"
NONCE_HEADER = "X-Proxyprint-Nonce"
SIGNATURE_HEADER = "X-Proxyprint-Signature"
MIN_SECRET_BYTES = 32
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0
MAX_NONCES = 200_000  # about 100 requests a second over a 2 x 300 s window
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def message(method: str, path_qs: str, timestamp: str, nonce: str, meta: str) -> bytes:
    return "\n".join((PROTOCOL, method.upper(), path_qs, timestamp, nonce, meta)).encode(
        "utf-8", "surrogateescape"
    )


def sign(secret: str, signed: bytes) -> str:
    """The signature header's value for ``signed`` (a :func:`message`)."""
    return f"v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


class IntakeAuth:
    """Verifies signed requests; remembers nonces and failures (one per intake app)."""

    def __init__(self, secret: str, max_skew: float) -> None:
        self.secret = secret
        self.max_skew = max_skew
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._failures: dict[str, tuple[float, int]] = {}

    def check(
        self,
        *,
        address: str,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        meta: str,
        now: float | None = None,
        secret: str | None = None,
    ) -> None:
        """Raise ``Unauthorized`` (401) or ``TooManyAttempts`` (429); return when valid.

        ``secret``: the key for this request when it is not the intake's (a reader's).
        """
        now = time.time() if now is None else now
        self._throttle(address, now)
        get = headers.get
        timestamp = str(get(TIME_HEADER, ""))
        nonce = str(get(NONCE_HEADER, ""))
        given = str(get(SIGNATURE_HEADER, ""))
        signed = message(method, path_qs, timestamp, nonce, meta)
        key = self.secret if secret is None else secret
        problem = self._problem(signed, key, timestamp=timestamp, nonce=nonce, given=given, now=now)
        if problem is not None:
            self._failed(address, now)
            raise Unauthorized(f"intake request refused: {problem}")
        self._remember(nonce, now)

    def _problem(
        self, signed: bytes, key: str, *, timestamp: str, nonce: str, given: str, now: float
    ) -> str | None:
        if not key:
            return "no secret is configured for this"
        if not given:
            return f"no {SIGNATURE_HEADER} (a backend of this version signs every request)"
        if not timestamp.isdigit() or len(timestamp) > 12:
            return f"{TIME_HEADER} must be Unix seconds"
        if not _NONCE.match(nonce):
            return f"{NONCE_HEADER} must be 16-64 characters of [A-Za-z0-9_-]"
        expected = sign(key, signed)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return "bad signature (wrong secret, or the request was altered)"
        if abs(now - int(timestamp)) > self.max_skew:
            return f"stale request: its time is {int(now) - int(timestamp)} s from ours"
        if nonce in self._nonces:
            return "replayed request (nonce already used)"
        return None

    def _remember(self, nonce: str, now: float) -> None:
        horizon = now - 2 * self.max_skew
        while self._nonces and (
            len(self._nonces) >= MAX_NONCES or next(iter(self._nonces.values())) < horizon
        ):
            self._nonces.popitem(last=False)
        self._nonces[nonce] = now

    def _throttle(self, address: str, now: float) -> None:
        since, count = self._failures.get(address, (now, 0))
        if now - since > FAILURE_WINDOW:
            self._failures.pop(address, None)
            return
        if count >= FAILURES_ALLOWED:
            wait = int(FAILURE_WINDOW - (now - since)) + 1
            raise TooManyAttempts(f"too many failed attempts from {address}; retry in {wait} s")

    def _failed(self, address: str, now: float) -> None:
        since, count = self._failures.get(address, (now, 0))
        if now - since > FAILURE_WINDOW:
            since, count = now, 0
        self._failures[address] = (since, count + 1)
        if len(self._failures) > 10_000:  # many addresses: forget the oldest windows
            for key in sorted(self._failures, key=lambda k: self._failures[k][0])[:5_000]:
                del self._failures[key]
