"""Tokens and disabled users through the real app factory (SQLite and PostgreSQL).

A revoked or expired token answers 401 at once; a disabled or deleted user's
tokens answer 401 and her card is unknown (404) at the reader, releasing
nothing. Each test first shows the token or card working (200), then the change.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import directory
from billing.db import utcnow
from billing.enums import PrintStatus
from billing.models import ApiToken, Event, PrintOut
from proxy import nfc_admin, tokens
from proxy.app import create_app
from proxy.config import build_config
from proxy.exceptions import BadRequest, NotFound
from tests import factories as f
from tests.test_nfc_api import held_job

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
CARD = "04:A1:B2:C3"


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, db_url: str, tmp_path: Path) -> Client:
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "sp")}})
    return await aiohttp_client(create_app(config, workers=False, intake=False))


async def status_of(client: Client, token: str, path: str = "/api/v1/printouts") -> int:
    async with client.get(path, headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json()
        if resp.status == 401:
            assert body["error"]["code"] == "unauthorized"
        return resp.status


async def tap(client: Client, reader_token: str, card: str = CARD) -> tuple[int, dict[str, object]]:
    async with client.post(
        "/api/v1/readers/lobby/tap",
        json={"card": card},
        headers={"Authorization": f"Bearer {reader_token}"},
    ) as resp:
        return resp.status, await resp.json()


async def test_revoke_by_id_and_by_label_answers_401_at_once(
    client: Client, sessionmaker: Sessions
) -> None:
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        by_id = await tokens.create_api_token(s, "admin", label="ops")
        by_label = await tokens.create_api_token(s, "user", user="alice", label="alice-phone")
        kept = await tokens.create_api_token(s, "admin", label="other")
    for token in (by_id, by_label, kept):
        assert await status_of(client, token) == 200
    async with sessionmaker() as s, s.begin():
        listed = {t.label: t for t in await tokens.list_api_tokens(s)}
        assert all(t.state == "active" for t in listed.values())
        assert await tokens.revoke_api_token(s, str(listed["ops"].id), actor="test") == [
            listed["ops"].id
        ]
        await tokens.revoke_api_token(s, "alice-phone", actor="test")
    assert await status_of(client, by_id) == 401
    assert await status_of(client, by_label) == 401
    assert await status_of(client, kept) == 200
    async with sessionmaker() as s, s.begin():
        listed = {t.label: t for t in await tokens.list_api_tokens(s)}
        assert (listed["ops"].state, listed["alice-phone"].state) == ("revoked", "revoked")
        assert {t.label for t in await tokens.list_api_tokens(s, include_revoked=False)} == {
            "other"
        }
        # Twice is a no-op; an unknown reference is an error.
        await tokens.revoke_api_token(s, "ops", actor="test")
        with pytest.raises(NotFound):
            await tokens.revoke_api_token(s, "nosuch", actor="test")
        reasons = list(await s.scalars(select(Event.reason).where(Event.subject_type == "token")))
    assert reasons.count("revoked") == 2 and reasons.count("created") == 3


async def test_an_expired_token_answers_401(client: Client, sessionmaker: Sessions) -> None:
    async with sessionmaker() as s, s.begin():
        soon = await tokens.create_api_token(
            s, "admin", label="soon", expires_at=utcnow() + dt.timedelta(hours=1)
        )
        forever = await tokens.create_api_token(s, "admin", label="forever")
    assert await status_of(client, soon) == 200
    async with sessionmaker() as s, s.begin():
        await s.execute(
            update(ApiToken)
            .where(ApiToken.label == "soon")
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    assert await status_of(client, soon) == 401
    assert await status_of(client, forever) == 200
    async with sessionmaker() as s, s.begin():
        states = {t.label: t.state for t in await tokens.list_api_tokens(s)}
    assert states == {"soon": "expired", "forever": "active"}


def test_expiry_parses_dates_times_and_durations() -> None:
    now = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
    assert tokens.parse_expiry("2027-01-01", now=now) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert tokens.parse_expiry("2027-01-01T10:00:00+01:00", now=now) == dt.datetime(
        2027, 1, 1, 9, tzinfo=dt.UTC
    )
    assert tokens.parse_expiry("90d", now=now) == now + dt.timedelta(days=90)
    assert tokens.parse_expiry("12h", now=now) == now + dt.timedelta(hours=12)
    assert tokens.parse_expiry("30m", now=now) == now + dt.timedelta(minutes=30)
    assert tokens.parse_expiry("2w", now=now) == now + dt.timedelta(weeks=2)
    for bad in ("2020-01-01", "soon", "0d", "-1d", "1y", ""):
        with pytest.raises(BadRequest):
            tokens.parse_expiry(bad, now=now)


async def _alice_with_card_and_held_jobs(sessionmaker: Sessions) -> tuple[str, str, list[int]]:
    async with sessionmaker() as s, s.begin():
        await f.user(s, "alice")
        held = [await held_job(s, "pp-hold", "alice", f"doc-{i}.pdf") for i in range(2)]
        await nfc_admin.add_card(s, "alice", CARD)
        reader = await nfc_admin.add_reader(s, "lobby", ["pp-hold"])
        token = await f.token(s, "user", user="alice")
    return token, reader, held


async def _statuses(sessionmaker: Sessions, ids: list[int]) -> list[PrintStatus]:
    async with sessionmaker() as s:
        rows = dict((await s.execute(select(PrintOut.id, PrintOut.status))).all())
    return [PrintStatus(rows[i]) for i in ids]


@pytest.mark.parametrize("how", ["disable", "delete"])
async def test_a_disabled_users_token_and_card_stop_working(
    client: Client, sessionmaker: Sessions, how: str
) -> None:
    token, reader, held = await _alice_with_card_and_held_jobs(sessionmaker)
    assert await status_of(client, token) == 200
    async with sessionmaker() as s, s.begin():
        if how == "disable":
            await directory.set_user_active(s, "alice", False, actor="test")
        else:
            await directory.delete_user(s, "alice", actor="test")
    assert await status_of(client, token) == 401
    status, body = await tap(client, reader)
    assert status == 404, body
    assert await _statuses(sessionmaker, held) == [PrintStatus.HELD] * 2
    if how == "disable":  # enabled again: the same card releases her jobs
        async with sessionmaker() as s, s.begin():
            await directory.set_user_active(s, "alice", True, actor="test")
        assert await status_of(client, token) == 200
        status, body = await tap(client, reader)
        assert status == 200 and len(body["released"]) == 2  # type: ignore[arg-type]
        assert await _statuses(sessionmaker, held) == [PrintStatus.PENDING] * 2


async def test_a_disabled_reader_answers_401(client: Client, sessionmaker: Sessions) -> None:
    _, reader, held = await _alice_with_card_and_held_jobs(sessionmaker)
    async with sessionmaker() as s, s.begin():
        await nfc_admin.set_reader_enabled(s, "lobby", False, actor="test")
    status, _ = await tap(client, reader)
    assert status == 401
    async with sessionmaker() as s, s.begin():
        await nfc_admin.set_reader_enabled(s, "lobby", True, actor="test")
    status, body = await tap(client, reader)
    assert status == 200 and len(body["released"]) == 2  # type: ignore[arg-type]
    assert await _statuses(sessionmaker, held) == [PrintStatus.PENDING] * 2
