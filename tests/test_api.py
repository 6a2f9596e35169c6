"""The HTTP API through the real app factory, on SQLite and PostgreSQL.

Data is seeded through a separate engine (the ``sessionmaker`` fixture), as
another process would write it; the app sees it only through the database.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import logging
import re
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import exceptions as billing_exc
from billing.enums import PrinterMode, PrintStatus
from billing.models import Account, ApiToken, LedgerEntry, Printer, PrintOut
from proxy import exceptions as proxy_exc
from proxy.app import create_app
from proxy.config import build_config
from proxy.keys import ENGINE
from proxy.tokens import hash_token
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
PRINT_OUT_KEYS = {
    "id", "status", "status_reason", "mode", "printer", "target", "delegate", "title",
    "pages", "copies", "cost", "currency", "created_at", "ended_at", "transactions",
}  # fmt: skip


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    client: Client,
    method: str,
    path: str,
    token: str | None = None,
    *,
    expect: int = 200,
    params: dict[str, str] | None = None,
    data: str | bytes | io.BytesIO | None = None,
) -> Any:
    headers = bearer(token) if token else {}
    async with client.request(method, path, headers=headers, params=params, data=data) as resp:
        body = await resp.json()
        assert resp.status == expect, body
        assert resp.content_type == "application/json"
        if expect >= 400 and path != "/healthz":  # the probe keeps its own shape
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
        return body


async def ids(client: Client, token: str, **params: str) -> list[int]:
    body = await call(client, "GET", "/api/v1/printouts", token, params=params)
    return [item["id"] for item in body["items"]]


def make_app(db_url: str, tmp_path: Path) -> web.Application:
    config = build_config({}).replace("database", url=db_url)
    config = config.replace("spool", dir=str(tmp_path / "spool"))
    return create_app(config, workers=False, intake=False)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path) -> Client:
    return await aiohttp_client(make_app(db_url, tmp_path))


@dataclasses.dataclass
class World:
    """Users alice, bob, carol; group sales; shared Events/Gala; two printers; tokens."""

    accounts: dict[str, Account]
    printers: dict[str, Printer]
    tokens: dict[str, str]


@pytest.fixture
async def world(sessionmaker: Sessions) -> World:
    async with sessionmaker() as s, s.begin():
        accts = {name: await f.user(s, name) for name in ("alice", "bob", "carol")}
        accts["sales"] = await f.group(s, "sales")
        accts["gala"] = await f.shared(s, "Events/Gala")
        printers = {
            "direct": await f.printer(s, "pp-direct"),
            "hold": await f.printer(s, "pp-hold", mode=PrinterMode.HOLD),
        }
        tokens = {
            "admin": await f.token(s, "admin"),
            "editor": await f.token(s, "accounts-editor"),
            "operator": await f.token(s, "ticket-operator"),
            "reader": await f.token(s, "reader"),
            "alice": await f.token(s, "user", user="alice"),
            "bob": await f.token(s, "user", user="bob"),
        }
    return World(accts, printers, tokens)


async def ledger_rows(sessionmaker: Sessions) -> int:
    async with sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(LedgerEntry)) or 0)


# --- health -------------------------------------------------------------------------


async def test_healthz_needs_no_token(client: Client) -> None:
    assert await call(client, "GET", "/healthz") == {"status": "ok", "database": "ok"}


async def test_healthz_reports_a_dead_database(
    aiohttp_client: AiohttpClient,
    sqlite_template: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The app needs its database to start; the probe matters when it goes
    # away later. Take it away: close the pool, remove the file's directory.
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    shutil.copyfile(sqlite_template, db_dir / "proxyprint.db")
    client = await aiohttp_client(make_app(f"sqlite+aiosqlite:///{db_dir}/proxyprint.db", tmp_path))
    await call(client, "GET", "/healthz")
    await client.app[ENGINE].dispose()
    shutil.rmtree(db_dir)
    body = await call(client, "GET", "/healthz", expect=503)
    assert body == {"status": "error", "database": "error"}
    assert "database unreachable" in caplog.text
    # aiosqlite 0.22 stops the worker thread of a failed connection without
    # awaiting it; let it finish while this loop is open, or it reports into a
    # closed loop during a later test.
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            thread.join(timeout=5)


# --- the error format -------------------------------------------------------------


async def test_missing_malformed_and_unknown_tokens_are_401(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    async with sessionmaker() as s, s.begin():
        revoked = await f.token(s, "admin")
        await s.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == hash_token(revoked))
            .values(revoked_at=f.T0)
        )
    cases = {
        "missing": {},
        "basic": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "empty bearer": {"Authorization": "Bearer "},
        "unknown": {"Authorization": "Bearer pp_doesnotexist"},
        "no prefix": {"Authorization": "Bearer " + world.tokens["admin"][3:]},
        "revoked": bearer(revoked),
    }
    for case, headers in cases.items():
        async with client.get("/api/v1/printouts", headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 401, case
            assert resp.headers["WWW-Authenticate"].startswith("Bearer"), case
            assert body["error"]["code"] == "unauthorized", case
    # The scheme is case-insensitive (RFC 7235).
    async with client.get(
        "/api/v1/printouts", headers={"Authorization": "bearer " + world.tokens["admin"]}
    ) as resp:
        assert resp.status == 200


async def test_wrong_role_is_403(client: Client, world: World) -> None:
    reader = world.tokens["reader"]
    for path in ("/api/v1/printouts", "/api/v1/printouts/1", "/api/v1/accounts"):
        body = await call(client, "GET", path, reader, expect=403)
        assert body["error"]["code"] == "forbidden"
    for role in ("alice", "operator", "reader"):
        await call(client, "POST", "/api/v1/printouts/1/reverse", world.tokens[role], expect=403)


async def test_unknown_routes_methods_and_ids(client: Client, world: World) -> None:
    admin = world.tokens["admin"]
    for path in ("/api/v1/nope", "/nope", "/api/v1/printouts/1/nope"):
        body = await call(client, "GET", path, expect=404)
        assert body["error"]["code"] == "not-found"
    async with client.delete("/api/v1/printouts", headers=bearer(admin)) as resp:
        body = await resp.json()
        assert resp.status == 405
        assert body["error"]["code"] == "method-not-allowed"
        assert "GET" in resp.headers["Allow"]
    for raw in ("999", "abc", "0", "-1", "1.0", "9" * 30):
        await call(client, "GET", f"/api/v1/printouts/{raw}", admin, expect=404)
        await call(client, "POST", f"/api/v1/printouts/{raw}/reverse", admin, expect=404,
                   data='{"reason": "x"}')  # fmt: skip
        await call(client, "GET", f"/api/v1/accounts/{raw}/transactions", admin, expect=404)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


async def test_bad_parameters_are_400(client: Client, world: World) -> None:
    admin = world.tokens["admin"]
    real = await call(client, "GET", "/api/v1/accounts", admin, params={"limit": "1"})
    account_cursor = real["next_cursor"]
    assert account_cursor is not None
    bad_printouts = [
        {"limit": "0"}, {"limit": "501"}, {"limit": "abc"}, {"limit": "-1"},
        {"limit": "1.5"}, {"limit": " 5"}, {"limit": "+5"},
        {"status": "bogus"}, {"status": "COMPLETED"},
        {"since": "yesterday"}, {"until": "2024-13-01"}, {"since": "2024-05-01T25:00Z"},
        {"since": "2024-05-02", "until": "2024-05-01"},
        {"cursor": "garbage!"}, {"cursor": "@@@@@"}, {"cursor": b64("po:1")},
        {"cursor": b64("po:x:1")}, {"cursor": b64("po:1:2:3")}, {"cursor": b64("po:01:2")},
        {"cursor": b64("po:1:99999999999999999999")}, {"cursor": b64("po:999999999999999999:1")},
        {"cursor": b64("po:1:2") + "="}, {"cursor": account_cursor},
        {"stauts": "held"},
    ]  # fmt: skip
    for params in bad_printouts:
        body = await call(client, "GET", "/api/v1/printouts", admin, params=params, expect=400)
        assert body["error"]["code"] == "invalid-parameter", params
    # A parameter given twice is ambiguous.
    await call(client, "GET", "/api/v1/printouts?limit=1&limit=2", admin, expect=400)
    for params in ({"type": "person"}, {"cursor": b64("po:1:2")}, {"limit": "0"}):
        await call(client, "GET", "/api/v1/accounts", admin, params=params, expect=400)
    alice = world.accounts["alice"].id
    for params in ({"cursor": account_cursor}, {"type": "user"}):
        path = f"/api/v1/accounts/{alice}/transactions"
        await call(client, "GET", path, admin, params=params, expect=400)


async def test_blank_parameters_count_as_absent(client: Client, world: World) -> None:
    # SPEC §6 writes the list as ?user=&printer=&...: a blank form field filters nothing.
    blank = dict.fromkeys(("user", "printer", "status", "since", "until", "limit", "cursor"), "")
    body = await call(client, "GET", "/api/v1/printouts", world.tokens["admin"], params=blank)
    assert body == {"items": [], "next_cursor": None}


async def test_bad_json_body_is_400_and_changes_nothing(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    async with sessionmaker() as s, s.begin():
        po = await f.print_out(s, world.printers["direct"], "alice",
                               charged_to=[(world.accounts["alice"], 1)])  # fmt: skip
        await f.charge(s, po, "0.30")
    before = await ledger_rows(sessionmaker)
    path = f"/api/v1/printouts/{po.id}/reverse"
    editor = world.tokens["editor"]
    for data in (b"{not json", b"[1, 2]", b'"text"', b"NaN", b"\xff\xfe{", b"[" * 100_000):
        body = await call(client, "POST", path, editor, data=data, expect=400)
        assert body["error"]["code"] == "bad-json", data[:10]
    body = await call(client, "POST", path, editor, data='{"comment": "x"}', expect=400)
    assert "comment" in body["error"]["message"]
    # Over the app's client_max_size (1 MiB): refused before parsing.
    body = await call(
        client, "POST", path, editor, data=io.BytesIO(b" " * (1024**2 + 1)), expect=413
    )
    assert body["error"]["code"] == "too-large"
    assert await ledger_rows(sessionmaker) == before


# --- lists: filters and keyset pagination -----------------------------------------


async def test_list_filters(client: Client, world: World, sessionmaker: Sessions) -> None:
    hour = dt.timedelta(hours=1)
    direct, hold = world.printers["direct"], world.printers["hold"]
    async with sessionmaker() as s, s.begin():
        p1 = await f.print_out(s, direct, "alice", created_at=f.T0)
        await f.charge(s, p1, "0.10")
        p2 = await f.print_out(s, direct, "bob", created_at=f.T0 + hour)
        p3 = await f.print_out(s, hold, "alice", created_at=f.T0 + 2 * hour)
        await f.finish(s, p3, PrintStatus.HELD)
        p4 = await f.print_out(s, hold, "carol", created_at=f.T0 + 3 * hour)
        await f.finish(s, p4, PrintStatus.CANCELED, reason="expired")
        p5 = await f.print_out(s, hold, "bob", created_at=f.T0 + 4 * hour)
        await f.charge(s, p5, "0.20")
    admin = world.tokens["admin"]
    P1, P2, P3, P4, P5 = (p.id for p in (p1, p2, p3, p4, p5))
    assert await ids(client, admin) == [P5, P4, P3, P2, P1]
    assert await ids(client, admin, user="alice") == [P3, P1]
    assert await ids(client, admin, user="nobody") == []
    assert await ids(client, admin, printer="pp-hold") == [P5, P4, P3]
    assert await ids(client, admin, printer="pp-none") == []
    assert await ids(client, admin, status="completed") == [P5, P1]
    assert await ids(client, admin, status="held") == [P3]
    assert await ids(client, admin, status="canceled") == [P4]
    assert await ids(client, admin, status="pending") == [P2]
    # since is inclusive, until exclusive; an offset or a bare date is understood.
    assert await ids(client, admin, since="2024-05-01T13:00:00Z") == [P5, P4, P3, P2]
    assert await ids(client, admin, until="2024-05-01T14:00:00Z") == [P2, P1]
    assert await ids(client, admin, since="2024-05-01T15:00:00+02:00") == [P5, P4, P3, P2]
    assert await ids(client, admin, since="2024-05-01T13:00:00", until="2024-05-01T15:00Z") == [
        P3,
        P2,
    ]
    assert await ids(client, admin, since="2024-05-02") == []
    assert await ids(client, admin, user="bob", printer="pp-hold", status="completed") == [P5]
    # Every staff role reads the history.
    for role in ("editor", "operator"):
        assert await ids(client, world.tokens[role]) == [P5, P4, P3, P2, P1]

    body = await call(client, "GET", "/api/v1/printouts", admin, params={"user": "carol"})
    (item,) = body["items"]
    assert set(item) >= PRINT_OUT_KEYS and "events" not in item
    assert item["status"] == "canceled" and item["status_reason"] == "expired"
    assert item["printer"] == "pp-hold" and item["mode"] == "hold" and item["cost"] is None
    assert item["created_at"] == "2024-05-01T15:00:00.000000Z"
    assert ISO_Z.fullmatch(item["ended_at"])


async def test_keyset_pagination_has_no_gaps_or_duplicates(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    direct = world.printers["direct"]
    async with sessionmaker() as s, s.begin():
        # Three print-outs per instant: page boundaries fall inside ties.
        made = [
            await f.print_out(s, direct, "alice", created_at=f.T0 + dt.timedelta(minutes=i // 3))
            for i in range(25)
        ]
    expected = [p.id for p in sorted(made, key=lambda p: (p.created_at, p.id), reverse=True)]
    admin = world.tokens["admin"]
    first = await call(client, "GET", "/api/v1/printouts", admin, params={"limit": "10"})
    assert first["next_cursor"] is not None
    # A new job arrives between page requests: later pages do not shift.
    async with sessionmaker() as s, s.begin():
        newest = await f.print_out(s, direct, "alice", created_at=f.T0 + dt.timedelta(days=1))
    seen = [item["id"] for item in first["items"]]
    cursor = first["next_cursor"]
    sizes = [len(first["items"])]
    while cursor is not None:
        page = await call(
            client, "GET", "/api/v1/printouts", admin, params={"limit": "10", "cursor": cursor}
        )
        seen += [item["id"] for item in page["items"]]
        sizes.append(len(page["items"]))
        cursor = page["next_cursor"]
    assert sizes == [10, 10, 5]
    assert seen == expected
    # A fresh first page starts with the new job.
    assert (await ids(client, admin, limit="1")) == [newest.id]
    # A page that ends exactly at the last row has no next cursor.
    assert (await call(client, "GET", "/api/v1/printouts", admin, params={"limit": "26"}))[
        "next_cursor"
    ] is None
    # Filters and cursors combine.
    half = await call(
        client, "GET", "/api/v1/printouts", admin, params={"limit": "13", "user": "alice"}
    )
    rest = await call(
        client,
        "GET",
        "/api/v1/printouts",
        admin,
        params={"limit": "13", "user": "alice", "cursor": half["next_cursor"]},
    )
    assert [i["id"] for i in half["items"] + rest["items"]] == [newest.id, *expected]
    assert rest["next_cursor"] is None


async def test_a_page_costs_the_same_queries_whatever_its_size(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    direct, hold = world.printers["direct"], world.printers["hold"]
    payers = [(world.accounts["alice"], 1), (world.accounts["bob"], 2)]
    async with sessionmaker() as s, s.begin():
        for i in range(20):
            po = await f.print_out(s, direct if i % 2 else hold, "carol", charged_to=payers)
            await f.charge(s, po, "0.30")
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    engine = client.app[ENGINE].sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        admin = world.tokens["admin"]
        per_size = []
        for limit in ("2", "20"):
            selects.clear()
            body = await call(client, "GET", "/api/v1/printouts", admin, params={"limit": limit})
            assert all(len(item["transactions"]) == 2 for item in body["items"])
            per_size.append(len(selects))
        # Token, page (with printer names), transactions with their accounts,
        # how the print-ins were counted.
        assert per_size == [4, 4]
        selects.clear()
        await call(client, "GET", "/api/v1/accounts", admin, params={"limit": "500"})
        assert len(selects) == 4  # token, accounts, balances, page counters
    finally:
        event.remove(engine, "before_cursor_execute", count)


# --- detail, isolation, reversal ---------------------------------------------------


async def test_detail_has_transactions_and_events(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    a = world.accounts
    async with sessionmaker() as s, s.begin():
        po = await f.print_out(
            s, world.printers["direct"], "carol",
            charged_to=[(a["alice"], 1), (a["bob"], 3), (a["gala"], 1)],
        )  # fmt: skip
        await f.finish(s, po, PrintStatus.PROCESSING)
        await f.charge(s, po, "1.25")
    body = await call(client, "GET", f"/api/v1/printouts/{po.id}", world.tokens["admin"])
    assert set(body) >= PRINT_OUT_KEYS | {"events"}
    assert body["id"] == po.id and body["delegate"] == "carol" and body["title"] == "report.pdf"
    assert (body["status"], body["pages"], body["copies"]) == ("completed", 3, 5)
    assert (body["cost"], body["currency"]) == ("1.25", "EUR")
    assert body["printer"] == "pp-direct" and body["target"] == "ipp://127.0.0.1:8631/ipp/print"
    assert ISO_Z.fullmatch(body["ended_at"]) and ISO_Z.fullmatch(body["charged_at"])
    assert body["reversed_at"] is None
    assert [
        ({k: t["account"][k] for k in ("type", "name")}, t["weight"], t["amount"], t["status"])
        for t in body["transactions"]
    ] == [
        ({"type": "user", "name": "alice"}, 1, "0.25", "completed"),
        ({"type": "user", "name": "bob"}, 3, "0.75", "completed"),
        ({"type": "shared", "name": "Events/Gala"}, 1, "0.25", "completed"),
    ]
    events = body["events"]
    assert [(e["from"], e["to"], e["reason"]) for e in events] == [
        ("pending", "processing", None),
        ("processing", "completed", None),
        (None, None, "charged"),
    ]
    assert all(e["actor"] == "tracker" and ISO_Z.fullmatch(e["at"]) for e in events)
    assert events[2]["message"].startswith("1.25 EUR")
    # The list shows the same print-out without its events.
    (item,) = (await call(client, "GET", "/api/v1/printouts", world.tokens["admin"]))["items"]
    assert item == {k: v for k, v in body.items() if k != "events"}


async def test_a_user_sees_only_its_own(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    direct = world.printers["direct"]
    a = world.accounts
    async with sessionmaker() as s, s.begin():
        mine = [await f.print_out(s, direct, "alice", charged_to=[(a["alice"], 1)])
                for _ in range(3)]  # fmt: skip
        # bob printed and alice pays: not in her list of what she printed
        # (``role=payer`` lists it, tests/test_payer_view.py), but hers to see.
        theirs = await f.print_out(s, direct, "bob", charged_to=[(a["alice"], 1)])
        private = await f.print_out(s, direct, "bob", charged_to=[(a["bob"], 1)])
        for po in [*mine, theirs, private]:
            await f.charge(s, po, "0.10")
        await f.topup(s, a["bob"], "5.00", "topup:bob")
    alice = world.tokens["alice"]
    own = sorted((p.id for p in mine), reverse=True)
    assert await ids(client, alice) == own
    assert await ids(client, alice, user="alice") == own
    body = await call(client, "GET", "/api/v1/printouts", alice, params={"user": "bob"}, expect=403)
    assert body["error"]["code"] == "forbidden"
    # Paging stays inside the user's own rows.
    page = await call(client, "GET", "/api/v1/printouts", alice, params={"limit": "2"})
    rest = await call(
        client, "GET", "/api/v1/printouts", alice, params={"cursor": page["next_cursor"]}
    )
    assert [i["id"] for i in page["items"] + rest["items"]] == own
    # Someone else's print-out does not exist for alice; her own and what she pays for do.
    await call(client, "GET", f"/api/v1/printouts/{private.id}", alice, expect=404)
    await call(client, "GET", f"/api/v1/printouts/{theirs.id}", alice)
    await call(client, "GET", f"/api/v1/printouts/{mine[0].id}", alice)
    # Accounts: only her personal one, whatever the filter.
    body = await call(client, "GET", "/api/v1/accounts", alice)
    assert [(i["id"], i["name"]) for i in body["items"]] == [(a["alice"].id, "alice")]
    assert body["items"][0]["balance"] == "-0.40" and body["items"][0]["pages"] == 12
    assert (await call(client, "GET", "/api/v1/accounts", alice, params={"type": "group"}))[
        "items"
    ] == []
    ledger = await call(client, "GET", f"/api/v1/accounts/{a['alice'].id}/transactions", alice)
    assert len(ledger["items"]) == 4
    for other in ("bob", "sales", "gala"):
        await call(client, "GET", f"/api/v1/accounts/{a[other].id}/transactions", alice,
                   expect=404)  # fmt: skip


async def test_reverse_restores_balances_and_counters_once(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    a = world.accounts
    async with sessionmaker() as s, s.begin():
        await f.topup(s, a["alice"], "10.00", "topup:alice")
        po = await f.print_out(s, world.printers["direct"], "carol",
                               charged_to=[(a["alice"], 1), (a["bob"], 3)])  # fmt: skip
        never_charged = await f.print_out(s, world.printers["direct"], "carol",
                                          charged_to=[(a["alice"], 1)])  # fmt: skip
        await f.finish(s, never_charged, PrintStatus.CANCELED)
    admin, editor = world.tokens["admin"], world.tokens["editor"]

    async def users() -> dict[str, tuple[str, int]]:
        body = await call(client, "GET", "/api/v1/accounts", admin, params={"type": "user"})
        return {i["name"]: (i["balance"], i["pages"]) for i in body["items"]}

    before = await users()
    assert before == {"alice": ("10.00", 0), "bob": ("0.00", 0), "carol": ("0.00", 0)}
    async with sessionmaker() as s, s.begin():
        charged = await s.get(PrintOut, po.id)
        assert charged is not None
        await f.charge(s, charged, "1.20")
    assert await users() == {"alice": ("9.70", 3), "bob": ("-0.90", 9), "carol": ("0.00", 0)}

    # A user token may not reverse; nothing changes.
    path = f"/api/v1/printouts/{po.id}/reverse"
    await call(client, "POST", path, world.tokens["alice"], expect=403)
    assert await ledger_rows(sessionmaker) == 3

    # Without a reason (no body, an empty one, blank, too long): 400, nothing reversed.
    too_long = ('{"reason": "%s"}' % ("x" * 501)).encode()
    for data in (b"", b"{}", b'{"reason": "  "}', b'{"reason": null}', b'{"reason": 3}',
                 b'{"transactions": [1]}', too_long):  # fmt: skip
        body = await call(client, "POST", path, editor, data=data, expect=400)
        assert "reason is required" in body["error"]["message"], data[:20]
    assert await ledger_rows(sessionmaker) == 3

    body = await call(client, "POST", path, editor, data='{"reason": "printer jammed"}')
    assert body["reversed"] == 2
    assert body["print_out"]["id"] == po.id and ISO_Z.fullmatch(body["print_out"]["reversed_at"])
    last = body["print_out"]["events"][-1]
    assert last["reason"] == "reversed"
    assert re.fullmatch(r"api:accounts-editor:token-\d+", last["actor"])
    assert await users() == before
    assert await ledger_rows(sessionmaker) == 5

    # Twice is a no-op: 200, nothing reversed, no new rows (admin may do it too).
    body = await call(client, "POST", path, admin, data='{"reason": "again"}')
    assert body["reversed"] == 0
    assert await ledger_rows(sessionmaker) == 5
    assert await users() == before

    # The ledger shows the compensation, newest first.
    ledger = await call(client, "GET", f"/api/v1/accounts/{a['alice'].id}/transactions", admin)
    assert [(e["kind"], e["amount"], e["pages"]) for e in ledger["items"]] == [
        ("reversal", "0.30", -3),
        ("charge", "-0.30", 3),
        ("topup", "10.00", 0),
    ]
    assert ledger["items"][0]["reverses_id"] == ledger["items"][1]["id"]
    assert ledger["items"][0]["print_out_id"] == po.id

    body = await call(client, "POST", f"/api/v1/printouts/{never_charged.id}/reverse", editor,
                      expect=409, data='{"reason": "x"}')  # fmt: skip
    assert body["error"]["code"] == "conflict"


async def test_accounts_list_and_ledger_pages(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    a = world.accounts
    admin = world.tokens["admin"]
    async with sessionmaker() as s, s.begin():
        for i in range(5):
            await f.topup(s, a["carol"], f"1.0{i}", f"topup:carol:{i}")
    by_type = {}
    for type_ in ("user", "group", "shared"):
        body = await call(client, "GET", "/api/v1/accounts", admin, params={"type": type_})
        by_type[type_] = [i["name"] for i in body["items"]]
        assert all(i["type"] == type_ for i in body["items"])
    # Events/Gala has its parent Events (created with it).
    assert by_type == {
        "user": ["alice", "bob", "carol"],
        "group": ["sales"],
        "shared": ["Events", "Events/Gala"],
    }
    seen: list[int] = []
    params = {"limit": "2"}
    while True:
        body = await call(client, "GET", "/api/v1/accounts", admin, params=params)
        seen += [i["id"] for i in body["items"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": "2", "cursor": body["next_cursor"]}
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 6

    path = f"/api/v1/accounts/{a['carol'].id}/transactions"
    amounts: list[str] = []
    params = {"limit": "2"}
    while True:
        body = await call(client, "GET", path, admin, params=params)
        amounts += [e["amount"] for e in body["items"]]
        assert all(e["kind"] == "topup" and e["actor"] == "test" for e in body["items"])
        if body["next_cursor"] is None:
            break
        params = {"limit": "2", "cursor": body["next_cursor"]}
    assert amounts == ["1.04", "1.03", "1.02", "1.01", "1.00"]
    carol = next(i for i in (await call(client, "GET", "/api/v1/accounts", admin))["items"]
                 if i["name"] == "carol")  # fmt: skip
    assert (carol["balance"], carol["currency"]) == ("5.10", "EUR")


# --- the middleware on its own ----------------------------------------------------

RAISES: dict[str, tuple[Exception, int, str]] = {
    "bug": (RuntimeError("secret detail"), 500, "internal"),
    "key": (KeyError("secret detail"), 500, "internal"),
    "invalid": (billing_exc.InvalidInput("bad weight"), 400, "invalid-input"),
    "amount": (billing_exc.InvalidAmount("bad amount"), 400, "invalid-input"),
    "missing": (billing_exc.NotFound("no such group"), 404, "not-found"),
    "conflict": (billing_exc.Conflict("exists"), 409, "conflict"),
    "transition": (billing_exc.InvalidTransition("final"), 409, "invalid-transition"),
    "ledger": (billing_exc.LedgerError("secret detail"), 500, "internal"),
    "target": (proxy_exc.TargetError("printer unreachable"), 502, "target"),
    "proxy": (proxy_exc.ProxyPrintError("secret detail"), 500, "internal"),
    "bad": (proxy_exc.BadRequest("nope"), 400, "bad-request"),
}


@pytest.fixture
async def raising_client(
    aiohttp_client: AiohttpClient, sqlite_template: Path, tmp_path: Path
) -> Client:
    # The mapping does not depend on the database: one backend is enough.
    shutil.copyfile(sqlite_template, tmp_path / "proxyprint.db")
    db_url = f"sqlite+aiosqlite:///{tmp_path}/proxyprint.db"

    def raiser(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_request: web.Request) -> web.Response:
            raise RAISES[kind][0]

        return handler

    app = make_app(db_url, tmp_path)
    for kind in RAISES:
        app.router.add_get(f"/raise/{kind}", raiser(kind))
    return await aiohttp_client(app)


@pytest.mark.parametrize("kind", list(RAISES))
async def test_errors_map_to_status_and_code(
    raising_client: Client, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, status, code = RAISES[kind]
    with caplog.at_level(logging.ERROR, logger="proxy.api.errors"):
        body = await call(raising_client, "GET", f"/raise/{kind}", expect=status)
    assert body["error"]["code"] == code
    if status == 500:  # the traceback is logged, never shown
        assert "secret" not in body["error"]["message"]
        assert "Traceback" in caplog.text and "secret detail" in caplog.text
    else:
        assert body["error"]["message"] == str(RAISES[kind][0])
