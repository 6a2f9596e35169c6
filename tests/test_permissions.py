"""Who may call what: the permission matrix of every endpoint, and the secrets at rest.

``MATRIX`` is the one place that says, for every route of the real app (listed
from its router at run time: a new endpoint without a row fails
``test_every_endpoint_has_a_row``) and every kind of caller, which status the
call gets. The callers (columns):

============  =====================================================================
admin ...     a valid API token of that role (``user`` is alice's), acting on its
user          own resources: alice's print-out, account, held job, ticket
other         alice's user token on *bob's* resource (his print-out, account, held
              job, ticket) or naming bob (``?user=bob``, a delegation or a card for
              bob); for the tap, reader ``lobby``'s token at reader ``far``'s URL;
              where there is neither, alice's request as in ``user``
nfc           a valid NFC reader token (reader ``lobby``) sent as the bearer token
none          no Authorization header
malformed     a header that is not ``Bearer TOKEN`` (with a valid token inside)
bad           a well-formed bearer token that is no token (unknown, edited, huge)
revoked       an admin token revoked in ``api_tokens`` (for the tap: a reader
              token replaced by ``nfc_admin.rotate_reader_token``)
============  =====================================================================

Every mutating cell gets resources of its own (a fresh held job, ticket, card
number), so the cells do not depend on each other's order. Every error is
checked for the API's error shape and a code matching the status; a 401 carries
the ``WWW-Authenticate: Bearer`` challenge; a 2xx answer to alice's token
never mentions bob. SQLite runs the whole matrix (now 19 endpoints x 11 callers =
209 cells; the malformed and bad columns send 7 and 6 headers: 418
requests, plus HEAD for the 9 GET rows); PostgreSQL the columns in
``PG_COLUMNS`` (114 cells).

The other tests: API and reader tokens are stored only as their SHA-256; spool
files are 0600 in 0700 directories and no route serves files; no answer
reflects a file path sent in any string field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import stat
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from yarl import URL

from billing import status as billing_status
from billing.enums import PrinterMode, PrintStatus
from billing.models import ApiToken, Printer, PrintIn
from proxy import nfc_admin
from proxy.app import create_app
from proxy.config import build_config
from proxy.devkit.documents import make_pdf
from proxy.keys import INTAKE_RUNNER
from proxy.pipeline.delegation import KEYS as DELEGATION_KEYS
from proxy.pipeline.delegation import parse_cups_options
from proxy.pipeline.intake import META_HEADER
from proxy.tokens import hash_token
from proxy.web.setup import is_web_route
from tests import factories as f
from tests.served import Served, served

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]

COLUMNS = (
    "admin", "accounts-editor", "ticket-operator", "reader", "user",
    "other", "nfc", "none", "malformed", "bad", "revoked",
)  # fmt: skip
PG_COLUMNS = ("admin", "reader", "user", "other", "nfc", "revoked")
ROLES = ("admin", "accounts-editor", "ticket-operator", "reader", "user")

# The expected status of every endpoint (rows) for every caller (columns).
MATRIX_TABLE = """
method route                               admn edit oper read user othr nfc  none malf bad  revk
GET    /healthz                            200  200  200  200  200  200  200  200  200  200  200
GET    /metrics                            200  403  403  200  403  403  401  401  401  401  401
GET    /api/v1/openapi.json                200  200  200  200  200  200  200  200  200  200  200
GET    /api/v1/printouts                   200  200  200  403  200  403  401  401  401  401  401
GET    /api/v1/printouts.csv               200  200  200  403  200  403  401  401  401  401  401
GET    /api/v1/printouts/{id}              200  200  200  403  200  404  401  401  401  401  401
POST   /api/v1/printouts/{id}/reverse      200  200  403  403  403  403  401  401  401  401  401
GET    /api/v1/accounts                    200  200  200  403  200  200  401  401  401  401  401
GET    /api/v1/accounts/{id}/transactions  200  200  200  403  200  404  401  401  401  401  401
GET    /api/v1/accounts/{id}               200  200  200  403  200  404  401  401  401  401  401
PATCH  /api/v1/accounts/{id}               200  200  403  403  403  403  401  401  401  401  401
DELETE /api/v1/accounts/{id}               200  403  403  403  403  403  401  401  401  401  401
POST   /api/v1/accounts/{id}/adjustments   201  201  403  403  403  403  401  401  401  401  401
GET    /api/v1/jobs/held                   200  403  200  403  200  403  401  401  401  401  401
POST   /api/v1/jobs/{id}/release           200  403  403  403  200  404  401  401  401  401  401
POST   /api/v1/jobs/{id}/cancel            200  403  403  403  200  404  401  401  401  401  401
POST   /api/v1/jobs/{id}/recheck           200  403  403  403  200  404  401  401  401  401  401
PUT    /api/v1/jobs/{id}/delegation        200  403  403  403  403  403  401  401  401  401  401
POST   /api/v1/jobs/{id}/redirect          200  403  403  403  200  404  401  401  401  401  401
GET    /api/v1/tickets                     200  403  200  403  403  403  401  401  401  401  401
POST   /api/v1/tickets/{id}/release        200  403  200  403  403  403  401  401  401  401  401
POST   /api/v1/tickets/{id}/cancel         200  403  200  403  200  404  401  401  401  401  401
POST   /api/v1/delegations                 201  403  403  403  201  403  401  401  401  401  401
POST   /api/v1/cards                       201  403  403  403  403  403  401  401  401  401  401
POST   /api/v1/readers/{reader_id}/tap     401  401  401  401  401  403  200  401  401  401  401
GET    /api/v1/events                      200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/tokens                      200  403  403  403  403  403  401  401  401  401  401
DELETE /api/v1/tokens/{id}                 200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/users                       200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/users/{name}                200  403  403  403  403  403  401  401  401  401  401
PATCH  /api/v1/users/{name}                200  403  403  403  403  403  401  401  401  401  401
DELETE /api/v1/users/{name}                200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/printers                    200  403  403  403  403  403  401  401  401  401  401
PATCH  /api/v1/printers/{name}             200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/groups                      200  403  403  403  403  403  401  401  401  401  401
PATCH  /api/v1/groups/{name}               200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/cards                       200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/readers                     200  403  403  403  403  403  401  401  401  401  401
POST   /api/v1/readers/{reader_id}/rotate  200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/reports/usage               200  200  403  403  403  403  401  401  401  401  401
GET    /api/v1/printers/{name}             200  403  403  403  403  403  401  401  401  401  401
DELETE /api/v1/printers/{name}             200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/groups/{name}               200  403  403  403  403  403  401  401  401  401  401
DELETE /api/v1/groups/{name}               200  403  403  403  403  403  401  401  401  401  401
DELETE /api/v1/cards/{card}                200  403  403  403  403  403  401  401  401  401  401
GET    /api/v1/readers/{reader_id}         200  403  403  403  403  403  401  401  401  401  401
PATCH  /api/v1/readers/{reader_id}         200  403  403  403  403  403  401  401  401  401  401
DELETE /api/v1/readers/{reader_id}         200  403  403  403  403  403  401  401  401  401  401
"""


def _parse_matrix(table: str) -> dict[tuple[str, str], tuple[int, ...]]:
    lines = table.strip().splitlines()[1:]
    parsed = {(m, r): tuple(int(x) for x in rest) for m, r, *rest in map(str.split, lines)}
    assert len(parsed) == len(lines), "a row is given twice"
    return parsed


MATRIX = _parse_matrix(MATRIX_TABLE)
ERROR_CODES = {401: "unauthorized", 403: "forbidden", 404: "not-found"}
CONTENT_TYPES = {"/metrics": "text/plain", "/api/v1/printouts.csv": "text/csv"}


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- the world the matrix runs in ---------------------------------------------------------


@dataclasses.dataclass
class World:
    sessions: Sessions
    tokens: dict[str, str]  # by role, plus "bob" and "revoked"
    readers: dict[str, str]  # reader id -> token
    old_reader_token: str  # lobby's token before a rotation
    printouts: dict[str, int]  # alice's and bob's print-outs
    accounts: dict[str, int]  # personal accounts
    charged: int  # alice's charged print-out (reversible, twice is a no-op)
    carol_card: str  # a card whose owner has nothing held: a tap answers 200

    async def fresh_job(self, owner: str, mode: PrinterMode, reason: str | None = None) -> int:
        """A new held job (hold mode) or ticket (ticket mode) of ``owner``, held ``reason``."""
        name = "pp-hold" if mode is PrinterMode.HOLD else "pp-ticket"
        async with self.sessions() as s, s.begin():
            printer = await s.scalar(select(Printer).where(Printer.name == name))
            assert printer is not None
            po = await f.print_out(s, printer, owner, title=f"{owner}-{secrets.token_hex(3)}")
            assert await billing_status.transition(
                s, po, PrintStatus.HELD, actor="intake", reason=reason
            )
            return po.id


async def seed(sessions: Sessions) -> World:
    async with sessions() as s, s.begin():
        # alice's delegations charge others: she has the delegate right (SPEC §3).
        accounts = {
            name: (await f.user(s, name, delegate=name == "alice")).id
            for name in ("alice", "bob", "carol")
        }
        direct = await f.printer(s, "pp-direct")
        hold = await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        await f.printer(s, "pp-hold-far", mode=PrinterMode.HOLD)
        await f.printer(s, "pp-ticket", mode=PrinterMode.TICKET)
        printouts = {
            "alice": (await f.print_out(s, direct, "alice", title="alice-report")).id,
            "bob": (await f.print_out(s, direct, "bob", title="bob-report")).id,
        }
        charged = await f.print_out(s, hold, "alice", title="alice-charged")
        await f.charge(s, charged, "0.30")
        tokens = {role: await f.token(s, role) for role in ROLES if role != "user"}
        tokens["user"] = await f.token(s, "user", user="alice")
        tokens["bob"] = await f.token(s, "user", user="bob")
        tokens["revoked"] = await f.token(s, "admin")
        await s.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == hash_token(tokens["revoked"]))
            .values(revoked_at=f.T0)
        )
        old = await nfc_admin.add_reader(s, "lobby", ["pp-hold"])
        readers = {
            "lobby": await nfc_admin.rotate_reader_token(s, "lobby"),
            "far": await nfc_admin.add_reader(s, "far", ["pp-hold-far"]),
        }
        await nfc_admin.add_card(s, "carol", "04:99:22:33")
    return World(sessions, tokens, readers, old, printouts, accounts, charged.id, "04:99:22:33")


def make_app(db_url: str, spool: Path, socket: Path | None = None) -> web.Application:
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(spool)},
            "intake": {"socket": str(socket) if socket else ""},
        }
    )
    return create_app(config, workers=False, intake=socket is not None)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path) -> Client:
    return await aiohttp_client(make_app(db_url, tmp_path / "spool"))


@pytest.fixture
async def world(sessionmaker: Sessions) -> World:
    return await seed(sessionmaker)


# --- one cell --------------------------------------------------------------------------------


@dataclasses.dataclass
class Call:
    path: str
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    body: dict[str, Any] | None = None


def _headers(world: World, column: str, reader: bool) -> list[dict[str, str]]:
    """The Authorization headers of a column (several for malformed and bad)."""
    admin = world.readers["lobby"] if reader else world.tokens["admin"]
    if column in ROLES:
        return [{"Authorization": bearer(world.tokens[column])}]
    if column == "other":
        token = world.readers["lobby"] if reader else world.tokens["user"]
        return [{"Authorization": bearer(token)}]
    if column == "nfc":
        return [{"Authorization": bearer(world.readers["lobby"])}]
    if column == "none":
        return [{}]
    if column == "malformed":
        return [
            {"Authorization": value}
            for value in (
                "Basic YWxpY2U6c2VjcmV0",
                "Bearer",
                "Bearer ",
                f"Token {admin}",
                admin,
                f"Bearer: {admin}",
                f"Bearer{admin}",
            )
        ]
    if column == "bad":
        return [
            {"Authorization": bearer(value)}
            for value in (
                "pp_doesnotexist",
                admin[3:],  # without the prefix
                admin + "x",
                admin[:-1],
                "pp_" + "a" * 300,
                hash_token(admin),  # the stored hash is not a token
            )
        ]
    if column == "revoked":
        revoked = world.old_reader_token if reader else world.tokens["revoked"]
        return [{"Authorization": bearer(revoked)}]
    raise AssertionError(column)


async def prepare(world: World, method: str, route: str, column: str) -> Call:
    """The request of one cell; mutating cells get fresh resources."""
    mine = column != "other"
    owner = "alice" if mine else "bob"
    if route in ("/api/v1/printouts", "/api/v1/printouts.csv", "/api/v1/jobs/held"):
        return Call(route, {} if mine else {"user": "bob"})
    if route == "/api/v1/printouts/{id}":
        return Call(route.replace("{id}", str(world.printouts[owner])))
    if route == "/api/v1/printouts/{id}/reverse":
        return Call(route.replace("{id}", str(world.charged)), body={"reason": "matrix"})
    if route in ("/api/v1/accounts/{id}/transactions", "/api/v1/accounts/{id}"):
        if method == "DELETE":
            async with world.sessions() as s, s.begin():
                account = await f.shared(s, f"Gone{secrets.token_hex(3)}")
            return Call(route.replace("{id}", str(account.id)))
        body = {"credit_limit": "5.00"} if method == "PATCH" else None
        return Call(route.replace("{id}", str(world.accounts[owner])), body=body)
    if route == "/api/v1/accounts/{id}/adjustments":
        key = secrets.token_hex(6)
        body = {"amount": "1.00", "reason": "deposit", "idempotency_key": key}
        return Call(route.replace("{id}", str(world.accounts[owner])), body=body)
    if route in ("/api/v1/jobs/{id}/release", "/api/v1/jobs/{id}/cancel"):
        return Call(route.replace("{id}", str(await world.fresh_job(owner, PrinterMode.HOLD))))
    if route in ("/api/v1/jobs/{id}/recheck", "/api/v1/jobs/{id}/delegation"):
        # Held for its delegation (user-unknown, the user added since): both fix it.
        job = await world.fresh_job(owner, PrinterMode.HOLD, reason="user-unknown")
        body = {"delegators": "carol"} if route.endswith("/delegation") else None
        return Call(route.replace("{id}", str(job)), body=body)
    if route == "/api/v1/jobs/{id}/redirect":
        job = await world.fresh_job(owner, PrinterMode.HOLD)
        return Call(route.replace("{id}", str(job)), body={"printer": "pp-hold-far"})
    if route in ("/api/v1/tickets/{id}/release", "/api/v1/tickets/{id}/cancel"):
        return Call(route.replace("{id}", str(await world.fresh_job(owner, PrinterMode.TICKET))))
    if route == "/api/v1/delegations":
        body: dict[str, Any] = {"printer": "pp-hold", "delegators": "carol"}
        if column != "user":
            body["delegate"] = owner
        return Call(route, body=body)
    if route == "/api/v1/cards":
        return Call(route, body={"user": owner, "card": secrets.token_hex(4)})
    if route == "/api/v1/readers/{reader_id}/tap":
        reader = "far" if column == "other" else "lobby"
        return Call(route.replace("{reader_id}", reader), body={"card": world.carol_card})
    if route == "/api/v1/tokens/{id}":
        async with world.sessions() as s, s.begin():
            await f.token(s, "admin")
            fresh = await s.scalar(select(ApiToken.id).order_by(ApiToken.id.desc()).limit(1))
        return Call(route.replace("{id}", str(fresh)))
    if route == "/api/v1/users/{name}":
        if method == "DELETE":
            name = f"gone{secrets.token_hex(3)}"
            async with world.sessions() as s, s.begin():
                await f.user(s, name)
            return Call(route.replace("{name}", name))
        body = {"email": "carol@example.org"} if method == "PATCH" else None
        return Call(route.replace("{name}", "carol"), body=body)
    if route == "/api/v1/groups/{name}":
        async with world.sessions() as s, s.begin():
            name = f"g{secrets.token_hex(3)}"
            await f.group(s, name)
        body = {"add_members": ["carol"]} if method == "PATCH" else None
        return Call(route.replace("{name}", name), body=body)
    if route in ("/api/v1/readers/{reader_id}/rotate", "/api/v1/readers/{reader_id}"):
        reader = f"r{secrets.token_hex(3)}"
        async with world.sessions() as s, s.begin():
            await nfc_admin.add_reader(s, reader, ["pp-hold"])
        body = {"card_format": "dec"} if method == "PATCH" else None
        return Call(route.replace("{reader_id}", reader), body=body)
    if route == "/api/v1/reports/usage":
        return Call(route, {"group_by": "account"})
    if route == "/api/v1/printers/{name}":
        if method == "DELETE":
            name = f"pp-gone-{secrets.token_hex(3)}"
            async with world.sessions() as s, s.begin():
                await f.printer(s, name)
            return Call(route.replace("{name}", name))
        body = {"cost_mono": "0.10"} if method == "PATCH" else None
        return Call(route.replace("{name}", "pp-direct"), body=body)
    if route == "/api/v1/cards/{card}":
        card = secrets.token_hex(4)
        async with world.sessions() as s, s.begin():
            await nfc_admin.add_card(s, "carol", card)
        return Call(route.replace("{card}", card))
    assert "{" not in route, f"no resource for {route} in prepare()"
    return Call(route)


async def check_cell(
    client: Client,
    world: World,
    cell: tuple[str, str, str],
    expected: int,
    *,
    head: bool,
) -> Served:
    """Sends the cell's requests and checks each answer; returns what it sent."""
    method, route, column = cell
    call = await prepare(world, method, route, column)
    reader = route.endswith("/tap")
    sent: Served = Counter()
    for headers in _headers(world, column, reader):
        where = f"{method} {call.path} as {column} ({headers.get('Authorization', '-')[:40]})"
        data = None if call.body is None else json.dumps(call.body)
        async with client.request(
            method, call.path, params=call.params, headers=headers, data=data
        ) as resp:
            raw = await resp.read()
            sent[method, route, expected] += 1
            assert resp.status == expected, f"{where}: {resp.status} {raw[:300]!r}"
            if expected >= 400:
                body = json.loads(raw)
                assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, where
                assert body["error"]["code"] == ERROR_CODES[expected], where
                if expected == 401:
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer"), where
            else:
                assert resp.content_type == CONTENT_TYPES.get(route, "application/json"), where
                if column in ("user", "other") and route != "/api/v1/openapi.json":
                    assert b"bob" not in raw, f"{where} shows bob's data: {raw[:300]!r}"
        if head and method == "GET":
            async with client.head(call.path, params=call.params, headers=headers) as resp:
                sent["HEAD", route, expected] += 1
                assert resp.status == expected, f"HEAD {where}: {resp.status}"
    return sent


