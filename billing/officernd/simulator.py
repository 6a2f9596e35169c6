"""An OfficeRnD stand-in to develop, test and benchmark against.

An aiohttp server (``127.0.0.1``, a free port by default) that answers the
part of OfficeRnD's v1 API that proxyprint uses, with OfficeRnD's shapes:

=====================================================  ====================================
``POST /oauth/token``  (``sim.token_url``)             form ``client_id``, ``client_secret``,
                                                       ``grant_type=client_credentials``,
                                                       ``scope`` -> ``{"access_token",
                                                       "token_type", "expires_in", "scope"}``
``GET  /api/v1/organizations/{org}/members``           ``[{"_id", "name", "email", "status",
                                                       "team", "plans"}]``
``GET  .../companies``                                 ``[{"_id", "name"}]``
``GET  .../plans``                                     ``[{"_id", "name", "price"}]``
``GET  .../fees[?member=&date=&team=&plan=]``          ``[{"_id", "name", "price", "quantity",
                                                       "date", "member", "team", "plan",
                                                       "isPersonal", "description"}]``
``POST .../plans``   ``{"name", "price"?, ...}``       the new plan
``POST .../fees``    the fee's fields (above)          the new fee, or ``[fee]`` when
                                                       ``sim.fee_answer_as_list``
=====================================================  ====================================

``sim.api_url`` is the server's root (the client adds ``/api/v1/...``).
Lists are paged by cursor: ``$limit`` (1..``page_limit_max``, default 50),
``$next`` from the ``rnd-cursor-next`` header of the previous page; the
header is absent on the last page. GET filters are equality on the record's
fields (``date`` compares the day only). Bad input answers 400
``{"message": ...}``; a missing, unknown or expired bearer token 401.
Amounts are exact: JSON numbers are read as ``Decimal`` and written as
their digits.

Faults: ``set_faults(rate_429, rate_5xx, seed)`` answers that share of
requests with 429 (``Retry-After: sim.retry_after``) or 500/503, nothing
applied. ``inject(kind, path=None, count=1)`` scripts the next matching
requests instead (``FaultKind``; ``path`` is ``"POST /fees"``, ``"/fees"``,
or None for any API request, the token endpoint only when named), including
``apply-then-500``: the fee is created, the answer is an error.
``expire_tokens()`` makes every issued token invalid at once.

``latency`` seconds are awaited (``asyncio.sleep``) in every request, so
concurrent requests overlap as with a real server.

Run alone: ``python -m billing.officernd.simulator --port 8585 --members 300
--companies 40 --individuals 25 [--latency 0.01 --rate-429 0.05 --rate-5xx 0.05]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import enum
import itertools
import math
import random
import secrets
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web

from billing.officernd.client import (
    CURSOR_HEADER,
    company_from_json,
    dumps_json,
    loads_json,
    member_from_json,
    plan_from_json,
)
from billing.officernd.models import Company, Member, MemberStatus, Plan

__all__ = [
    "DEFAULT_STATUSES",
    "TOKEN_PATH",
    "FaultKind",
    "OfficeRnDSimulator",
    "main",
]

TOKEN_PATH: Final = "/oauth/token"
API_PREFIX: Final = "/api/v1/organizations"
DEFAULT_PAGE_LIMIT: Final = 50
DEFAULT_STATUSES: Final[Mapping[str, float]] = {
    MemberStatus.ACTIVE: 0.8,
    MemberStatus.FORMER: 0.1,
    MemberStatus.CONTACT: 0.1,
}
# The plans seed_members creates when there are none yet: (name, monthly price).
DEFAULT_PLANS: Final = (
    ("Hot Desk", Decimal("150.00")),
    ("Dedicated Desk", Decimal("300.00")),
    ("Private Office", Decimal("850.00")),
)
_LISTED = ("members", "companies", "plans", "fees")

_FIRST = (
    "Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace", "Hedy",
    "Ivan", "John", "Katherine", "Linus", "Margaret", "Niklaus", "Ole", "Radia", "Sophie",
    "Tim", "Vint",
)  # fmt: skip
_LAST = (
    "Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra", "Allen", "Hopper",
    "Lamarr", "Sutherland", "Backus", "Johnson", "Torvalds", "Hamilton", "Wirth", "Dahl",
    "Perlman", "Wilson", "Berners-Lee", "Cerf",
)  # fmt: skip
_COMPANY_WORDS = (
    "Acme", "Blue", "Cobalt", "Delta", "Ember", "Fjord", "Granite", "Harbor", "Iris",
    "Juniper", "Kestrel", "Lumen", "Maple", "Nimbus", "Orbit", "Pioneer",
)  # fmt: skip
_COMPANY_KINDS = ("Labs", "Studio", "Partners", "Works", "Consulting", "Design", "Systems")


class FaultKind(enum.StrEnum):
    """What a scripted fault does to one request."""

    HTTP_429 = "429"  # rate limited (Retry-After: sim.retry_after); nothing applied
    HTTP_500 = "500"  # nothing applied
    HTTP_503 = "503"  # nothing applied
    UNAUTHORIZED = "401"  # the token is refused as if revoked; nothing applied
    HANG = "hang"  # no answer for hang_seconds; nothing applied
    APPLY_THEN_500 = "apply-then-500"  # applied (fee created), then answered 500
    APPLY_THEN_HANG = "apply-then-hang"  # applied, then no answer for hang_seconds


class _BadRequest(Exception):
    """An input the API refuses with 400 (or ``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _json(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps_json(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"message": message, "status": status}, status, headers)


def _shares(total: int, weights: Mapping[str, float]) -> list[str]:
    """``total`` labels in the proportions of ``weights`` (largest remainder: exact counts)."""
    if not weights or any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError("statuses: weights must be finite and not negative")
    whole = sum(weights.values())
    if whole <= 0:
        raise ValueError("statuses: at least one weight must be positive")
    quotas = {k: total * w / whole for k, w in weights.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    left = total - sum(counts.values())
    for k in sorted(quotas, key=lambda k: (counts[k] - quotas[k], k))[:left]:
        counts[k] += 1
    return [k for k, n in counts.items() for _ in range(n)]


def _valid_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        if len(value) == 10:
            date.fromisoformat(value)
        else:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, Decimal | int) and not isinstance(value, bool)


class OfficeRnDSimulator:
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
        self.org = org
        self.client_id = client_id
        self.client_secret = client_secret
        self.latency = latency
        self.page_limit_max = page_limit_max
        self.seed = seed
        self.token_ttl = token_ttl
        self.hang_seconds = hang_seconds
        self.host = host
        self.port = port
        self.fee_answer_as_list = False
        self.retry_after: float = 0
        self.rate_429 = 0.0
        self.rate_5xx = 0.0
        self.requests: Counter[str] = Counter()
        # (time.monotonic(), key) of every request: lets tests measure retry spacing.
        self.request_log: list[tuple[float, str]] = []
        # The token requests' form fields (client_secret left out), in order.
        self.token_forms: list[dict[str, str]] = []
        self._fault_rng = random.Random(seed)
        self._id_rng = random.Random(f"officernd-ids-{seed}")
        self._scripted: deque[tuple[FaultKind, str | None]] = deque()
        self._tokens: dict[str, float] = {}  # token -> expiry (time.monotonic())
        self._token_serial = itertools.count(1)
        self.tokens_issued = 0
        self._members: dict[str, dict[str, Any]] = {}
        self._companies: dict[str, dict[str, Any]] = {}
        self._plans: dict[str, dict[str, Any]] = {}
        self._fees: dict[str, dict[str, Any]] = {}
        self._fees_received: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    # --- addresses ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The client's ``api_url`` (it adds ``/api/v1/organizations/{org}``)."""
        return self.base_url

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._h_token)
        base = f"{API_PREFIX}/{{org}}"
        for resource in _LISTED:
            app.router.add_get(f"{base}/{resource}", self._h_list)
        app.router.add_post(f"{base}/plans", self._h_create_plan)
        app.router.add_post(f"{base}/fees", self._h_create_fee)
        app.router.add_post("/sim/faults", self._h_faults)
        app.router.add_post("/sim/inject", self._h_inject)
        app.router.add_post("/sim/expire-tokens", self._h_expire_tokens)
        app.router.add_get("/sim/fees", self._h_fees_received)
        app.router.add_get("/sim/requests", self._h_requests)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        self._closing.set()  # ends every hang
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- faults ---------------------------------------------------------------------------

    def set_faults(
        self,
        rate_429: float = 0.0,
        rate_5xx: float = 0.0,
        seed: int | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer a share of requests with 429 / 500-or-503 (nothing applied); seeded."""
        if rate_429 < 0 or rate_5xx < 0 or rate_429 + rate_5xx > 1:
            raise ValueError("rate_429 and rate_5xx are shares that add up to at most 1")
        self.rate_429, self.rate_5xx = rate_429, rate_5xx
        if retry_after is not None:
            self.retry_after = retry_after
        self._fault_rng = random.Random(self.seed if seed is None else seed)

    def inject(self, kind: FaultKind | str, path: str | None = None, count: int = 1) -> None:
        """The next ``count`` requests to ``path`` (or any API request) get ``kind``.

        ``path`` is ``"METHOD /template"`` (``"POST /fees"``) or a template
        (``"/fees"``, any method). Scripted faults come before random ones.
        """
        self._scripted.extend([(FaultKind(kind), path)] * count)

    def clear_faults(self) -> None:
        self._scripted.clear()
        self.set_faults()

    @property
    def scripted_faults(self) -> int:
        """Scripted faults not used yet."""
        return len(self._scripted)

    def _fault_for(self, key: str) -> FaultKind | None:
        template = key.split(" ", 1)[1]
        for i, (kind, only) in enumerate(self._scripted):
            if (only is None and template != TOKEN_PATH) or only in (key, template):
                del self._scripted[i]
                return kind
        if not (self.rate_429 or self.rate_5xx):
            return None
        draw = self._fault_rng.random()
        if draw < self.rate_429:
            return FaultKind.HTTP_429
        if draw < self.rate_429 + self.rate_5xx:
            return self._fault_rng.choice((FaultKind.HTTP_500, FaultKind.HTTP_503))
        return None

    async def _hang(self) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
        return _error(504, "hung")

    async def _serve(self, key: str, apply: Callable[[], Awaitable[web.Response]]) -> web.Response:
        """One request after the checks: latency, faults, the handler, faults after it."""
        kind = self._fault_for(key)
        if kind is FaultKind.HTTP_429:
            return _error(429, "Too many requests", {"Retry-After": f"{self.retry_after:g}"})
        if kind in (FaultKind.HTTP_500, FaultKind.HTTP_503):
            return _error(int(kind), "simulated server error")
        if kind is FaultKind.UNAUTHORIZED:
            return _error(401, "Unauthorized", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if kind is FaultKind.HANG:
            return await self._hang()
        answer = await apply()
        if kind is FaultKind.APPLY_THEN_500:
            return _error(500, "simulated server error after applying")
        if kind is FaultKind.APPLY_THEN_HANG:
            return await self._hang()
        return answer

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

        return await self._serve(key, issue)

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

    def _count(self, key: str) -> None:
        self.requests[key] += 1
        self.request_log.append((time.monotonic(), key))

    async def _delay(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    async def _api(
        self,
        request: web.Request,
        key: str,
        apply: Callable[[], Awaitable[web.Response]],
    ) -> web.Response:
        self._count(key)
        await self._delay()
        if not self._authorized(request):
            return _error(401, "Unauthorized", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if request.match_info["org"] != self.org:
            return _error(404, f"organization {request.match_info['org']!r} not found")
        return await self._serve(key, apply)

    # --- lists ----------------------------------------------------------------------------

    def _table(self, resource: str) -> dict[str, dict[str, Any]]:
        tables = {
            "members": self._members,
            "companies": self._companies,
            "plans": self._plans,
            "fees": self._fees,
        }
        return tables[resource]

    @staticmethod
    def _matches(record: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
        for name, wanted in filters.items():
            value = record.get(name)
            if name == "date":
                if not isinstance(value, str) or value[:10] != wanted[:10]:
                    return False
                continue
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            if text != wanted:
                return False
        return True

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
            rows = sorted(
                (r for r in self._table(resource).values() if self._matches(r, filters)),
                key=lambda r: str(r["_id"]),
            )
            rows = [r for r in rows if str(r["_id"]) > after]
            chunk = rows[:limit]
            headers: dict[str, str] = {}
            if len(rows) > limit:
                cursor = base64.urlsafe_b64encode(str(chunk[-1]["_id"]).encode()).decode()
                headers[CURSOR_HEADER] = cursor
            return _json(chunk, headers=headers)

        return await self._api(request, key, page)

    # --- writes ---------------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            data = loads_json(await request.read())
        except ValueError as exc:
            raise _BadRequest(f"the body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise _BadRequest("the body must be a JSON object")
        return data

    async def _h_create_plan(self, request: web.Request) -> web.Response:
        async def create() -> web.Response:
            try:
                data = await self._body(request)
                name = data.get("name")
                if not isinstance(name, str) or not name.strip():
                    raise _BadRequest("name is required")
                price = data.get("price")
                if price is not None and not _is_number(price):
                    raise _BadRequest("price must be a number")
            except _BadRequest as exc:
                return _error(exc.status, exc.message)
            record = {**data, "_id": self._new_id(self._id_rng), "name": name}
            if price is not None:
                record["price"] = Decimal(price)
            self._plans[record["_id"]] = record
            return _json(record)

        return await self._api(request, "POST /plans", create)

    def _check_fee(self, data: Mapping[str, Any]) -> None:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _BadRequest("name is required")
        if not _is_number(data.get("price")):
            raise _BadRequest("price must be a number")
        quantity = data.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise _BadRequest("quantity must be a positive integer")
        if not _valid_date(data.get("date")):
            raise _BadRequest("date must be an ISO date")
        member, team, plan = data.get("member"), data.get("team"), data.get("plan")
        if member is None and team is None:
            raise _BadRequest("a fee needs a member or a team")
        if member is not None and member not in self._members:
            raise _BadRequest(f"member {member!r} not found")
        if team is not None and team not in self._companies:
            raise _BadRequest(f"team {team!r} not found")
        if plan is not None and plan not in self._plans:
            raise _BadRequest(f"plan {plan!r} not found")
        if not isinstance(data.get("isPersonal", True), bool):
            raise _BadRequest("isPersonal must be a boolean")
        if not isinstance(data.get("description", ""), str):
            raise _BadRequest("description must be a string")

    async def _h_create_fee(self, request: web.Request) -> web.Response:
        async def create() -> web.Response:
            try:
                data = await self._body(request)
                self._check_fee(data)
            except _BadRequest as exc:
                return _error(exc.status, exc.message)
            record: dict[str, Any] = {
                "_id": self._new_id(self._id_rng),
                "name": data["name"],
                "price": Decimal(data["price"]),
                "quantity": data.get("quantity", 1),
                "date": data["date"],
                "member": data.get("member"),
                "team": data.get("team"),
                "plan": data.get("plan"),
                "isPersonal": data.get("isPersonal", True),
                "description": data.get("description", ""),
            }
            for extra, value in data.items():
                record.setdefault(extra, value)
            self._fees[record["_id"]] = record
            self._fees_received.append(dict(record))
            return _json([record] if self.fee_answer_as_list else record)

        return await self._api(request, "POST /fees", create)

    # --- data -----------------------------------------------------------------------------

    def _new_id(self, rng: random.Random) -> str:
        while True:
            new = f"{rng.getrandbits(96):024x}"
            if new not in self._ids:
                self._ids.add(new)
                return new

    def seed_members(
        self,
        n_members: int,
        n_companies: int,
        n_individuals: int,
        *,
        statuses: Mapping[str, float] = DEFAULT_STATUSES,
        seed: int = 0,
    ) -> list[Member]:
        """Replace members and companies with generated ones; the same arguments, the same data.

        ``n_members`` members spread over ``n_companies`` companies (each
        company gets at least one while there are enough) plus
        ``n_individuals`` members with no company: ``n_members +
        n_individuals`` in all. Statuses come in the exact proportions of
        ``statuses`` (largest remainder), shuffled. The plans in
        ``DEFAULT_PLANS`` are created when there are no plans; about half of
        the active members get one. Returns the members in creation order.
        """
        if min(n_members, n_companies, n_individuals) < 0:
            raise ValueError("counts must not be negative")
        if n_members and not n_companies:
            raise ValueError("company members need at least one company")
        rng = random.Random(f"officernd-seed-{seed}")
        for record in (*self._members.values(), *self._companies.values()):
            self._ids.discard(record["_id"])
        self._members.clear()
        self._companies.clear()
        if not self._plans:
            for plan_name, price in DEFAULT_PLANS:
                self.add_plan(plan_name, price, plan_id=self._new_id(rng))
        plan_ids = sorted(self._plans)
        words, kinds = len(_COMPANY_WORDS), len(_COMPANY_KINDS)
        companies = []
        for i in range(n_companies):
            name = f"{_COMPANY_WORDS[i % words]} {_COMPANY_KINDS[(i // words) % kinds]}"
            if i >= words * kinds:
                name += f" {i // (words * kinds) + 1}"
            companies.append(self.add_company(name, company_id=self._new_id(rng)))
        total = n_members + n_individuals
        labels = _shares(total, statuses)
        rng.shuffle(labels)
        members = []
        for i in range(total):
            if i < n_members:
                company: str | None = (
                    companies[i].id if i < n_companies else rng.choice(companies).id
                )
            else:
                company = None
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            status = labels[i]
            plans = (
                (rng.choice(plan_ids),)
                if status == MemberStatus.ACTIVE and plan_ids and rng.random() < 0.5
                else ()
            )
            members.append(
                self.add_member(
                    f"{first} {last}",
                    email=f"{first}.{last}.{i + 1}@example.com".lower(),
                    status=status,
                    company_id=company,
                    plan_ids=plans,
                    member_id=self._new_id(rng),
                )
            )
        return members

    def add_company(self, name: str, *, company_id: str | None = None) -> Company:
        new = company_id or self._new_id(self._id_rng)
        self._ids.add(new)
        self._companies[new] = {"_id": new, "name": name}
        return company_from_json(self._companies[new])

    def add_plan(
        self, name: str, price: Decimal | None = None, *, plan_id: str | None = None
    ) -> Plan:
        new = plan_id or self._new_id(self._id_rng)
        self._ids.add(new)
        record: dict[str, Any] = {"_id": new, "name": name}
        if price is not None:
            record["price"] = price
        self._plans[new] = record
        return plan_from_json(record)

    def add_member(
        self,
        name: str,
        *,
        email: str | None = None,
        status: str = MemberStatus.ACTIVE,
        company_id: str | None = None,
        plan_ids: Sequence[str] = (),
        member_id: str | None = None,
    ) -> Member:
        """A member (an individual one without ``company_id``); the email defaults to unique."""
        if company_id is not None and company_id not in self._companies:
            raise KeyError(f"company {company_id!r} not found")
        new = member_id or self._new_id(self._id_rng)
        self._ids.add(new)
        self._members[new] = {
            "_id": new,
            "name": name,
            "email": email if email is not None else f"member-{new}@example.com",
            "status": str(status),
            "team": company_id,
            "plans": list(plan_ids),
        }
        return member_from_json(self._members[new])

    def _member(self, member_id: str) -> dict[str, Any]:
        try:
            return self._members[member_id]
        except KeyError:
            raise KeyError(f"member {member_id!r} not found") from None

    def set_member_status(self, member_id: str, status: str) -> Member:
        record = self._member(member_id)
        record["status"] = str(status)
        return member_from_json(record)

    def move_member(self, member_id: str, company_id: str | None) -> Member:
        """Into another company, or out of any (``None``: an individual member)."""
        if company_id is not None and company_id not in self._companies:
            raise KeyError(f"company {company_id!r} not found")
        record = self._member(member_id)
        record["team"] = company_id
        return member_from_json(record)

    def rename_member(
        self, member_id: str, name: str | None = None, *, email: str | None = None
    ) -> Member:
        record = self._member(member_id)
        if name is not None:
            record["name"] = name
        if email is not None:
            record["email"] = email
        return member_from_json(record)

    def remove_member(self, member_id: str) -> None:
        self._member(member_id)
        del self._members[member_id]

    def rename_company(self, company_id: str, name: str) -> Company:
        self._companies[company_id]["name"] = name
        return company_from_json(self._companies[company_id])

    @property
    def members(self) -> list[Member]:
        return [member_from_json(r) for r in self._members.values()]

    @property
    def companies(self) -> list[Company]:
        return [company_from_json(r) for r in self._companies.values()]

    @property
    def plans(self) -> list[Plan]:
        return [plan_from_json(r) for r in self._plans.values()]

    @property
    def fees(self) -> list[dict[str, Any]]:
        """Every fee the simulator holds, in creation order (prices as Decimal)."""
        return [dict(r) for r in self._fees.values()]

    def fees_received(self) -> list[dict[str, Any]]:
        """The fees created by ``POST /fees``, in order, with their ``_id`` (prices Decimal).

        A POST refused (400) or faulted before applying is not here; one
        answered with ``apply-then-500`` is.
        """
        return [dict(r) for r in self._fees_received]

    def reset_counters(self) -> None:
        self.requests.clear()
        self.request_log.clear()
        self.token_forms.clear()

    # --- HTTP controls --------------------------------------------------------------------

    async def _control_body(self, request: web.Request) -> dict[str, Any]:
        try:
            return await self._body(request)
        except _BadRequest as exc:
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
        return _json({"scripted": len(self._scripted)})

    async def _h_expire_tokens(self, request: web.Request) -> web.Response:
        self.expire_tokens()
        return _json({"expired": True})

    async def _h_fees_received(self, request: web.Request) -> web.Response:
        return _json(self.fees_received())

    async def _h_requests(self, request: web.Request) -> web.Response:
        return _json(dict(self.requests))


# --- running alone ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m billing.officernd.simulator", description="An OfficeRnD simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8585)
    parser.add_argument("--org", default="proxyprint-test")
    parser.add_argument("--client-id", default="cid")
    parser.add_argument("--client-secret", default="secret")
    parser.add_argument("--members", type=int, default=0, help="members of companies")
    parser.add_argument("--companies", type=int, default=0)
    parser.add_argument("--individuals", type=int, default=0, help="members with no company")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--token-ttl", type=float, default=3600.0)
    return parser


async def _run(args: argparse.Namespace) -> None:
    sim = OfficeRnDSimulator(
        org=args.org,
        client_id=args.client_id,
        client_secret=args.client_secret,
        latency=args.latency,
        seed=args.seed,
        token_ttl=args.token_ttl,
        host=args.host,
        port=args.port,
    )
    sim.seed_members(args.members, args.companies, args.individuals, seed=args.seed)
    sim.set_faults(args.rate_429, args.rate_5xx, args.seed)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with sim:
        print(f"OfficeRnD simulator: api_url={sim.api_url} org={sim.org}", flush=True)
        print(f"token_url={sim.token_url} client_id={sim.client_id}", flush=True)
        print(
            f"{len(sim.members)} members, {len(sim.companies)} companies, "
            f"{len(sim.plans)} plans; controls: {sim.base_url}/sim/...",
            flush=True,
        )
        await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
