"""Jobs without a job-uuid (non-CUPS senders on the TCP intake) are recorded once:
keyed by (sending host, printer, job id, time-at-creation), refused without a job id.
The real app's intake on TCP (signed requests) and on its Unix socket; SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.enums import PrintStatus, StatusReason
from billing.models import PrintIn, PrintOut
from proxy.app import create_app
from proxy.config import build_config
from proxy.pipeline import intake_auth
from proxy.pipeline.intake import META_HEADER
from tests import factories as f
from tests.fixtures_cups import free_tcp_port

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"
CREATED = 1_764_750_000


class Intake:
    def __init__(self, tcp: str, socket: Path) -> None:
        self.tcp = tcp
        self.socket = socket

    async def post(
        self, meta: dict[str, Any], *, source: str = "127.0.0.1", unix: bool = False
    ) -> tuple[int, Any]:
        header = base64.b64encode(json.dumps(meta).encode()).decode()
        headers = {META_HEADER: header}
        if unix:
            connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=str(self.socket))
            url = "http://intake/intake/v1/jobs"
        else:
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            url = f"http://{self.tcp}/intake/v1/jobs"
            stamp, nonce = str(int(time.time())), uuid.uuid4().hex  # signed, as the backend does
            signed = intake_auth.message("POST", "/intake/v1/jobs", stamp, nonce, header)
            headers[intake_auth.TIME_HEADER] = stamp
            headers[intake_auth.NONCE_HEADER] = nonce
            headers[intake_auth.SIGNATURE_HEADER] = intake_auth.sign(SECRET, signed)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(url, data=b"hello\n", headers=headers) as resp,
        ):
            return resp.status, await resp.json()


@pytest.fixture
async def intake(
    aiohttp_client: AiohttpClient, db_url: str, short_tmp: Path, sessionmaker: Sessions
) -> Intake:
    async with sessionmaker() as s, s.begin():
        await f.user(s, "carol")
        await f.printer(s, "pp-direct")
        await f.printer(s, "pp-other")
    tcp = f"127.0.0.1:{free_tcp_port()}"
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(short_tmp / "spool")},
            "intake": {"socket": str(short_tmp / "i.sock"), "tcp": tcp, "secret": SECRET},
        }
    )
    await aiohttp_client(create_app(config, workers=False))  # runs the intake's listeners
    return Intake(tcp, short_tmp / "i.sock")


def meta(**kw: Any) -> dict[str, Any]:
    """A non-CUPS sender's job: no job_uuid."""
    out: dict[str, Any] = {
        "printer": "pp-direct",
        "job_id": 41,
        "time_at_creation": CREATED,
        "user": "carol",
        "title": "from a sender without job-uuid",
        "content_type": "text/plain",
    }
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


async def count(sessions: Sessions, model: type[PrintIn] | type[PrintOut]) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def test_the_same_request_twice_is_recorded_once(
    intake: Intake, sessionmaker: Sessions
) -> None:
    first = await intake.post(meta())
    assert first[0] == 201 and first[1]["duplicate"] is False, first
    again = await intake.post(meta())
    assert again[0] == 200 and again[1]["duplicate"] is True, again
    assert again[1]["print_in"] == first[1]["print_in"]
    assert again[1]["print_out"] == first[1]["print_out"]
    assert (await count(sessionmaker, PrintIn), await count(sessionmaker, PrintOut)) == (1, 1)
    async with sessionmaker() as s:
        pin = await s.get(PrintIn, first[1]["print_in"])
        assert pin is not None and pin.job_uuid is None
        assert pin.origin_key is not None and len(pin.origin_key) == 64

    # Each part of the key tells jobs apart: another creation time, job id,
    # printer, or sending host is another job.
    for other, source in (
        (meta(time_at_creation=CREATED + 1), "127.0.0.1"),
        (meta(job_id=42), "127.0.0.1"),
        (meta(printer="pp-other"), "127.0.0.1"),
        (meta(), "127.0.0.2"),
        (meta(time_at_creation=None), "127.0.0.1"),  # the key without a creation time
    ):
        status, answer = await intake.post(other, source=source)
        assert status == 201 and answer["duplicate"] is False, (other, source, answer)
        status, answer = await intake.post(other, source=source)
        assert status == 200 and answer["duplicate"] is True, (other, source, answer)
    assert (await count(sessionmaker, PrintIn), await count(sessionmaker, PrintOut)) == (6, 6)


async def test_known_after_its_end_is_still_a_duplicate_never_a_reprint(
    intake: Intake, sessionmaker: Sessions
) -> None:
    status, answer = await intake.post(meta(job_id=7))
    assert status == 201, answer
    async with sessionmaker() as s, s.begin():
        po = await s.get(PrintOut, answer["print_out"])
        assert po is not None
        await f.finish(s, po, PrintStatus.CANCELED, reason=StatusReason.CANCELED_BY_USER)
    status, again = await intake.post(meta(job_id=7))
    assert status == 200 and again["duplicate"] is True and again["status"] == "canceled"
    assert (await count(sessionmaker, PrintIn), await count(sessionmaker, PrintOut)) == (1, 1)


async def test_at_once_through_two_connections_it_is_recorded_once(
    intake: Intake, sessionmaker: Sessions
) -> None:
    answers = await asyncio.gather(*(intake.post(meta(job_id=9)) for _ in range(4)))
    assert sorted(status for status, _ in answers) == [200, 200, 200, 201], answers
    assert len({answer["print_in"] for _, answer in answers}) == 1
    assert (await count(sessionmaker, PrintIn), await count(sessionmaker, PrintOut)) == (1, 1)


async def test_the_unix_socket_keys_its_sender_as_local(
    intake: Intake, sessionmaker: Sessions
) -> None:
    first = await intake.post(meta(job_id=5), unix=True)
    again = await intake.post(meta(job_id=5), unix=True)
    assert (first[0], again[0]) == (201, 200), (first, again)
    # The same job id from a TCP sender is that sender's own job.
    status, _ = await intake.post(meta(job_id=5))
    assert status == 201
    assert await count(sessionmaker, PrintIn) == 2


async def test_without_a_job_id_it_is_refused(intake: Intake, sessionmaker: Sessions) -> None:
    # A positive sign first: the intake records a keyed job.
    assert (await intake.post(meta()))[0] == 201
    status, answer = await intake.post(meta(job_id=None))
    assert status == 400, answer
    assert "job_id" in answer["error"]["message"]
    status, answer = await intake.post(meta(job_id=None, time_at_creation=None), unix=True)
    assert status == 400, answer
    status, answer = await intake.post(meta(time_at_creation="yesterday"))
    assert status == 400 and "time_at_creation" in answer["error"]["message"], answer
    assert await count(sessionmaker, PrintIn) == 1