def router_endpoints(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, route) of the app; HEAD is aiohttp's twin of each GET."""
    found = set()
    gets = set()
    heads = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        if is_web_route(route):  # the web app's pages: tests/test_web.py
            continue
        if route.method == "HEAD":
            heads.add(resource.canonical)
        else:
            found.add((route.method, resource.canonical))
            if route.method == "GET":
                gets.add(resource.canonical)
    assert heads <= gets, f"HEAD without GET: {heads - gets}"
    return found


# --- the matrix ----------------------------------------------------------------------------


def test_every_endpoint_has_a_row(tmp_path: Path) -> None:
    app = make_app(f"sqlite+aiosqlite:///{tmp_path}/x.db", tmp_path / "spool")
    endpoints = router_endpoints(app)
    missing = endpoints - set(MATRIX)
    stale = set(MATRIX) - endpoints
    assert not missing, f"endpoints without a row in MATRIX: {sorted(missing)}"
    assert not stale, f"rows in MATRIX for endpoints that do not exist: {sorted(stale)}"
    assert all(len(row) == len(COLUMNS) for row in MATRIX.values())


async def test_permission_matrix(client: Client, world: World, db_url: str) -> None:
    assert router_endpoints(client.app) == set(MATRIX)
    sqlite = db_url.startswith("sqlite")
    columns = COLUMNS if sqlite else PG_COLUMNS
    sent: Served = Counter()
    for (method, route), row in MATRIX.items():
        for column, expected in zip(COLUMNS, row, strict=True):
            if column in columns:
                cell = (method, route, column)
                sent += await check_cell(client, world, cell, expected, head=sqlite)
    # The server's own count: every request reached the route the matrix meant
    # and nothing else was answered (no request fell through to another route).
    assert await served(client, world.tokens["admin"]) == sent


