"""An async client for OfficeRnD's v1 REST API (members, companies, plans, memberships, fees).

Auth is OAuth2 client credentials: ``POST <token_url>`` with the form fields
``client_id``, ``client_secret``, ``grant_type=client_credentials`` and
``scope`` answers ``{"access_token", "expires_in", ...}``; the bearer token is
shared by every request of the client, fetched again shortly before it
expires, and once more when the API answers 401.

Every resource is under ``{api_url}/api/v1/organizations/{org}``. Lists are
paged by cursor: ``$limit`` (at most 100) per request, and the next page is
asked with ``$next`` set to the ``rnd-cursor-next`` header of the previous
answer, until that header is absent or empty. The v1 API calls a company a
"team": a member's ``team`` is its company id.

Contracts:

* Amounts are ``Decimal``: JSON numbers are parsed with
  ``parse_float=Decimal`` and sent with ``dumps_json``, which writes a Decimal
  as its own digits (``0.30`` goes out as ``0.30``, never through a float).
  A float amount is refused.
* 429 waits ``Retry-After`` (seconds or an HTTP date; at least the backoff
  pause, at most ``max_retry_after``) and retries. 5xx, 408, connection
  errors, timeouts and bodies that are not JSON are retried with exponential
  backoff and jitter. At most ``attempts`` attempts in all, then
  ``OfficeRnDUnavailable``. Any other 4xx raises ``OfficeRnDError`` with the
  body's message at once. There is never a retry without a pause.
* **Writes (POST) get one attempt unless ``retry_writes=True``** when the
  failure is ambiguous (timeout, 5xx, a broken answer): the server may have
  created the fee and only the answer was lost, and a blind retry would
  create a second one. The fees code looks for its marker in the fee's
  ``name`` (``fees(member=...)``) before sending again: ``name`` is a
  documented fee field the API returns on read (developer.officernd.com/
  reference/fees), unlike ``description``, which the fee API does not have.
  Failures that prove nothing was applied (429, 401, connection refused) are
  retried for writes too. ``OfficeRnDUnavailable.maybe_applied`` tells which.
* ``calls`` counts attempts (HTTP requests) by ``"METHOD /path-template"``
  (``"GET /members"``, ``"POST /fees"``, ``"POST /oauth/token"``: the token
  URL's path), ``errors`` the failed attempts and ``retries`` the repeated ones.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from billing.exceptions import InvalidAmount, InvalidInput
from billing.httpclient import HttpClient, RetryPolicy, transport_detail
from billing.officernd.exceptions import (
    OfficeRnDAuthError,
    OfficeRnDError,
    OfficeRnDUnavailable,
)
from billing.officernd.models import Company, Fee, Member, Membership, Plan

__all__ = [
    "CURSOR_HEADER",
    "DEFAULT_ATTEMPTS",
    "DEFAULT_SCOPE",
    "DEFAULT_TIMEOUT",
    "MAX_PAGE_LIMIT",
    "OfficeRnDClient",
    "company_from_json",
    "dumps_json",
    "fee_to_json",
    "loads_json",
    "member_from_json",
    "membership_from_json",
    "parse_retry_after",
    "plan_from_json",
]

DEFAULT_SCOPE: Final = "officernd.api.read officernd.api.write"
DEFAULT_TIMEOUT: Final = 15.0
DEFAULT_ATTEMPTS: Final = 6
DEFAULT_BACKOFF: Final = 0.5
DEFAULT_MAX_BACKOFF: Final = 10.0
DEFAULT_MAX_RETRY_AFTER: Final = 60.0
# A token is renewed this long before it expires (at most half its lifetime).
DEFAULT_TOKEN_MARGIN: Final = 60.0
DEFAULT_EXPIRES_IN: Final = 3600.0
MAX_PAGE_LIMIT: Final = 100
CURSOR_HEADER: Final = "rnd-cursor-next"
MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
_MAX_MESSAGE_CHARS = 300
_HEADERS: Final = {"Accept": "application/json"}


# --- JSON with exact amounts --------------------------------------------------------------


def loads_json(text: str | bytes) -> Any:
    """JSON with every non-integer number as an exact ``Decimal``."""
    return json.loads(text, parse_float=Decimal)


def _encode(value: object, out: list[str]) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidAmount(f"{value} is not a finite amount")
        out.append(f"{value:f}")
    elif isinstance(value, float):
        raise InvalidAmount(f"floats are not sent to OfficeRnD ({value!r}); use a Decimal")
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise InvalidInput(f"JSON keys must be strings, got {key!r}")
            if i:
                out.append(",")
            out.append(json.dumps(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif value is None or isinstance(value, str | int | bool):
        out.append(json.dumps(value))
    else:
        raise InvalidInput(f"cannot send {type(value).__name__} as JSON")


def dumps_json(value: object) -> str:
    """JSON text with each ``Decimal`` written as its digits (a JSON number, no float).

    ``Decimal("0.30")`` becomes ``0.30``; floats and NaN/Infinity are refused.
    """
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


# --- records ------------------------------------------------------------------------------


def _ref(value: object) -> str | None:
    """An id field that may be a plain id, null, or a populated object with ``_id``."""
    if isinstance(value, Mapping):
        value = value.get("_id")
    if value is None or value == "":
        return None
    return str(value)


def _record(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping) or not isinstance(data.get("_id"), str):
        raise OfficeRnDError(f"unexpected {what} record: {str(data)[:_MAX_MESSAGE_CHARS]}")
    return data


def member_from_json(data: object) -> Member:
    """A v1 member (``_id``, ``name``, ``email``, ``status``, ``calculatedStatus``, ``team``,
    ``office``). Its plans are not here: see ``membership_from_json``."""
    rec = _record(data, "member")
    email_ = rec.get("email")
    return Member(
        id=rec["_id"],
        name=str(rec.get("name") or ""),
        email=str(email_) if email_ else None,
        status=str(rec.get("status") or ""),
        company_id=_ref(rec.get("team")),
        office_id=_ref(rec.get("office")),
        calculated_status=str(rec.get("calculatedStatus") or ""),
    )


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def membership_from_json(data: object) -> Membership:
    """A v1 membership (``_id``, ``plan``, ``member``, ``team``, ``startDate``, ``endDate``,
    ``status``, ``calculatedStatus``)."""
    rec = _record(data, "membership")
    return Membership(
        id=rec["_id"],
        plan_id=_ref(rec.get("plan")),
        member_id=_ref(rec.get("member")),
        company_id=_ref(rec.get("team")),
        start_date=_text(rec.get("startDate")),
        end_date=_text(rec.get("endDate")),
        calculated_status=str(rec.get("calculatedStatus") or ""),
        status=str(rec.get("status") or ""),
    )


def company_from_json(data: object) -> Company:
    """A v1 company ("team": ``_id``, ``name``)."""
    rec = _record(data, "company")
    return Company(id=rec["_id"], name=str(rec.get("name") or ""))


def plan_from_json(data: object) -> Plan:
    """A v1 plan (``_id``, ``name``, ``price``?)."""
    rec = _record(data, "plan")
    return Plan(id=rec["_id"], name=str(rec.get("name") or ""))


def _price(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise InvalidAmount(f"price: expected a Decimal, got {type(value).__name__}")
    price = Decimal(value)
    if not price.is_finite():
        raise InvalidAmount(f"price: {price} is not a finite amount")
    return price


def fee_to_json(fee: Fee) -> dict[str, object]:
    """The ``POST /fees`` body of a ``Fee`` (``member`` or ``team``; ``plan`` if set)."""
    if not fee.name:
        raise InvalidInput("fee: name is required")
    if fee.member_id is None and fee.company_id is None:
        raise InvalidInput("fee: a member or a company (team) is required")
    if isinstance(fee.quantity, bool) or not isinstance(fee.quantity, int) or fee.quantity < 1:
        raise InvalidInput(f"fee: quantity must be a positive int, got {fee.quantity!r}")
    body: dict[str, object] = {
        "name": fee.name,
        "price": _price(fee.price),
        "quantity": fee.quantity,
        "date": fee.date,
    }
    if fee.member_id is not None:
        body["member"] = fee.member_id
    if fee.company_id is not None:
        body["team"] = fee.company_id
    if fee.plan_id is not None:
        body["plan"] = fee.plan_id
    if fee.office_id is not None:
        body["office"] = fee.office_id  # required by the API: the server says so when missing
    body["isPersonal"] = fee.is_personal
    for key, value in fee.extra.items():
        if key in body:
            raise InvalidInput(f"fee: extra field {key!r} would replace a fee field")
        body[key] = value
    return body


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (from a number of seconds or an HTTP date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


# --- the client ---------------------------------------------------------------------------


class _Failure(Exception):
    """One failed attempt: ``safe`` when nothing can have been applied."""

    def __init__(
        self,
        reason: str,
        *,
        safe: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.safe = safe
        self.status = status
        self.retry_after = retry_after


def _message(raw: bytes) -> str:
    """The error message of an answer: ``message``/``error_description``/``error``, or its text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = loads_json(text)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        for key in ("message", "error_description", "error"):
            value = data.get(key)
            if isinstance(value, Mapping):
                value = value.get("message")
            if isinstance(value, str) and value:
                return value[:_MAX_MESSAGE_CHARS]
    return text[:_MAX_MESSAGE_CHARS] or "(no body)"


