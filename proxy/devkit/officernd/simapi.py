"""The OfficeRnD simulator's HTTP face: OAuth tokens, the v1 API, the ``/sim`` controls.

``OfficeRnDSimulator`` serves ``OfficeRnDRecords`` (``simdata``) the way
OfficeRnD does: a bearer token from ``POST /oauth/token`` on every API
request, cursor-paged lists, JSON with exact amounts, the faults
``OfficeRnDFaults`` (``simfaults``) decides turned into answers, and the
latency awaited in every request. ``proxy.devkit.officernd.simulator`` documents
the whole and runs it alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from aiohttp import web

from billing.officernd.client import CURSOR_HEADER, dumps_json, loads_json
from proxy.devkit.officernd.simdata import LISTED, BadRequest, OfficeRnDRecords
from proxy.devkit.officernd.simfaults import FaultKind, OfficeRnDFaults

__all__ = ["API_PREFIX", "TOKEN_PATH", "OfficeRnDSimulator"]

TOKEN_PATH: Final = "/oauth/token"
API_PREFIX: Final = "/api/v1/organizations"
DEFAULT_PAGE_LIMIT: Final = 50
_INVALID_TOKEN: Final = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _json(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps_json(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"message": message, "status": status}, status, headers)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = loads_json(await request.read())
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


class OfficeRnDSimulator(OfficeRnDFaults, OfficeRnDRecords):
    """``async with OfficeRnDSimulator() as sim: OfficeRnDClient(sim.api_url, sim.org, ...)``.

    The data helpers work before ``start()`` too. ``requests`` counts requests
    by ``"METHOD /path-template"`` (``"GET /members"``, ``"POST /oauth/token"``),
    faulted and refused ones included.
    """

    def __init__(
        self,
        *,
        org: str = "proxyprint-test",
        client_id: str = "cid",
        client_secret: str = "secret",
        latency: float = 0.0,
        page_limit_max: int = 100,
        seed: int = 0,
        token_ttl: float = 3600.0,
        hang_seconds: float = 30.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        OfficeRnDFaults.__init__(self, seed=seed, host=host, port=port, hang_seconds=hang_seconds)
        OfficeRnDRecords.__init__(self, seed=seed)
        self.org = org
        self.latency = latency
        self.page_limit_max = page_limit_max
        self.fee_answer_as_list = False
        # (time.monotonic(), key) of every request: lets tests measure retry spacing.
        self.request_log: list[tuple[float, str]] = []
        # OAuth: the client's credentials, the tokens issued and their lifetime.
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.tokens_issued = 0
        # The token requests' form fields (client_secret left out), in order.
        self.token_forms: list[dict[str, str]] = []
        self._tokens: dict[str, float] = {}  # token -> expiry (time.monotonic())
        self._token_serial = itertools.count(1)

    @property
    def api_url(self) -> str:
        """The client's ``api_url`` (it adds ``/api/v1/organizations/{org}``)."""
        return self.base_url

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._h_token)
        base = f"{API_PREFIX}/{{org}}"
        for resource in LISTED:
            app.router.add_get(f"{base}/{resource}", self._h_list)
        app.router.add_post(f"{base}/plans", self._h_create_plan)
        app.router.add_post(f"{base}/fees", self._h_create_fee)
        app.router.add_post("/sim/faults", self._h_faults)
        app.router.add_post("/sim/inject", self._h_inject)
        app.router.add_post("/sim/expire-tokens", self._h_expire_tokens)
        app.router.add_get("/sim/fees", self._h_fees_received)
        app.router.add_get("/sim/requests", self._h_requests)
        return app

    def reset_counters(self) -> None:
        self.requests.clear()
        self.request_log.clear()
        self.token_forms.clear()

    # --- every request --------------------------------------------------------------------

    def _count(self, key: str) -> None:
        self.requests[key] += 1
        self.request_log.append((time.monotonic(), key))

    async def _delay(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    async def _serve(
        self,
        key: str,
        apply: Callable[[], Awaitable[web.Response]],
        *,
        api: bool = True,
        request: web.Request | None = None,
    ) -> web.Response:
        """One request after the checks: latency, faults, the handler, faults after it."""
        kind = self._fault_for(key, api=api)
        if kind is FaultKind.HTTP_429:
            return _error(429, "Too many requests", {"Retry-After": f"{self.retry_after:g}"})
        if kind in (FaultKind.HTTP_500, FaultKind.HTTP_503):
            return _error(int(kind), "simulated server error")
        if kind is FaultKind.UNAUTHORIZED:
            return _error(401, "Unauthorized", _INVALID_TOKEN)
        if kind is FaultKind.HANG:
            return await self._hang(_error(504, "hung"))
        answer = await apply()
        if kind is FaultKind.APPLY_THEN_DROP and request is not None:
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection drop, no status
            return answer  # never sent: the transport is gone
        if kind is FaultKind.APPLY_THEN_500:
            return _error(500, "simulated server error after applying")
        if kind is FaultKind.APPLY_THEN_HANG:
            return await self._hang(_error(504, "hung"))
        return answer

    async def _api(
        self,
        request: web.Request,
        key: str,
        apply: Callable[[], Awaitable[web.Response]],
    ) -> web.Response:
        self._count(key)
        await self._delay()
        if not self._authorized(request):
            return _error(401, "Unauthorized", _INVALID_TOKEN)
        if request.match_info["org"] != self.org:
            return _error(404, f"organization {request.match_info['org']!r} not found")
        return await self._serve(key, apply, request=request)

    # --- tokens ---------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every token issued so far is refused from now on (401)."""
        self._tokens.clear()

    async def _h_token(self, request: web.Request) -> web.Response:
        key = f"POST {TOKEN_PATH}"
        self._count(key)
        await self._delay()
        form = await request.post()
        self.token_forms.append({k: str(v) for k, v in form.items() if k != "client_secret"})

        async def issue() -> web.Response:
            if form.get("grant_type") != "client_credentials":
                return _json({"error": "unsupported_grant_type"}, 400)
            if (
                form.get("client_id") != self.client_id
                or form.get("client_secret") != self.client_secret
            ):
                return _json(
                    {"error": "invalid_client", "error_description": "bad client credentials"}, 401
                )
            token = f"sim-{next(self._token_serial)}-{secrets.token_hex(12)}"
            self._tokens[token] = time.monotonic() + self.token_ttl
            self.tokens_issued += 1
            ttl = self.token_ttl
            expires_in: int | Decimal = int(ttl) if ttl == int(ttl) else Decimal(repr(ttl))
            return _json(
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": expires_in,
                    "scope": str(form.get("scope", "")),
                }
            )

        return await self._serve(key, issue, api=False, request=request)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        expiry = self._tokens.get(token.strip())
        if expiry is None:
            return False
        if time.monotonic() >= expiry:
            del self._tokens[token.strip()]
            return False
        return True

    # --- the API --------------------------------------------------------------------------

    async def _h_list(self, request: web.Request) -> web.Response:
        resource = request.path.rstrip("/").rsplit("/", 1)[1]
        key = f"GET /{resource}"

        async def page() -> web.Response:
            query = request.query
            try:
                limit = int(query.get("$limit", DEFAULT_PAGE_LIMIT))
            except ValueError:
                return _error(400, "$limit must be an integer")
            if not 1 <= limit <= self.page_limit_max:
                return _error(400, f"$limit must be from 1 to {self.page_limit_max}")
            after = ""
            if "$next" in query:
                try:
                    after = base64.b64decode(query["$next"], altchars=b"-_", validate=True).decode()
                except (binascii.Error, UnicodeDecodeError, ValueError):
                    return _error(400, "$next is not a cursor")
            filters = {k: v for k, v in query.items() if not k.startswith("$")}
            chunk, more = self._page(resource, filters, after, limit)
            headers: dict[str, str] = {}
            if more:
                cursor = base64.urlsafe_b64encode(str(chunk[-1]["_id"]).encode()).decode()
                headers[CURSOR_HEADER] = cursor
            return _json(chunk, headers=headers)

        return await self._api(request, key, page)

    async def _h_create_plan(self, request: web.Request) -> web.Response:
        async def create() -> web.Response:
            try:
                return _json(self._create_plan(await _body(request)))
            except BadRequest as exc:
                return _error(exc.status, exc.message)

        return await self._api(request, "POST /plans", create)

    async def _h_create_fee(self, request: web.Request) -> web.Response:
        async def create() -> web.Response:
            try:
                record = self._create_fee(await _body(request))
            except BadRequest as exc:
                return _error(exc.status, exc.message)
            return _json([record] if self.fee_answer_as_list else record)

        return await self._api(request, "POST /fees", create)

    # --- HTTP controls --------------------------------------------------------------------

    @staticmethod
    async def _control_body(request: web.Request) -> dict[str, Any]:
        try:
            return await _body(request)
        except BadRequest as exc:
            raise web.HTTPBadRequest(text=exc.message) from exc

    async def _h_faults(self, request: web.Request) -> web.Response:
        data = await self._control_body(request)
        try:
            seed = data.get("seed")
            retry_after = data.get("retry_after")
            self.set_faults(
                float(data.get("rate_429", 0)),
                float(data.get("rate_5xx", 0)),
                None if seed is None else int(seed),
                retry_after=None if retry_after is None else float(retry_after),
            )
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return _json({"rate_429": str(self.rate_429), "rate_5xx": str(self.rate_5xx)})

    async def _h_inject(self, request: web.Request) -> web.Response:
        data = await self._control_body(request)
        try:
            path = data.get("path")
            self.inject(
                FaultKind(str(data.get("kind"))),
                None if path is None else str(path),
                int(data.get("count", 1)),
            )
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return _json({"scripted": self.scripted_faults})

    async def _h_expire_tokens(self, request: web.Request) -> web.Response:
        self.expire_tokens()
        return _json({"expired": True})

    async def _h_fees_received(self, request: web.Request) -> web.Response:
        return _json(self.fees_received())

    async def _h_requests(self, request: web.Request) -> web.Response:
        return _json(dict(self.requests))

    def _banner(self) -> Sequence[str]:
        return (
            f"OfficeRnD simulator: api_url={self.api_url} org={self.org}",
            f"token_url={self.token_url} client_id={self.client_id}",
            f"{len(self.members)} members, {len(self.companies)} companies, "
            f"{len(self.plans)} plans, {len(self.memberships)} memberships;"
            f" controls: {self.base_url}/sim/...",
        )