async def test_a_token_bound_to_a_deleted_user_is_refused(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    """A ``user`` token whose user row is gone is not an anonymous staff token."""
    async with sessionmaker() as s, s.begin():
        token = await f.token(s, "user", user="carol")
        found = await s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        assert found is not None
        found.user_id = None
    for path in ("/api/v1/printouts", "/api/v1/jobs/held", "/api/v1/accounts"):
        async with client.get(path, headers={"Authorization": bearer(token)}) as resp:
            assert resp.status == 401, path


# --- secrets at rest -------------------------------------------------------------------------


async def test_tokens_are_stored_as_their_sha256(world: World, sessionmaker: Sessions) -> None:
    secrets_ = [*world.tokens.values(), *world.readers.values(), world.old_reader_token]
    async with sessionmaker() as s:
        api_rows = (await s.execute(text("SELECT * FROM api_tokens"))).mappings().all()
        reader_rows = (await s.execute(text("SELECT * FROM readers"))).mappings().all()
        stored = {row["token_hash"] for row in [*api_rows, *reader_rows]}
    for token in [*world.tokens.values(), *world.readers.values()]:
        digest = hashlib.sha256(token.encode()).hexdigest()
        assert hash_token(token) == digest
        assert digest in stored
    # No column of any row holds a secret, or the part after its prefix.
    for row in [*api_rows, *reader_rows]:
        cells = " ".join(str(v) for v in row.values())
        for token in secrets_:
            assert token not in cells and token[3:] not in cells
    for row in [*api_rows, *reader_rows]:
        assert re.fullmatch(r"[0-9a-f]{64}", row["token_hash"])


# --- the spool ---------------------------------------------------------------------------------


async def post_intake(socket: Path, meta: dict[str, Any], body: bytes) -> tuple[int, Any]:
    import base64

    header = base64.b64encode(json.dumps(meta).encode()).decode()
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket))) as session,
        session.post(
            "http://intake/intake/v1/jobs", data=body, headers={META_HEADER: header}
        ) as resp,
    ):
        return resp.status, await resp.json()