class OfficeRnDClient(HttpClient):
    """One OfficeRnD organization; ``async with OfficeRnDClient(...) as ornd: ...``.

    Session, per-attempt ``timeout``, ``attempts``, backoff and counters:
    ``billing.httpclient.HttpClient``.
    """

    def __init__(
        self,
        api_url: str,
        org: str,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str = DEFAULT_SCOPE,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        token_margin: float = DEFAULT_TOKEN_MARGIN,
        page_limit: int = MAX_PAGE_LIMIT,
        retry_writes: bool = False,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            _HEADERS, timeout, RetryPolicy(attempts, backoff, max_backoff, rng), session
        )
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be from 1 to {MAX_PAGE_LIMIT}")
        if not org or "/" in org:
            raise ValueError(f"org: {org!r} is not an organization slug")
        self.api_url = api_url.rstrip("/")
        self.org = org
        self.base_url = f"{self.api_url}/api/v1/organizations/{org}"
        self.token_url = token_url
        self._token_key = f"POST {urlsplit(token_url).path or '/'}"
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.max_retry_after = max_retry_after
        self.token_margin = token_margin
        self.page_limit = page_limit
        self.retry_writes = retry_writes
        self._token: str | None = None
        self._token_renew_at = 0.0  # time.monotonic()
        self._token_lock = asyncio.Lock()

    # --- the token ------------------------------------------------------------------------

    async def access_token(self) -> str:
        """The current bearer token, fetched when missing or about to expire."""
        if self._token is not None and time.monotonic() < self._token_renew_at:
            return self._token
        async with self._token_lock:  # one fetch for many concurrent requests
            if self._token is not None and time.monotonic() < self._token_renew_at:
                return self._token
            return await self._fetch_token()

    def invalidate_token(self, token: str | None = None) -> None:
        """Forget the token (only if it is still ``token``, when given)."""
        if token is None or token == self._token:
            self._token = None
            self._token_renew_at = 0.0

    async def _fetch_token(self) -> str:
        form = {
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "grant_type": "client_credentials",
            "scope": self.scope,
        }
        started = time.monotonic()
        data = await self._exchange(
            "POST", self._token_key, self.token_url, form=form, auth=False, write=False
        )
        token = data.get("access_token") if isinstance(data, Mapping) else None
        if not isinstance(token, str) or not token:
            raise OfficeRnDAuthError(
                "the token answer has no access_token", endpoint=self._token_key
            )
        expires_in = data.get("expires_in", DEFAULT_EXPIRES_IN)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | Decimal | str):
            expires_in = DEFAULT_EXPIRES_IN
        try:
            lifetime = max(0.0, float(expires_in))
        except ValueError:
            lifetime = DEFAULT_EXPIRES_IN
        self._token = token
        self._token_renew_at = started + lifetime - min(self.token_margin, lifetime / 2)
        return token

    # --- one request, with its retries ----------------------------------------------------

    async def _exchange(
        self,
        method: str,
        key: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        form: Mapping[str, str] | None = None,
        auth: bool = True,
        write: bool = False,
        headers_out: dict[str, str] | None = None,
    ) -> Any:
        """The parsed JSON answer of one request (``headers_out`` gets its headers)."""
        data: str | None = None if body is None else dumps_json(body)
        ambiguous_attempts = self.attempts if (self.retry_writes or not write) else 1
        attempt = 0
        reauthorized = False
        while True:
            attempt += 1
            token = await self.access_token() if auth else None
            self.calls[key] += 1
            try:
                return await self._attempt(
                    method,
                    key,
                    url,
                    params=params,
                    data=data,
                    form=form,
                    token=token,
                    headers_out=headers_out,
                )
            except _Failure as failure:
                self.errors[key] += 1
                if failure.status == 401 and auth and not reauthorized:
                    # The token expired early or was revoked: a new one, once.
                    # A 401 is refused before anything is applied, so this
                    # attempt does not count against the bound.
                    reauthorized = True
                    self.invalidate_token(token)
                    self.retries[key] += 1
                    attempt -= 1
                    continue
                if failure.status == 401:
                    raise OfficeRnDAuthError(
                        f"{key}: the API refused a new token: {failure.reason}",
                        endpoint=key,
                        status=401,
                    ) from None
                limit = self.attempts if failure.safe else ambiguous_attempts
                if attempt >= limit:
                    raise OfficeRnDUnavailable(
                        key,
                        failure.reason,
                        attempts=attempt,
                        status=failure.status,
                        maybe_applied=write and not failure.safe,
                    ) from failure.__cause__
                wait = failure.retry_after
                await self._backoff(
                    key, attempt, at_least=None if wait is None else min(wait, self.max_retry_after)
                )

    async def _attempt(
        self,
        method: str,
        key: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        data: str | None,
        form: Mapping[str, str] | None,
        token: str | None,
        headers_out: dict[str, str] | None,
    ) -> Any:
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._http().request(
                method,
                url,
                params=params,
                data=data.encode("utf-8") if data is not None else form,
                headers=headers,
                timeout=self._attempt_timeout(),
            ) as response:
                status = response.status
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                answer_headers = dict(response.headers)
        except aiohttp.ClientConnectorError as exc:  # nothing was sent
            raise _Failure(f"{type(exc).__name__}: {exc}", safe=True) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Failure(transport_detail(exc), safe=False) from exc
        if status == 429:
            wait = parse_retry_after(answer_headers.get("Retry-After"))
            raise _Failure("HTTP 429 (rate limited)", safe=True, status=429, retry_after=wait)
        if status >= 500 or status == 408:
            raise _Failure(f"HTTP {status}: {_message(raw)}", safe=False, status=status)
        if status == 401 and token is not None:
            raise _Failure(_message(raw), safe=True, status=401)
        if status >= 400 or status < 200:
            error = OfficeRnDAuthError if token is None and status in (400, 401, 403) else None
            cls = error or OfficeRnDError
            raise cls(f"{key}: HTTP {status}: {_message(raw)}", endpoint=key, status=status)
        if len(raw) > MAX_RESPONSE_BYTES:
            raise _Failure(f"answer larger than {MAX_RESPONSE_BYTES} bytes", safe=False)
        if headers_out is not None:
            headers_out.clear()
            headers_out.update(answer_headers)
        if not raw.strip():
            return None
        try:
            return loads_json(raw)
        except ValueError as exc:
            raise _Failure(f"answer is not JSON: {exc}", safe=False, status=status) from exc

    async def request(
        self,
        method: str,
        path: str,
        *,
        template: str | None = None,
        params: Mapping[str, str] | None = None,
        body: object = None,
        headers_out: dict[str, str] | None = None,
    ) -> Any:
        """``method`` on ``{base}/{path}`` (e.g. ``"GET", "/members"``): the parsed answer.

        ``template`` names the call in the counters (default: ``path``). Any
        method but GET is a write (see the module doc).
        """
        key = f"{method} {template or path}"
        return await self._exchange(
            method,
            key,
            self.base_url + path,
            params=params,
            body=body,
            write=method != "GET",
            headers_out=headers_out,
        )

    async def list_all(self, path: str, params: Mapping[str, str] | None = None) -> list[Any]:
        """Every item of a paged list (``$limit`` / ``$next`` / ``rnd-cursor-next``)."""
        items: list[Any] = []
        query = dict(params or {})
        query["$limit"] = str(self.page_limit)
        seen: set[str] = set()
        while True:
            headers: dict[str, str] = {}
            page = await self.request("GET", path, params=query, headers_out=headers)
            if isinstance(page, Mapping) and isinstance(page.get("results"), list):
                page = page["results"]  # the v2 envelope, should an endpoint use it
            if not isinstance(page, list):
                raise OfficeRnDError(
                    f"GET {path}: expected a list, got {type(page).__name__}",
                    endpoint=f"GET {path}",
                )
            items += page
            cursor = next((v for k, v in headers.items() if k.lower() == CURSOR_HEADER), "").strip()
            if not cursor:
                return items
            if cursor in seen:
                raise OfficeRnDError(
                    f"GET {path}: the cursor {cursor!r} came back twice", endpoint=f"GET {path}"
                )
            seen.add(cursor)
            query["$next"] = cursor

    # --- resources ------------------------------------------------------------------------

    async def members(self) -> list[Member]:
        """All members (``GET /members``, every page)."""
        return [member_from_json(m) for m in await self.list_all("/members")]

    async def companies(self) -> list[Company]:
        """All companies (``GET /companies``; the v1 "teams")."""
        return [company_from_json(c) for c in await self.list_all("/companies")]

    async def plans(self) -> list[Plan]:
        """All plans (``GET /plans``)."""
        return [plan_from_json(p) for p in await self.list_all("/plans")]

    async def memberships(self, *, member: str | None = None) -> list[Membership]:
        """All memberships (``GET /memberships``), or one member's (``?member=``)."""
        params = {"member": member} if member is not None else None
        return [membership_from_json(m) for m in await self.list_all("/memberships", params)]

    @staticmethod
    def _created(answer: object, key: str) -> Mapping[str, Any]:
        """The created record: the answer is an object or a list of objects."""
        if isinstance(answer, list):
            if not answer:
                raise OfficeRnDError(f"{key}: the answer is an empty list", endpoint=key)
            answer = answer[0]
        if not isinstance(answer, Mapping) or not isinstance(answer.get("_id"), str):
            raise OfficeRnDError(
                f"{key}: the answer has no _id: {str(answer)[:_MAX_MESSAGE_CHARS]}", endpoint=key
            )
        return answer

    async def create_plan(self, name: str, **fields: object) -> Plan:
        """``POST /plans`` with ``name`` and ``fields`` (e.g. ``price=Decimal("0")``). A write."""
        if not name:
            raise InvalidInput("plan: name is required")
        answer = await self.request("POST", "/plans", body={"name": name, **fields})
        return plan_from_json(self._created(answer, "POST /plans"))

    async def create_fee(self, fee: Fee) -> str:
        """``POST /fees``; the new fee's ``_id``. A write: one attempt unless ``retry_writes``."""
        answer = await self.request("POST", "/fees", body=fee_to_json(fee))
        return str(self._created(answer, "POST /fees")["_id"])

    async def fees(
        self, *, date: str | None = None, member: str | None = None
    ) -> list[dict[str, object]]:
        """Fees as the API gives them (prices as Decimal), filtered by ``date``/``member``."""
        params: dict[str, str] = {}
        if date is not None:
            params["date"] = date
        if member is not None:
            params["member"] = member
        return [dict(f) for f in await self.list_all("/fees", params) if isinstance(f, Mapping)]
