"""CSRF protection for every POST form (synchronizer tokens).

Signed in: the session's own token (kept in its ``web_sessions`` row) must
come back in the form's ``csrf`` field. Signing in: no session yet, so the
sign-in form carries a random value that must equal the ``pp_login`` cookie
(double submit). Either way a POST without the right token is a 403, and
nothing else of the request is looked at.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from proxy.exceptions import BadRequest, Forbidden, RequestTimeout
from proxy.keys import CONFIG

FIELD = "csrf"
LOGIN_COOKIE = "pp_login"
MAX_FORM_BYTES = 64 * 1024


class CsrfRejected(Forbidden):
    code = "csrf"


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """The urlencoded form of a POST (no files: a page form is small)."""
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise CsrfRejected("a form POST is expected")
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise BadRequest("form too large")
    try:
        async with asyncio.timeout(request.app[CONFIG].limits.body_timeout_secs):
            form = await request.post()
    except TimeoutError:
        raise RequestTimeout("the form did not arrive in time") from None
    # Only text fields: an uploaded file is no answer to any of our forms.
    return MultiDictProxy(MultiDict([(k, v) for k, v in form.items() if isinstance(v, str)]))


def check(expected: str, form: MultiDictProxy[str]) -> None:
    got = form.get(FIELD, "")
    if not expected or not hmac.compare_digest(got.encode(), expected.encode()):
        raise CsrfRejected("the form's CSRF token is missing or wrong; reload the page")