@pytest.fixture
async def with_intake(
    aiohttp_client: AiohttpClient, db_url: str, short_tmp: Path, sessionmaker: Sessions
) -> tuple[Client, Path, World]:
    world = await seed(sessionmaker)
    app = make_app(db_url, short_tmp / "spool", short_tmp / "i.sock")
    return await aiohttp_client(app), short_tmp, world


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_spool_is_private_and_never_served(
    with_intake: tuple[Client, Path, World], sessionmaker: Sessions
) -> None:
    client, root, world = with_intake
    spool = root / "spool"
    pdf = make_pdf(root / "doc.pdf", 1).read_bytes()
    meta = {"printer": "pp-direct", "user": "alice", "title": "secret.pdf",
            "job_uuid": "urn:uuid:perm-1", "content_type": "application/pdf"}  # fmt: skip
    status, answer = await post_intake(root / "i.sock", meta, pdf)
    assert status == 201, answer
    async with sessionmaker() as s:
        pin = await s.get(PrintIn, answer["print_in"])
        assert pin is not None and pin.spool_path is not None
        spooled = Path(pin.spool_path)
    assert spooled.parent == spool / "jobs"
    assert mode(spooled) == 0o600
    for directory in (spool, spool / "jobs", spool / "incoming"):
        assert mode(directory) == 0o700, directory
    assert mode(root / "i.sock") == 0o600
    assert str(spool) not in json.dumps(answer)

    # No route serves files: no static resource, in the API or the intake.
    for app in (client.app, client.app[INTAKE_RUNNER].app):
        for resource in app.router.resources():
            assert not isinstance(resource, web.StaticResource), resource
    admin = {"Authorization": bearer(world.tokens["admin"])}
    for path in (
        str(spooled),
        f"/spool/jobs/{spooled.name}",
        f"/jobs/{spooled.name}",
        f"/api/v1/{spooled.name}",
        f"/api/v1/../../{spooled.relative_to('/')}",
        f"/api/v1/printouts/{pin.id}/../../../{spooled.relative_to('/')}",
        f"/api/v1/printouts/%2e%2e%2f%2e%2e%2f{spooled.name}",
        "/static/" + spooled.name,
    ):
        url = URL(str(client.make_url("/")).rstrip("/") + path, encoded=True)
        async with client.session.get(url, headers=admin) as resp:
            raw = await resp.read()
            assert resp.status == 404, (path, resp.status)
            assert pdf[:64] not in raw and str(spool).encode() not in raw, path
    # The print-out's own answers name no file either.
    for path in (f"/api/v1/printouts/{answer['print_out']}", "/api/v1/printouts",
                 "/api/v1/printouts.csv"):  # fmt: skip
        async with client.get(path, headers=admin) as resp:
            raw = await resp.read()
            assert resp.status == 200, path
            assert str(spool).encode() not in raw and spooled.name.encode() not in raw, path


