"""``GET /api/v1/openapi.json`` against the live app, on SQLite and PostgreSQL.

* The document is valid OpenAPI 3.1, its schemas valid JSON Schema 2020-12.
* Every route of the app is in it, and nothing else.
* Live answers of every operation (each 2xx and the usual errors) match the
  documented status, content type, headers and body schema.
* ``x-roles`` is what the handlers enforce: every role either passes or gets 403.
* Property-based: schemathesis generates requests from the document (valid
  and invalid ones) against the live server: never a 5xx, every answer as
  documented, invalid input refused, auth enforced where it is declared.

The app runs on the test's event loop; schemathesis (blocking ``requests``)
runs in a worker thread against the same live server.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from pytest_aiohttp import AiohttpClient
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks as oas_checks
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.enums import PrinterMode, PrintStatus
from proxy.api.openapi import document
from proxy.app import create_app
from proxy.config import build_config
from proxy.listen import MAX_REQUEST_LINE
from proxy.nfc_admin import add_reader
from proxy.web.setup import is_web_route
from tests import factories as f
from tests.served import served

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
JSON = dict[str, Any]

SPEC_PATH = "/api/v1/openapi.json"
# Examples per operation and generation mode (valid, invalid) in the property test.
EXAMPLES = 10


def make_app(db_url: str, tmp_path: Path) -> web.Application:
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "sp")}})
    return create_app(config, workers=False, intake=False)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path) -> Client:
    # The request-line limit `proxyprint serve` gives the API (the documented query limits);
    # a TestServer takes handler arguments only when it is started.
    server = TestServer(make_app(db_url, tmp_path))
    await server.start_server(max_line_size=MAX_REQUEST_LINE)
    return await aiohttp_client(server)


@dataclasses.dataclass
class World:
    tokens: dict[str, str]
    reader_token: str
    ids: dict[str, int]


async def seed(sessions: Sessions) -> World:
    """Enough for a 2xx from every operation, and for the usual errors."""
    async with sessions() as s, s.begin():
        alice = await f.user(s, "alice", delegate=True)  # her delegations charge bob
        bob = await f.user(s, "bob", delegate=True)  # an admin registers his delegations
        await f.group(s, "sales")
        await f.shared(s, "Events/Gala")
        direct = await f.printer(s, "pp-direct")
        hold = await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        ticket = await f.printer(s, "pp-ticket", mode=PrinterMode.TICKET)
        charged = await f.print_out(s, direct, "alice", charged_to=[(alice, 1), (bob, 2)])
        await f.charge(s, charged, "0.90")
        never_charged = await f.print_out(s, direct, "bob", charged_to=[(bob, 1)])
        await f.finish(s, never_charged, PrintStatus.CANCELED, reason="canceled-in-cups")
        held = {}
        for name in ("release", "cancel", "tap", "redirect"):
            po = await f.print_out(s, hold, "alice", charged_to=[(alice, 1)])
            await f.finish(s, po, PrintStatus.HELD)
            po.hold_until = f.T0 + dt.timedelta(hours=1)
            held[name] = po.id
        for name, reason in (("recheck", "user-unknown"), ("put", "delegation-invalid")):
            po = await f.print_out(s, hold, "alice")  # held for its delegation: no shares
            await f.finish(s, po, PrintStatus.HELD, reason=reason)
            held[name] = po.id
        tickets = {}
        for n, name in enumerate(("release", "cancel"), 1):
            po = await f.print_out(s, ticket, "bob", charged_to=[(bob, 1)])
            await f.finish(s, po, PrintStatus.HELD)
            po.ticket_number = f"T-{n:06d}"
            po.ticket_cost = Decimal("1.50")
            po.cost_detail = [{"description": "job ticket", "amount": "1.50"}]
            tickets[name] = po.id
        reader_token = await add_reader(s, "r1", ["pp-hold"])
        await add_reader(s, "r2", ["pp-hold"])
        tokens = {
            "admin": await f.token(s, "admin"),
            "accounts-editor": await f.token(s, "accounts-editor"),
            "ticket-operator": await f.token(s, "ticket-operator"),
            "reader": await f.token(s, "reader"),
            "user": await f.token(s, "user", user="alice"),
        }
        ids = {
            "charged": charged.id,
            "never_charged": never_charged.id,
            "alice": alice.id,
            **{f"held_{k}": v for k, v in held.items()},
            **{f"ticket_{k}": v for k, v in tickets.items()},
        }
    return World(tokens, reader_token, ids)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Checker:
    """Validates live answers against the document; remembers what it saw."""

    def __init__(self, doc: JSON) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str, int]] = set()

    def schema(self, schema: JSON) -> Draft202012Validator:
        # The document's "#/components/..." references resolve against this root.
        return Draft202012Validator({**schema, "components": self.doc["components"]})

    def resolve(self, item: JSON) -> JSON:
        ref = item.get("$ref")
        if ref is None:
            return item
        node: Any = self.doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return dict(node)

    async def check(self, resp: ClientResponse, template: str, method: str) -> Any:
        op = self.doc["paths"][template][method.lower()]
        status = str(resp.status)
        text = await resp.text()
        assert status in op["responses"], f"{method} {template}: undocumented {status}: {text}"
        spec = op["responses"][status]
        assert resp.content_type in spec["content"], (template, status, resp.content_type)
        for name, declared in spec.get("headers", {}).items():
            header = self.resolve(declared)
            if header.get("required"):
                assert name in resp.headers, (template, status, name)
            if name in resp.headers:
                self.schema(header["schema"]).validate(resp.headers[name])
        body: Any = text
        if resp.content_type == "application/json":
            body = await resp.json()
            self.schema(spec["content"]["application/json"]["schema"]).validate(body)
        self.seen.add((template, method.lower(), resp.status))
        return body


async def call(
    client: Client,
    checker: Checker,
    method: str,
    template: str,
    token: str | None = None,
    *,
    expect: int,
    path: str | None = None,
    json: Any = None,
    params: dict[str, str] | None = None,
) -> Any:
    headers = bearer(token) if token else {}
    async with client.request(
        method, path or template, headers=headers, json=json, params=params
    ) as resp:
        body = await checker.check(resp, template, method)
        assert resp.status == expect, (method, path or template, resp.status, body)
        return body


# --- the document itself ------------------------------------------------------------


def test_the_document_is_valid_openapi_31() -> None:
    doc = copy.deepcopy(document())
    schemathesis.openapi.from_dict(doc).validate()
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    ops = [op for item in doc["paths"].values() for op in item.values()]
    assert len({op["operationId"] for op in ops}) == len(ops)
    for op in ops:
        assert op["description"], op["operationId"]
        if op["security"]:
            assert "Roles:" in op["description"] or op["operationId"] == "readerTap"


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = make_app(f"sqlite+aiosqlite:///{tmp_path}/x.db", tmp_path)
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD" and not is_web_route(route)
    }
    documented = {(path, method) for path, item in document()["paths"].items() for method in item}
    assert routes == documented


# --- live answers -------------------------------------------------------------------


async def test_live_answers_match_the_document(client: Client, sessionmaker: Sessions) -> None:
    world = await seed(sessionmaker)
    async with client.get(SPEC_PATH) as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc == document()
    checker = Checker(doc)
    t, ids = world.tokens, world.ids
    admin, user, editor, operator = (
        t["admin"],
        t["user"],
        t["accounts-editor"],
        t["ticket-operator"],
    )

    async def c(method: str, template: str, token: str | None, expect: int, **kw: Any) -> Any:
        return await call(client, checker, method, template, token, expect=expect, **kw)

    # service
    assert (await c("GET", "/healthz", None, 200))["status"] == "ok"
    await c("GET", SPEC_PATH, None, 200)
    metrics_text = await c("GET", "/metrics", t["reader"], 200)
    assert "proxyprint_print_outs" in metrics_text
    await c("GET", "/metrics", admin, 200)
    await c("GET", "/metrics", None, 401)
    await c("GET", "/metrics", user, 403)

    # print-outs
    po = "/api/v1/printouts"
    page = await c("GET", po, admin, 200, params={"limit": "2"})
    assert len(page["items"]) == 2 and page["next_cursor"]
    await c("GET", po, admin, 200, params={"cursor": page["next_cursor"], "status": "held"})
    await c("GET", po, user, 200)
    await c("GET", po, user, 403, params={"user": "bob"})
    await c("GET", po, admin, 400, params={"limit": "0"})
    await c("GET", po, None, 401)
    await c("GET", po, t["reader"], 403)
    one = f"{po}/{{id}}"
    detail = await c("GET", one, admin, 200, path=f"{po}/{ids['charged']}")
    assert detail["events"] and detail["transactions"]
    await c("GET", one, admin, 404, path=f"{po}/999999")
    csv = await c("GET", f"{po}.csv", admin, 200, params={"account": str(ids["alice"])})
    assert csv.startswith("id,created_at,") and csv.count("\r\n") == 6  # header + 5
    await c("GET", f"{po}.csv", admin, 400, params={"account": "0"})
    reverse = f"{po}/{{id}}/reverse"
    bob_txn = next(t["id"] for t in detail["transactions"] if t["account"]["name"] == "bob")
    assert all(
        t["reversed"] == {"amount": "0.00", "status": "none"} for t in detail["transactions"]
    )
    partial = await c("POST", reverse, editor, 200, path=f"{po}/{ids['charged']}/reverse",
                      json={"reason": "bob was not there", "transactions": [bob_txn]})  # fmt: skip
    assert partial["reversed"] == 1 and partial["print_out"]["reversed"]["status"] == "partial"
    await c("POST", reverse, editor, 400, path=f"{po}/{ids['charged']}/reverse",
            json={"reason": "x", "transactions": [999999]})  # fmt: skip
    await c("POST", reverse, editor, 400, path=f"{po}/{ids['charged']}/reverse", json={})
    first = await c("POST", reverse, editor, 200, path=f"{po}/{ids['charged']}/reverse",
                    json={"reason": "jammed"})  # fmt: skip
    assert first["reversed"] == 1 and first["print_out"]["reversed"]["status"] == "full"
    again = await c("POST", reverse, admin, 200, path=f"{po}/{ids['charged']}/reverse",
                    json={"reason": "again"})  # fmt: skip
    assert again["reversed"] == 0
    await c("POST", reverse, editor, 409, path=f"{po}/{ids['never_charged']}/reverse",
            json={"reason": "x"})  # fmt: skip
    await c("POST", reverse, editor, 400, path=f"{po}/{ids['charged']}/reverse", json={"x": 1})
    await c("POST", reverse, user, 403, path=f"{po}/{ids['charged']}/reverse")

    # held jobs
    held = await c("GET", "/api/v1/jobs/held", user, 200)
    assert {i["id"] for i in held["items"]} == {
        ids["held_release"],
        ids["held_cancel"],
        ids["held_tap"],
        ids["held_recheck"],
        ids["held_put"],
        ids["held_redirect"],
    }
    await c("GET", "/api/v1/jobs/held", admin, 200, params={"printer": "pp-hold"})
    release, cancel = "/api/v1/jobs/{id}/release", "/api/v1/jobs/{id}/cancel"
    await c("POST", release, user, 200, path=f"/api/v1/jobs/{ids['held_release']}/release")
    await c("POST", release, user, 409, path=f"/api/v1/jobs/{ids['held_release']}/release")
    await c("POST", release, admin, 409, path=f"/api/v1/jobs/{ids['ticket_release']}/release")
    await c("POST", cancel, admin, 200, path=f"/api/v1/jobs/{ids['held_cancel']}/cancel")
    await c("POST", cancel, admin, 409, path=f"/api/v1/jobs/{ids['held_cancel']}/cancel")
    await c("POST", cancel, user, 404, path="/api/v1/jobs/abc/cancel")
    recheck, put = "/api/v1/jobs/{id}/recheck", "/api/v1/jobs/{id}/delegation"
    fixed = await c("POST", recheck, user, 200, path=f"/api/v1/jobs/{ids['held_recheck']}/recheck")
    assert fixed["fixed"] and fixed["job"]["status_reason"] == "hold"  # waits for release
    await c("POST", recheck, admin, 409, path=f"/api/v1/jobs/{ids['held_recheck']}/recheck")
    put_path = f"/api/v1/jobs/{ids['held_put']}/delegation"
    await c("PUT", put, admin, 400, path=put_path, json={"delegators": "nobody"})
    await c("PUT", put, user, 403, path=put_path, json={"delegators": "bob"})
    replaced = await c("PUT", put, admin, 200, path=put_path, json={"delegators": "bob:2"})
    assert replaced["delegation"] == {"delegators": "bob:2"} and replaced["job"]["copies"] == 2
    redirect, to_direct = "/api/v1/jobs/{id}/redirect", {"printer": "pp-direct"}
    moved = f"/api/v1/jobs/{ids['held_redirect']}/redirect"
    await c("POST", redirect, user, 400, path=moved, json={})
    await c("POST", redirect, user, 404, path=moved, json={"printer": "pp-none"})
    await c("POST", redirect, user, 409, path=moved, json={"printer": "pp-ticket"})
    done = await c("POST", redirect, user, 200, path=moved, json=to_direct)
    assert done["job"]["status"] == "pending" and not done["new_print_out"]
    await c("POST", redirect, user, 409, path=moved, json=to_direct)  # on pp-direct already
    await c("POST", redirect, admin, 409, path=f"/api/v1/jobs/{ids['charged']}/redirect",
            json=to_direct)  # fmt: skip

    # NFC: a card for alice, then taps
    cards = "/api/v1/cards"
    card = await c("POST", cards, admin, 201, json={"user": "alice", "card": "04:A1:B2:C3"})
    assert card["card"] == "04a1b2c3"
    await c("POST", cards, admin, 409, json={"user": "alice", "card": "04A1B2C3"})
    await c("POST", cards, admin, 404, json={"user": "nobody", "card": "04A1B2C4"})
    await c("POST", cards, admin, 400, json={"user": "alice", "card": "zz"})
    await c("POST", cards, user, 403, json={"user": "alice", "card": "04A1B2C5"})
    tap = "/api/v1/readers/{reader_id}/tap"
    r1 = "/api/v1/readers/r1/tap"
    tapped = await c("POST", tap, world.reader_token, 200, path=r1, json={"card": "04a1b2c3"})
    # The rechecked and the re-delegated job wait for release too, as their mode says.
    released = [ids["held_tap"], ids["held_recheck"], ids["held_put"]]
    assert [r["id"] for r in tapped["released"]] == released
    await c("POST", tap, world.reader_token, 404, path=r1, json={"card": "0badcafe"})
    await c("POST", tap, world.reader_token, 400, path=r1, json={"card": "!"})
    await c("POST", tap, world.reader_token, 403, path="/api/v1/readers/r2/tap", json={"card": "x"})
    await c("POST", tap, admin, 401, path=r1, json={"card": "04a1b2c3"})

    # tickets
    tickets = await c("GET", "/api/v1/tickets", operator, 200)
    assert [i["number"] for i in tickets["items"]] == ["T-000001", "T-000002"]
    await c("GET", "/api/v1/tickets", user, 403)
    t_release, t_cancel = "/api/v1/tickets/{id}/release", "/api/v1/tickets/{id}/cancel"
    path = f"/api/v1/tickets/{ids['ticket_release']}/release"
    await c("POST", t_release, operator, 404, path=path, json={"printer": "pp-none"})
    await c("POST", t_release, operator, 400, path=path, json={"printer": 5})
    await c("POST", t_release, operator, 200, path=path, json={"printer": "pp-direct"})
    await c("POST", t_release, admin, 409, path=path)
    await c("POST", t_cancel, operator, 200, path=f"/api/v1/tickets/{ids['ticket_cancel']}/cancel")
    await c("POST", t_cancel, operator, 404, path=f"/api/v1/tickets/{ids['charged']}/cancel")

    # accounts and their ledger
    accounts = await c("GET", "/api/v1/accounts", admin, 200)
    assert {a["type"] for a in accounts["items"]} == {"user", "group", "shared"}
    await c("GET", "/api/v1/accounts", admin, 200, params={"type": "shared"})
    await c("GET", "/api/v1/accounts", user, 200)
    await c("GET", "/api/v1/accounts", admin, 400, params={"type": "person"})
    ledger = "/api/v1/accounts/{id}/transactions"
    entries = await c(
        "GET", ledger, admin, 200, path=f"/api/v1/accounts/{ids['alice']}/transactions"
    )
    assert {e["kind"] for e in entries["items"]} == {"charge", "reversal"}
    await c("GET", ledger, admin, 404, path="/api/v1/accounts/999999/transactions")
    one_account = "/api/v1/accounts/{id}"
    alice_path = f"/api/v1/accounts/{ids['alice']}"
    await c("GET", one_account, user, 200, path=alice_path)
    await c("GET", one_account, admin, 404, path="/api/v1/accounts/999999")
    limited = await c("PATCH", one_account, editor, 200, path=alice_path,
                      json={"credit_limit": "10.00"})  # fmt: skip
    assert limited["credit_limit"] == "10.00"
    await c("PATCH", one_account, editor, 400, path=alice_path, json={"credit_limit": "-1"})
    await c("PATCH", one_account, user, 403, path=alice_path, json={"credit_limit": None})
    gala = next(a for a in accounts["items"] if a["name"] == "Events")
    gala_path = f"/api/v1/accounts/{gala['id']}"
    restricted = await c("PATCH", one_account, editor, 200, path=gala_path,
                         json={"access": ["alice", "@sales"]})  # fmt: skip
    assert restricted["access"] == {"restricted": True, "users": ["alice"], "groups": ["sales"]}
    opened = await c("PATCH", one_account, editor, 200, path=gala_path, json={"access": None})
    assert opened["access"] == {"restricted": False, "users": [], "groups": []}
    await c("PATCH", one_account, editor, 400, path=alice_path, json={"access": ["bob"]})
    await c("PATCH", one_account, editor, 404, path=gala_path, json={"access": ["nobody"]})
    gone = await c("DELETE", one_account, admin, 200, path=f"/api/v1/accounts/{gala['id']}")
    assert gone["deleted_at"] is not None and gone["active"] is False
    await c("DELETE", one_account, admin, 400, path=alice_path)
    adjust = "/api/v1/accounts/{id}/adjustments"
    deposit = {"amount": "5.00", "reason": "cash", "idempotency_key": "k1"}
    await c("POST", adjust, editor, 201, path=f"{alice_path}/adjustments", json=deposit)
    again = await c("POST", adjust, editor, 200, path=f"{alice_path}/adjustments", json=deposit)
    assert again["created"] is False
    await c("POST", adjust, editor, 409, path=f"{alice_path}/adjustments",
            json={**deposit, "amount": "6.00"})  # fmt: skip
    await c("POST", adjust, editor, 400, path=f"{alice_path}/adjustments", json={"amount": "1"})

    # delegations
    dl = "/api/v1/delegations"
    made = await c("POST", dl, user, 201, json={"printer": "pp-direct", "delegators": "bob:2"})
    assert made["options"] == {"delegators": "bob:2"} and made["delegate"] == "alice"
    body = {
        "printer": "pp-hold",
        "delegate": "bob",
        "valid_minutes": 5,
        "shared-accounts": [{"name": "Events/Gala", "copies": 2}],
        "delegator-groups": ["sales"],
    }
    await c("POST", dl, admin, 201, json=body)
    await c("POST", dl, admin, 400, json={"printer": "pp-direct", "delegators": "nobody"})
    await c(
        "POST", dl, admin, 404, json={"printer": "pp-none", "delegate": "x", "delegators": "bob"}
    )
    await c("POST", dl, t["reader"], 403, json={})

    # administration
    users = await c("GET", "/api/v1/users", admin, 200)
    assert {u["name"] for u in users["items"]} == {"alice", "bob"}
    await c("GET", "/api/v1/users", user, 403)
    one_user = "/api/v1/users/{name}"
    await c("GET", one_user, admin, 200, path="/api/v1/users/alice")
    await c("GET", one_user, admin, 404, path="/api/v1/users/nobody")
    patched = await c("PATCH", one_user, admin, 200, path="/api/v1/users/bob",
                      json={"email": "bob@example.org", "active": False})  # fmt: skip
    assert patched["active"] is False and patched["email"] == "bob@example.org"
    await c("PATCH", one_user, admin, 400, path="/api/v1/users/bob", json={"name": "x"})
    await c("DELETE", one_user, admin, 200, path="/api/v1/users/bob")
    await c("DELETE", one_user, admin, 404, path="/api/v1/users/bob")
    printers_page = await c("GET", "/api/v1/printers", admin, 200)
    assert {p["name"] for p in printers_page["items"]} >= {"pp-direct", "pp-hold"}
    one_printer = "/api/v1/printers/{name}"
    changed = await c("PATCH", one_printer, admin, 200, path="/api/v1/printers/pp-direct",
                      json={"cost_mono": "0.20", "hold_expiry_mins": 15})  # fmt: skip
    assert changed["cost_mono"] == "0.20" and changed["hold_expiry_mins"] == 15
    await c("PATCH", one_printer, admin, 400, path="/api/v1/printers/pp-direct",
            json={"mode": "fast"})  # fmt: skip
    await c("PATCH", one_printer, admin, 404, path="/api/v1/printers/pp-none", json={})
    tokens_page = await c("GET", "/api/v1/tokens", admin, 200)
    editor_id = next(x["id"] for x in tokens_page["items"] if x["role"] == "accounts-editor")
    revoked = await c("DELETE", "/api/v1/tokens/{id}", admin, 200,
                      path=f"/api/v1/tokens/{editor_id}")  # fmt: skip
    assert revoked["state"] == "revoked"
    await c("DELETE", "/api/v1/tokens/{id}", admin, 404, path="/api/v1/tokens/999999")
    audit = await c("GET", "/api/v1/events", admin, 200, params={"subject": "printer:pp-direct"})
    assert [e["reason"] for e in audit["items"]] == ["updated"]
    assert audit["items"][0]["data"]["cost_mono"][1] == "0.20"
    await c("GET", "/api/v1/events", admin, 200, params={"limit": "1"})
    await c("GET", "/api/v1/events", editor, 401)  # revoked above
    await c("GET", "/api/v1/events", user, 403)

    groups = await c("GET", "/api/v1/groups", admin, 200)
    assert [g["name"] for g in groups["items"]] == ["sales"]
    grp = "/api/v1/groups/{name}"
    added = await c("PATCH", grp, admin, 200, path="/api/v1/groups/sales",
                    json={"add_members": ["alice"]})  # fmt: skip
    assert added["members"] == ["alice"]
    await c("PATCH", grp, admin, 404, path="/api/v1/groups/sales",
            json={"add_members": ["nobody"]})  # fmt: skip
    await c("PATCH", grp, admin, 400, path="/api/v1/groups/sales", json={"add_members": "x"})
    listed_cards = await c("GET", "/api/v1/cards", admin, 200, params={"user": "alice"})
    assert [x["card"] for x in listed_cards["items"]] == ["04a1b2c3"]
    readers = await c("GET", "/api/v1/readers", admin, 200)
    assert {r["reader_id"] for r in readers["items"]} == {"r1", "r2"}
    rot = "/api/v1/readers/{reader_id}/rotate"
    rotated = await c("POST", rot, admin, 200, path="/api/v1/readers/r2/rotate")
    assert rotated["token"].startswith("pp_")
    await c("POST", rot, admin, 404, path="/api/v1/readers/nope/rotate")
    one_reader = "/api/v1/readers/{reader_id}"
    r2 = await c("GET", one_reader, admin, 200, path="/api/v1/readers/r2")
    assert r2["printers"] == ["pp-hold"] and r2["enabled"] is True
    await c("GET", one_reader, admin, 404, path="/api/v1/readers/nope")
    change = {"card_format": "DEC", "byte_order": "lsb", "enabled": False}
    edited = await c("PATCH", one_reader, admin, 200, path="/api/v1/readers/r2", json=change)
    assert (edited["card_format"], edited["byte_order"], edited["enabled"]) == ("dec", "lsb", False)
    await c("PATCH", one_reader, admin, 400, path="/api/v1/readers/r2",
            json={"printers": ["pp-direct"]})  # not a hold printer  # fmt: skip
    await c("DELETE", one_reader, admin, 200, path="/api/v1/readers/r2")
    await c("DELETE", one_reader, admin, 404, path="/api/v1/readers/r2")
    one_card = "/api/v1/cards/{card}"
    gone_card = await c("DELETE", one_card, admin, 200, path="/api/v1/cards/04:A1:B2:C3")
    assert gone_card["deleted_at"] is not None
    assert gone_card == {"id": card["id"], "card": "04a1b2c3", "user": "alice",
                         "deleted_at": gone_card["deleted_at"]}  # fmt: skip
    await c("DELETE", one_card, admin, 404, path="/api/v1/cards/04a1b2c3")
    listed = await c("GET", "/api/v1/cards", admin, 200, params={"deleted": "true"})
    assert [x["deleted_at"] for x in listed["items"]] == [gone_card["deleted_at"]]
    await c("GET", "/api/v1/cards", admin, 400, params={"deleted": "yes"})
    assert (await c("GET", "/api/v1/cards", admin, 200))["items"] == []
    await c("DELETE", one_card, admin, 400, path="/api/v1/cards/zz")
    group = await c("GET", "/api/v1/groups/{name}", admin, 200, path="/api/v1/groups/sales")
    assert group["members"] == ["alice"] and group["delegate"] is False
    granted = await c("PATCH", grp, admin, 200, path="/api/v1/groups/sales",
                      json={"delegate": True})  # fmt: skip
    assert granted["delegate"] is True
    await c("GET", "/api/v1/groups/{name}", admin, 404, path="/api/v1/groups/nobody")
    gone_group = await c("DELETE", grp, admin, 200, path="/api/v1/groups/sales")
    assert gone_group["deleted_at"] is not None and gone_group["members"] == []
    await c("DELETE", grp, admin, 404, path="/api/v1/groups/sales")
    shown = await c("GET", one_printer, admin, 200, path="/api/v1/printers/pp-direct")
    assert shown["cost_mono"] == "0.20"
    await c("GET", one_printer, admin, 404, path="/api/v1/printers/pp-none")
    gone_printer = await c("DELETE", one_printer, admin, 200, path="/api/v1/printers/pp-ticket")
    assert gone_printer["deleted_at"] is not None and gone_printer["enabled"] is False
    await c("DELETE", one_printer, admin, 404, path="/api/v1/printers/pp-ticket")
    delegate = await c("PATCH", one_user, admin, 200, path="/api/v1/users/alice",
                       json={"delegate": False})  # fmt: skip
    assert delegate["delegate"] is False
    await c("PATCH", one_user, admin, 400, path="/api/v1/users/alice", json={"delegate": "no"})

    # reports: the usage totals equal the ledger (alice's and bob's shares reversed above)
    usage = "/api/v1/reports/usage"
    by_account = await c("GET", usage, admin, 200, params={"group_by": "account"})
    assert by_account["totals"]["cost"] == "0.00" and by_account["items"]
    by_day = await c("GET", usage, admin, 200, params={"group_by": "day", "since": "2024-01-01"})
    assert by_day["totals"] == by_account["totals"]
    await c("GET", usage, admin, 400, params={"group_by": "week"})
    await c("GET", usage, admin, 400)
    await c("GET", usage, user, 403, params={"group_by": "user"})

    # By the server's own count (the route it matched, not the template named
    # above): it answered exactly what was checked, and every operation answered
    # at least one documented 2xx, live.
    counted = {
        (route, method.lower(), status) for method, route, status in await served(client, admin)
    }
    assert counted == checker.seen, (counted - checker.seen, checker.seen - counted)
    operations = {(p, m) for p, item in doc["paths"].items() for m in item}
    answered = {(p, m) for p, m, status in counted if 200 <= status < 300}
    assert answered == operations, operations - answered


async def test_x_roles_is_what_the_handlers_enforce(client: Client, sessionmaker: Sessions) -> None:
    world = await seed(sessionmaker)
    doc = document()
    for template, item in doc["paths"].items():
        for method, op in item.items():
            if "x-roles" not in op:
                continue
            # A resource that does not exist: a permitted role gets past the
            # role check and no further (404, 400 or a list), changing nothing.
            path = template.replace("{id}", "999999").replace("{name}", "nobody")
            path = path.replace("{reader_id}", "nobody").replace("{card}", "0badcafe")
            for role, token in world.tokens.items():
                kwargs: dict[str, Any] = {"json": {}} if method == "post" else {}
                async with client.request(
                    method.upper(), path, headers=bearer(token), **kwargs
                ) as resp:
                    await resp.read()
                    if role in op["x-roles"]:
                        assert resp.status != 403, (role, method, template)
                    else:
                        assert resp.status == 403, (role, method, template, resp.status)


# --- property-based: schemathesis against the live server ----------------------------

CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    oas_checks.status_code_conformance,
    oas_checks.content_type_conformance,
    oas_checks.response_headers_conformance,
    oas_checks.response_schema_conformance,
    oas_checks.negative_data_rejection,
    oas_checks.ignored_auth,
]


def fuzz(base_url: str, world: World, doc: JSON | None = None, only: str | None = None) -> int:
    """Valid and invalid requests for every operation (or ``only`` the one with that
    operationId); returns how many were sent."""
    schema = schemathesis.openapi.from_dict(copy.deepcopy(doc or document()))
    http = requests.Session()  # keep-alive: one connection for every example
    sent = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document loads without errors
        operation = result.ok()
        if only is not None and operation.definition.raw["operationId"] != only:
            continue
        token = world.reader_token if operation.path.endswith("/tap") else world.tokens["admin"]
        headers = bearer(token)
        fixed = {"reader_id": "r1"} if operation.path.endswith("/tap") else None
        modes = [schemathesis.GenerationMode.POSITIVE]
        definition = operation.definition.raw
        if definition.get("parameters") or definition.get("requestBody"):
            modes.append(schemathesis.GenerationMode.NEGATIVE)  # else nothing to make invalid
        for mode in modes:
            strategy = operation.as_strategy(
                generation_mode=mode, path_parameters=fixed, headers=headers
            )

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: schemathesis.Case[Any]) -> None:
                nonlocal sent
                response = case.call(base_url=base_url, session=http, timeout=30)
                sent += 1
                case.validate_response(response, checks=CHECKS)

            run()
    http.close()
    return sent


async def test_generated_requests_against_the_live_app(
    client: Client, sessionmaker: Sessions
) -> None:
    world = await seed(sessionmaker)
    base_url = str(client.make_url("")).rstrip("/")
    sent = await asyncio.to_thread(fuzz, base_url, world)
    assert sent > 100


async def test_the_fuzzer_catches_a_document_that_lies(
    client: Client, sessionmaker: Sessions
) -> None:
    """The harness above is not vacuous: an account said to have an ``owner`` fails it."""
    world = await seed(sessionmaker)
    doc = copy.deepcopy(document())
    account = doc["components"]["schemas"]["Account"]
    account["properties"]["owner"] = {"type": "string"}
    account["required"].append("owner")
    base_url = str(client.make_url("")).rstrip("/")
    with pytest.raises(schemathesis.core.failures.FailureGroup, match="owner"):
        await asyncio.to_thread(fuzz, base_url, world, doc, "listAccounts")
