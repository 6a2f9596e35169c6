"""The administration endpoints the CLI had and the API lacked (SQLite, PostgreSQL).

Show and soft-delete printers, groups and cards (a card's number may be registered
again), show/edit/delete
readers, the delegate right on users and groups, access lists on accounts:
each through the real app factory, each with its effect (a deleted card
releases nothing, a disabled or deleted reader's token is refused, a deleted
printer keeps its row) and one event naming the API caller as actor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import rights
from billing.enums import PrinterMode
from proxy import nfc_admin, nfc_claim
from proxy.app import create_app
from proxy.config import build_config
from proxy.pipeline import release
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]


async def call(
    client: Client, method: str, path: str, token: str, expect: int = 200, *, body: Any = None
) -> Any:
    async with client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        answer = await resp.json()
        assert resp.status == expect, (method, path, resp.status, answer)
        return answer


async def test_admin_endpoints_change_what_they_say_and_record_who(
    aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path, sessionmaker: Sessions
) -> None:
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "sp")}})
    client = await aiohttp_client(create_app(config, workers=False, intake=False))
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        await f.user(s, "bob")
        await f.group(s, "sales")
        lab = await f.shared(s, "Lab")
        await f.printer(s, "pp-hold", mode=PrinterMode.HOLD)
        await f.printer(s, "pp-old")
        lobby = await nfc_admin.add_reader(s, "lobby", ["pp-hold"])
        desk = await nfc_admin.add_reader(s, "desk", ["pp-hold"])
        await nfc_admin.add_card(s, "alice", "04:A1:B2:C3")
        admin = await f.token(s, "admin")
        editor = await f.token(s, "accounts-editor")
    tap = {"card": "04a1b2c3"}
    assert (await call(client, "POST", "/api/v1/readers/lobby/tap", lobby, body=tap))[
        "released"
    ] == []

    # The delegate right, per user and per group.
    alice = await call(client, "PATCH", "/api/v1/users/alice", admin, body={"delegate": True})
    assert alice["delegate"] is True
    sales = await call(client, "PATCH", "/api/v1/groups/sales", admin,
                       body={"delegate": True, "add_members": ["bob"]})  # fmt: skip
    assert sales["delegate"] is True and sales["members"] == ["bob"]
    # An access list on a shared account, then open again.
    path = f"/api/v1/accounts/{lab.id}"
    body = {"access": ["alice", "@sales"]}
    limited = await call(client, "PATCH", path, editor, body=body)
    assert limited["access"] == {"restricted": True, "users": ["alice"], "groups": ["sales"]}
    async with sessionmaker() as s:
        account = await rights.find_chargeable(s, "Lab")
        assert (await rights.access_of(s, account)).describe() == "restricted to alice, @sales"

    # Readers: show, edit (card format, disable), delete; cards: delete.
    shown = await call(client, "GET", "/api/v1/readers/lobby", admin)
    assert shown == {"reader_id": "lobby", "printers": ["pp-hold"], "card_format": "hex",
                     "byte_order": "msb", "enabled": True}  # fmt: skip
    off = await call(client, "PATCH", "/api/v1/readers/lobby", admin,
                     body={"byte_order": "LSB", "enabled": False})  # fmt: skip
    assert (off["byte_order"], off["enabled"]) == ("lsb", False)
    await call(client, "POST", "/api/v1/readers/lobby/tap", lobby, 401, body=tap)  # disabled
    await call(client, "PATCH", "/api/v1/readers/lobby", admin, body={"enabled": True})
    await call(client, "PATCH", "/api/v1/readers/lobby", admin, body={"byte_order": "msb"})
    await call(client, "POST", "/api/v1/readers/lobby/tap", lobby, body=tap)
    gone = await call(client, "DELETE", "/api/v1/cards/04-A1-B2-C3", admin)
    assert gone["card"] == "04a1b2c3" and gone["user"] == "alice"
    await call(client, "POST", "/api/v1/readers/lobby/tap", lobby, 404, body=tap)  # unknown now
    # Soft: the row stays (listed when asked), and the card is offered like any unknown one.
    assert (await call(client, "GET", "/api/v1/cards", admin))["items"] == []
    kept = (await call(client, "GET", "/api/v1/cards?deleted=true", admin))["items"]
    assert kept == [gone] and gone["deleted_at"] is not None
    async with sessionmaker() as s:
        assert [o.ending for o in await nfc_claim.offers(s)] == ["b2c3"]
    # The same number registered again, to another user: a new card, bob's at the reader.
    again = await call(client, "POST", "/api/v1/cards", admin, 201,
                       body={"user": "bob", "card": "04a1b2c3"})  # fmt: skip
    assert again["id"] != gone["id"] and again["user"] == "bob"
    await call(client, "POST", "/api/v1/cards", admin, 409, body={"user": "alice", **tap})
    await call(client, "POST", "/api/v1/readers/lobby/tap", lobby, body=tap)
    async with sessionmaker() as s:
        assert await nfc_claim.offers(s) == []
        owner = await release.card_owner(s, "04a1b2c3")
        assert owner is not None and owner.name == "bob"
    both = (await call(client, "GET", "/api/v1/cards?deleted=true", admin))["items"]
    assert [(c["user"], c["deleted_at"] is None) for c in both] == [("alice", False), ("bob", True)]
    await call(client, "DELETE", "/api/v1/readers/desk", admin)
    await call(client, "POST", "/api/v1/readers/desk/tap", desk, 401, body=tap)
    await call(client, "GET", "/api/v1/readers/desk", admin, 404)

    # Printers and groups: soft delete, the row stays (shown with deleted_at).
    deleted = await call(client, "DELETE", "/api/v1/printers/pp-old", admin)
    assert deleted["deleted_at"] is not None and deleted["enabled"] is False
    assert (await call(client, "GET", "/api/v1/printers/pp-old", admin))["deleted_at"]
    await call(client, "PATCH", "/api/v1/printers/pp-old", admin, 404, body={"cost_mono": "1"})
    group = await call(client, "DELETE", "/api/v1/groups/sales", admin)
    assert group["deleted_at"] is not None and group["members"] == []
    assert (await call(client, "GET", "/api/v1/groups/sales", admin))["active"] is False

    # One event per change, each naming the API caller.
    events = (await call(client, "GET", "/api/v1/events?limit=500", admin))["items"]
    mine = [(e["subject_type"], e["subject_id"], e["reason"]) for e in events
            if e["actor"].startswith(("api:admin:", "api:accounts-editor:"))]  # fmt: skip
    expected = [
        ("user", "alice", "delegate-granted"),
        ("group", "sales", "members-changed"),
        ("group", "sales", "delegate-granted"),
        ("account", str(lab.id), "access-changed"),
        ("reader", "lobby", "updated"),
        ("reader", "lobby", "disabled"),
        ("reader", "lobby", "enabled"),
        ("reader", "lobby", "updated"),
        ("card", str(gone["id"]), "deleted"),
        ("card", str(again["id"]), "created"),
        ("reader", "desk", "deleted"),
        ("printer", "pp-old", "deleted"),
        ("group", "sales", "deleted"),
    ]
    assert list(reversed(mine)) == expected