# --- no path reflection ------------------------------------------------------------------------

TRAVERSALS = (
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\..\\boot.ini",
    "....//....//etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "file:///etc/passwd",
)
# Every endpoint's string inputs: query parameters and body fields.
STRING_FIELDS: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    # First: the audit view shows what earlier requests stored (their values as
    # data, which is no reflection of a path the service made).
    ("GET", "/api/v1/events"): (("actor", "subject", "limit", "cursor"), ()),
    ("GET", "/healthz"): ((), ()),
    ("GET", "/metrics"): ((), ()),
    ("GET", "/api/v1/openapi.json"): ((), ()),
    ("GET", "/api/v1/printouts"): (
        (
            *("user", "printer", "status", "since", "until", "account", "payer", "role"),
            *("limit", "cursor"),
        ),
        (),
    ),
    ("GET", "/api/v1/printouts.csv"): (
        ("user", "printer", "status", "since", "until", "account", "payer", "role"),
        (),
    ),
    ("GET", "/api/v1/printouts/{id}"): ((), ()),
    ("POST", "/api/v1/printouts/{id}/reverse"): ((), ("reason",)),
    ("GET", "/api/v1/accounts"): (("type", "limit", "cursor"), ()),
    ("GET", "/api/v1/accounts/{id}/transactions"): (("limit", "cursor"), ()),
    ("GET", "/api/v1/accounts/{id}"): ((), ()),
    ("PATCH", "/api/v1/accounts/{id}"): ((), ("credit_limit",)),
    ("DELETE", "/api/v1/accounts/{id}"): ((), ()),
    ("POST", "/api/v1/accounts/{id}/adjustments"): ((), ("amount", "reason", "idempotency_key")),
    ("GET", "/api/v1/jobs/held"): (("user", "printer", "limit", "cursor"), ()),
    ("POST", "/api/v1/jobs/{id}/release"): ((), ()),
    ("POST", "/api/v1/jobs/{id}/cancel"): ((), ()),
    ("POST", "/api/v1/jobs/{id}/recheck"): ((), ()),
    ("PUT", "/api/v1/jobs/{id}/delegation"): ((), DELEGATION_KEYS),
    ("POST", "/api/v1/jobs/{id}/redirect"): ((), ("printer",)),
    ("GET", "/api/v1/tickets"): (("user", "printer", "limit", "cursor"), ()),
    ("POST", "/api/v1/tickets/{id}/release"): ((), ("printer",)),
    ("POST", "/api/v1/tickets/{id}/cancel"): ((), ()),
    ("POST", "/api/v1/delegations"): ((), ("printer", "delegate", *DELEGATION_KEYS)),
    ("POST", "/api/v1/cards"): ((), ("user", "card", "format", "byte_order")),
    ("POST", "/api/v1/readers/{reader_id}/tap"): ((), ("card",)),
    ("GET", "/api/v1/tokens"): ((), ()),
    ("DELETE", "/api/v1/tokens/{id}"): ((), ()),
    ("GET", "/api/v1/users"): ((), ()),
    ("GET", "/api/v1/users/{name}"): ((), ()),
    ("PATCH", "/api/v1/users/{name}"): ((), ("email", "full_name")),
    ("DELETE", "/api/v1/users/{name}"): ((), ()),
    ("GET", "/api/v1/printers"): ((), ()),
    ("PATCH", "/api/v1/printers/{name}"): ((), ("target", "cost_mono")),
    ("GET", "/api/v1/groups"): ((), ()),
    ("PATCH", "/api/v1/groups/{name}"): ((), ()),
    ("GET", "/api/v1/cards"): (("user", "deleted"), ()),
    ("GET", "/api/v1/readers"): ((), ()),
    ("POST", "/api/v1/readers/{reader_id}/rotate"): ((), ()),
    ("GET", "/api/v1/reports/usage"): (("group_by", "since", "until"), ()),
    ("GET", "/api/v1/printers/{name}"): ((), ()),
    ("GET", "/api/v1/groups/{name}"): ((), ()),
    ("DELETE", "/api/v1/cards/{card}"): (("format", "byte_order"), ()),
    ("GET", "/api/v1/readers/{reader_id}"): ((), ()),
    ("PATCH", "/api/v1/readers/{reader_id}"): ((), ("card_format", "byte_order")),
    # Last: the deletions (of lobby too: the tap above has had its turn).
    ("DELETE", "/api/v1/printers/{name}"): ((), ()),
    ("DELETE", "/api/v1/groups/{name}"): ((), ()),
    ("DELETE", "/api/v1/readers/{reader_id}"): ((), ()),
}
# Plausible values for the fields not under test, so that each request gets as far
# as the field under test can take it.
PLAUSIBLE = {
    "printer": "pp-hold",
    "delegators": "carol",
    "user": "alice",
    "card": "0a0b0c0d",
    "amount": "1.00",
    "reason": "deposit",
    "idempotency_key": "traversal",
}


