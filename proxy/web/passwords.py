"""Password checks: local scrypt hashes, and the print server's accounts through PAM.

Local: the standard library's scrypt (memory-hard), salted, self-describing,
stored as ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`` so the cost can
rise later without invalidating old hashes. Hashing takes tens of
milliseconds of CPU: callers run it in a thread.

PAM (``[web] auth = ["local", "pam"]``): python-pam (ctypes over libpam)
runs the ``[web] pam_service`` stack, authentication then account checks
(expired or locked accounts fail). It blocks (pam_unix waits about 2 s after
a wrong password): callers run it in a thread, too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets

SCHEME = "scrypt"
LOG2_N = 14  # n = 16384: 16 MiB of memory with r = 8
R = 8
P = 1
DKLEN = 32
MAX_PASSWORD_BYTES = 1024  # longer input is refused, not hashed (CPU cost)
_MAXMEM = 64 * 1024**2
log = logging.getLogger(__name__)
# Compared against when the user has no password: same work, same answer time.
_DUMMY = "scrypt$14$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=2**log2_n,
        r=r,
        p=p,
        maxmem=_MAXMEM,
        dklen=DKLEN,
    )


def acceptable(password: str) -> str | None:
    """Why ``password`` cannot be set (None when it can)."""
    if len(password) < 8:
        return "a password needs at least 8 characters"
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        return f"a password may have at most {MAX_PASSWORD_BYTES} bytes"
    return None


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, LOG2_N, R, P)
    return f"{SCHEME}${LOG2_N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored``; a missing or malformed hash never matches.

    The work is done even then, so the answer time does not tell whether the
    user exists or has a password.
    """
    ok = stored is not None
    try:
        scheme, log2_n, r, p, salt, digest = (stored or _DUMMY).split("$")
        params = (int(log2_n), int(r), int(p))
        if scheme != SCHEME or not (10 <= params[0] <= 20 and 1 <= params[1] <= 32):
            raise ValueError(scheme)
        salt_bytes, expected = _unb64(salt), _unb64(digest)
    except ValueError:
        ok = False
        params, salt_bytes, expected = (LOG2_N, R, P), b"\0" * 16, b""
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        return False
    got = _derive(password, salt_bytes, *params)
    return hmac.compare_digest(got, expected) and ok


def pam_available() -> str | None:
    """Why PAM cannot be used here (None when libpam loads), checked at start-up."""
    try:
        import pam  # type: ignore[import-untyped]  # python-pam ships no type hints

        pam.PamAuthenticator()  # loads libpam on first use
    except (ImportError, OSError, AttributeError) as exc:
        return f"PAM cannot be loaded (python-pam and libpam0g needed): {exc}"
    return None


def verify_pam(name: str, password: str, service: str) -> bool:
    """True when the PAM stack ``service`` accepts ``name`` and ``password``.

    Blocking. The PAM account is the system's: whether ``name`` is also a
    proxyprint user, and an active one, is the caller's check.
    """
    import pam  # loaded only when PAM is configured

    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        return False
    authenticator = pam.PamAuthenticator()  # one per call: an instance is not thread-safe
    try:
        # resetcreds=False: a web sign-in establishes no system credentials.
        ok = bool(authenticator.authenticate(name, password, service=service, resetcreds=False))
    except ValueError:  # a NUL in the name or the password
        return False
    if not ok and authenticator.code not in (pam.PAM_AUTH_ERR, pam.PAM_USER_UNKNOWN):
        # Not a wrong password: the stack itself failed (e.g. not root, so
        # /etc/shadow cannot be read) or the account is expired or locked.
        log.warning("PAM %s for %r: %s", service, name, authenticator.reason)
    return ok
