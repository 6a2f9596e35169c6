"""NFC over HTTP through the real app factory (SQLite and PostgreSQL): cards and taps.

Seed data goes in through a separate engine (the ``sessionmaker`` fixture), as
the CLI would write it; held print-outs are rows in status ``held``, mode
``hold``, as intake leaves them for a hold-mode printer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts, status
from billing.enums import AccountType, PrinterMode, PrintStatus
from billing.models import Card, Event, Printer, PrintOut
from proxy import nfc_admin, printers
from proxy.api.nfc import setup_nfc_routes
from proxy.app import create_app
from proxy.config import build_config
from proxy.nfc_listener import reader_key
from proxy.pipeline import intake_auth
from proxy.pipeline.jobs import REASON_DELEGATION_INVALID
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]

TAP_ROUTE = "/api/v1/readers/{reader_id}/tap"
ALICE_CARD = "4234685818"  # registered as decimal; the LSB hex reader sends 7a2d68fc
ALICE_LSB = "7a2d68fc"
BOB_CARD = "04:11:22:33"
CAROL_CARD = "04:99:22:33"  # no held jobs anywhere


def make_app(db_url: str, tmp_path: Path, nfc: dict[str, Any] | None = None) -> web.Application:
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(tmp_path / "spool")},
            "nfc": nfc or {},
        }
    )
    app = create_app(config, workers=False, intake=False)
    # Until proxy/api/__init__.py installs them (then this is a no-op).
    if not any(r.canonical == TAP_ROUTE for r in app.router.resources()):
        setup_nfc_routes(app)
    return app


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path) -> Client:
    return await aiohttp_client(make_app(db_url, tmp_path))


@dataclasses.dataclass
class World:
    readers: dict[str, str]  # reader id -> token
    tokens: dict[str, str]  # API tokens
    held: list[int]  # alice's releasable held jobs on pp-hold
    elsewhere: int  # alice's held job on a printer no reader is mapped to
    stuck: int  # alice's job held for an invalid delegation


async def hold_printer(s: AsyncSession, name: str) -> Printer:
    found = await s.scalar(select(Printer).where(Printer.name == name))
    if found is None:
        found = await printers.add_printer(
            s, name, target="ipp://127.0.0.1:9/ipp/print", mode=PrinterMode.HOLD.value
        )
    return found


async def held_job(
    s: AsyncSession, printer_name: str, delegate: str, title: str, reason: str | None = None
) -> int:
    """A print-out as intake leaves it on a hold-mode printer: held, shadow transaction."""
    printer = await hold_printer(s, printer_name)
    account = await accounts.find_account(s, AccountType.USER, delegate)
    assert account is not None
    po = await f.print_out(s, printer, delegate, charged_to=[(account, 1)], title=title)
    assert await status.transition(s, po, PrintStatus.HELD, actor="intake", reason=reason)
    return po.id


async def seed(sessionmaker: Sessions) -> World:
    """Alice (card 4234685818, 3 held jobs on pp-hold), bob (a held job), carol (a card);
    readers ``lobby`` (pp-hold, hex LSB) and ``far`` (pp-hold-far, hex MSB)."""
    async with sessionmaker() as s, s.begin():
        for name in ("alice", "bob", "carol"):
            await f.user(s, name)
        held = [await held_job(s, "pp-hold", "alice", f"doc-{i}.pdf") for i in range(3)]
        await held_job(s, "pp-hold", "bob", "bob.pdf")
        elsewhere = await held_job(s, "pp-hold-far", "alice", "far.pdf")
        stuck = await held_job(s, "pp-hold", "alice", "stuck.pdf", reason=REASON_DELEGATION_INVALID)
        await nfc_admin.add_card(s, "alice", ALICE_CARD, card_format="dec")
        await nfc_admin.add_card(s, "carol", CAROL_CARD)
        readers = {
            "lobby": await nfc_admin.add_reader(s, "lobby", ["pp-hold"], byte_order="lsb"),
            "far": await nfc_admin.add_reader(s, "far", ["pp-hold-far"]),
        }
        tokens = {
            "admin": await f.token(s, "admin"),
            "alice": await f.token(s, "user", user="alice"),
            "reader": await f.token(s, "reader"),
        }
    return World(readers, tokens, held, elsewhere, stuck)


@pytest.fixture
async def world(sessionmaker: Sessions) -> World:
    return await seed(sessionmaker)


async def post(
    client: Client, path: str, token: str | None, body: Any, *, expect: int = 200
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with client.post(path, json=body, headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == expect, answer
        if expect >= 400:
            assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
        return answer


async def tap(
    client: Client, world: World, card: str, *, reader: str = "lobby", expect: int = 200
) -> Any:
    path = f"/api/v1/readers/{reader}/tap"
    return await post(client, path, world.readers[reader], {"card": card}, expect=expect)


async def statuses(sessionmaker: Sessions, ids: list[int]) -> list[PrintStatus]:
    async with sessionmaker() as s:
        rows = {i: st for i, st in (await s.execute(select(PrintOut.id, PrintOut.status))).all()}
    return [PrintStatus(rows[i]) for i in ids]


async def releases_of(sessionmaker: Sessions, po_id: int) -> int:
    """How many times the print-out went held → pending (its events)."""
    async with sessionmaker() as s:
        count = await s.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.subject_type == "print_out",
                Event.subject_id == str(po_id),
                Event.from_status == "held",
                Event.to_status == "pending",
            )
        )
    return int(count or 0)


async def tap_events(sessionmaker: Sessions) -> list[str | None]:
    async with sessionmaker() as s:
        rows = await s.scalars(
            select(Event.reason).where(Event.subject_type == "reader").order_by(Event.id)
        )
        return [r for r in rows if r is not None and r.startswith("tap")]


# --- taps -----------------------------------------------------------------------


async def test_tap_releases_the_owners_held_jobs(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    body = await tap(client, world, ALICE_LSB)
    assert body["card"] == "fc682d7a"
    assert [r["id"] for r in body["released"]] == world.held  # oldest first
    assert body["released"][0] == {
        "id": world.held[0], "printer": "pp-hold", "title": "doc-0.pdf", "pages": 3, "copies": 1,
    }  # fmt: skip
    assert await statuses(sessionmaker, world.held) == [PrintStatus.PENDING] * 3
    # Not on a printer this reader releases, and not a job held for a reason.
    assert await statuses(sessionmaker, [world.elsewhere, world.stuck]) == [PrintStatus.HELD] * 2
    async with sessionmaker() as s:
        po = await s.get(PrintOut, world.held[0])
        assert po is not None and po.next_action_at is not None and po.hold_until is None

    # The same tap again releases nothing new.
    again = await tap(client, world, "7A:2D:68:FC")
    assert again["released"] == []
    # The other reader releases the far job, in its own (hex, msb) format.
    far = await tap(client, world, "fc682d7a", reader="far")
    assert [r["id"] for r in far["released"]] == [world.elsewhere]
    assert await tap_events(sessionmaker) == ["tap", "tap", "tap"]


async def test_burst_of_taps_releases_each_job_once(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    bodies = await asyncio.gather(*(tap(client, world, ALICE_LSB) for _ in range(10)))
    released = sorted(r["id"] for b in bodies for r in b["released"])
    assert released == world.held
    for po_id in world.held:
        assert await releases_of(sessionmaker, po_id) == 1
    assert await statuses(sessionmaker, world.held) == [PrintStatus.PENDING] * 3
    assert await tap_events(sessionmaker) == ["tap"] * 10


async def test_another_users_card_releases_nothing_of_alice(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    body = await tap(client, world, "33:22:99:04")  # carol's card, LSB on this reader
    assert body["released"] == []
    assert await statuses(sessionmaker, world.held) == [PrintStatus.HELD] * 3


async def test_unknown_and_malformed_cards(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    unknown = await tap(client, world, "de:ad:be:ef", expect=404)
    assert unknown["error"]["code"] == "not-found"
    # 4234685818 is a decimal number; this reader reads hex: a different card.
    await tap(client, world, ALICE_CARD, expect=404)
    for bad in ("", "04a1", "zz:zz:zz:zz", "04a1b2c"):
        body = await tap(client, world, bad, expect=400)
        assert body["error"]["code"] == "bad-card"
    assert await statuses(sessionmaker, world.held) == [PrintStatus.HELD] * 3
    # Every tap is an event, committed although the answer is an error.
    assert await tap_events(sessionmaker) == ["tap-unknown-card"] * 2 + ["tap-malformed-card"] * 4
    # Not a card at all: a request error, not a tap.
    path = "/api/v1/readers/lobby/tap"
    for body in ({}, {"card": 42}, {"card": "04a1b2c3", "extra": 1}):
        await post(client, path, world.readers["lobby"], body, expect=400)
    async with client.post(
        path, data=b"{", headers={"Authorization": f"Bearer {world.readers['lobby']}"}
    ) as resp:
        assert resp.status == 400


async def test_tap_authentication(client: Client, world: World, sessionmaker: Sessions) -> None:
    path = "/api/v1/readers/lobby/tap"
    card = {"card": ALICE_LSB}
    for token in (None, "", "pp_unknown", world.tokens["admin"], world.tokens["reader"]):
        body = await post(client, path, token, card, expect=401)
        assert body["error"]["code"] == "unauthorized"
    # A valid token, but of another reader, or for a reader that does not exist.
    await post(client, path, world.readers["far"], card, expect=403)
    await post(client, "/api/v1/readers/nobody/tap", world.readers["lobby"], card, expect=403)
    async with client.post(path, json=card) as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert await statuses(sessionmaker, world.held) == [PrintStatus.HELD] * 3
    assert await tap_events(sessionmaker) == []


# --- cards ----------------------------------------------------------------------


async def test_register_cards(client: Client, world: World, sessionmaker: Sessions) -> None:
    admin = world.tokens["admin"]
    body = await post(client, "/api/v1/cards", admin, {"user": "bob", "card": BOB_CARD}, expect=201)
    assert body == {"id": body["id"], "user": "bob", "card": "04112233"}
    lsb = {"user": "bob", "card": str(0x33221104), "format": "dec", "byte_order": "lsb"}
    # The same card, from an LSB decimal reader's number: already bob's.
    conflict = await post(client, "/api/v1/cards", admin, lsb, expect=409)
    assert "'bob'" in conflict["error"]["message"]
    # Another user may not take it, and is not told whose it is.
    taken = await post(
        client, "/api/v1/cards", admin, {"user": "carol", "card": "04112233"}, expect=409
    )
    assert "bob" not in taken["error"]["message"]
    await post(client, "/api/v1/cards", admin, {"user": "nobody", "card": "0a0b0c0d"}, expect=404)
    for bad in (
        {"user": "bob", "card": "0a0b0c"},
        {"user": "bob"},
        {"user": "bob", "card": 123456789},
        {"user": "bob", "card": "0a0b0c0d", "format": "oct"},
        {"user": "bob", "card": "0a0b0c0d", "byte_order": "big"},
        {"user": "bob", "card": "0a0b0c0d", "format": ""},
        {"user": "bob", "card": "0a0b0c0d", "colour": "red"},
    ):
        await post(client, "/api/v1/cards", admin, bad, expect=400)
    for role in ("alice", "reader"):
        await post(
            client, "/api/v1/cards", world.tokens[role], {"user": "alice", "card": "0a0b0c0d"},
            expect=403,
        )  # fmt: skip
    await post(client, "/api/v1/cards", None, {"user": "alice", "card": "0a0b0c0d"}, expect=401)
    async with sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Card)) == 3

    # Bob's new card now releases bob's job at the lobby (an LSB reader).
    released = await tap(client, world, "33:22:11:04")
    assert [r["title"] for r in released["released"]] == ["bob.pdf"]


# --- taps signed with the reader key (issue #17) ----------------------------------------


def signed_headers(key: str, path: str, body: bytes, *, at: int | None = None) -> dict[str, str]:
    timestamp = str(int(time.time()) if at is None else at)
    nonce = uuid.uuid4().hex
    signed = intake_auth.message("POST", path, timestamp, nonce, hashlib.sha256(body).hexdigest())
    return {
        "Content-Type": "application/json",
        intake_auth.TIME_HEADER: timestamp,
        intake_auth.NONCE_HEADER: nonce,
        intake_auth.SIGNATURE_HEADER: intake_auth.sign(key, signed),
    }


async def test_a_tap_signed_with_the_reader_key(
    client: Client, world: World, sessionmaker: Sessions
) -> None:
    path = "/api/v1/readers/lobby/tap"
    body = json.dumps({"card": ALICE_LSB}).encode()
    headers = signed_headers(reader_key(world.readers["lobby"]), path, body)
    resp = await client.post(path, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    released = (await resp.json())["released"]
    assert released and await statuses(sessionmaker, [r["id"] for r in released]) == [
        PrintStatus.PENDING
    ] * len(released)
    again = await client.post(path, data=body, headers=headers)  # a replay
    assert again.status == 401 and "replayed" in (await again.json())["error"]["message"]
    other = json.dumps({"card": "33:22:99:04"}).encode()
    forged = await client.post(path, data=other, headers=signed_headers(
        reader_key(world.readers["lobby"]), path, body))  # fmt: skip
    assert forged.status == 401  # the body is not the one signed
    stale = signed_headers(
        reader_key(world.readers["lobby"]), path, body, at=int(time.time()) - 900
    )
    assert (await client.post(path, data=body, headers=stale)).status == 401
    wrong = signed_headers(reader_key(world.readers["far"]), path, body)
    assert (await client.post(path, data=body, headers=wrong)).status == 401