def _encodings(value: str) -> list[str]:
    """How an echo of ``value`` may look in a JSON body (raw, escaped, repr'd)."""
    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1], json.dumps(repr(value))[1:-1]}
    return sorted(forms, key=len, reverse=True)


def reflected(raw: str, value: str, spool: str, *, also: tuple[str, ...] = ()) -> list[str]:
    """What in an answer looks like a file path the service derived or read.

    The value itself may come back as the name that was not found ("unknown
    printer '../../etc/passwd'"): an error that names its input is a clear
    error (SPEC §10). What must never come back is anything the service made
    of it: a joined or resolved path, the spool directory, a file's content.
    """
    for form in [e for v in (value, unquote(value), *also) for e in _encodings(v)]:
        raw = raw.replace(form, "")
    markers = ("etc/passwd", "etc\\\\passwd", "boot.ini", spool)
    found = [marker for marker in markers if marker in raw]
    if "root:x:0:0" in raw or "[boot loader]" in raw:
        found.append("file content")
    return found


async def test_no_answer_reflects_a_file_path(client: Client, world: World, tmp_path: Path) -> None:
    assert router_endpoints(client.app) == set(STRING_FIELDS)
    spool = str(tmp_path / "spool")
    admin, lobby = world.tokens["admin"], world.readers["lobby"]
    requests = 0
    for (method, route), (params, fields) in STRING_FIELDS.items():
        token = lobby if route.endswith("/tap") else admin
        for value in TRAVERSALS:
            # The value in each path parameter, each query parameter, each body field.
            some_id = "999999" if route == "/api/v1/tokens/{id}" else "1"  # not admin's own
            paths = [route.replace("{id}", some_id).replace("{reader_id}", "lobby")]
            if "{" in route:
                quoted = value.replace("/", "%2F").replace("\\", "%5C")
                paths.append(re.sub(r"\{[a-z_]+\}", quoted, route))
            plausible = {k: PLAUSIBLE[k] for k in fields if k in PLAUSIBLE}
            cases: list[tuple[str, dict[str, str], dict[str, str]]] = [
                (p, {}, plausible) for p in paths
            ]
            cases += [(paths[0], {name: value}, plausible) for name in params]
            cases += [(paths[0], {}, {**plausible, name: value}) for name in fields]
            for path, query, body in cases:
                data = None if method == "GET" else json.dumps(body)
                async with client.session.request(
                    method,
                    URL(str(client.make_url(path)), encoded="%" in path),
                    params=query,
                    data=data,
                    headers={"Authorization": bearer(token)},
                ) as resp:
                    raw = (await resp.read()).decode("utf-8", "replace")
                    assert resp.status < 500, (method, path, query, body, raw[:300])
                    found = reflected(raw, value, spool)
                    assert not found, (method, path, query, body, found, raw[:300])
                    requests += 1
    assert requests > 200


async def test_intake_never_writes_where_a_title_points(
    with_intake: tuple[Client, Path, World],
) -> None:
    """Titles, users, printers and options naming paths are data, never file names."""
    _, root, _ = with_intake
    spool = root / "spool"
    before = set(os.listdir(root))
    for i, value in enumerate(TRAVERSALS):
        for field in ("title", "options", "user", "printer", "content_type", "host"):
            meta = {"printer": "pp-direct", "user": "alice", "job_uuid": f"urn:t:{i}:{field}"}
            meta[field] = f"delegators={value}" if field == "options" else value
            status, answer = await post_intake(root / "i.sock", meta, b"hello\n")
            assert status in (201, 400, 404), (field, value, status, answer)
            # Options are parsed as CUPS does (backslash escapes): echoed as parsed.
            parsed = parse_cups_options(meta[field])["delegators"] if field == "options" else value
            found = reflected(json.dumps(answer), value, str(spool), also=(parsed,))
            assert not found, (field, answer, found)
    assert set(os.listdir(root)) == before
    names = os.listdir(spool / "jobs")
    assert names and all(re.fullmatch(r"[0-9a-f]{32}", n) for n in names), names
    assert os.listdir(spool / "incoming") == []
