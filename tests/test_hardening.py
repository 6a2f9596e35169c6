"""Hardening: SQLite readers never queue behind a writer; health answers in time."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.db import make_engine, make_sessionmaker
from proxy import dbadmin
from proxy.app import create_app
from proxy.config import build_config
from proxy.probe import within
from tests import factories as f

# Holds SQLite's write lock from another process, as a long writer would.
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE users SET email = email")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def _hold_write_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"  # the lock is really held
    return proc


async def test_sqlite_readers_do_not_wait_for_a_writer(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    template = tmp_path / "db.sqlite"
    url = f"sqlite+aiosqlite:///{template}"
    engine = make_engine(url)
    await dbadmin.upgrade(engine)
    sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(engine)
    async with sessions() as session, session.begin():
        secret = await f.token(session, "admin")
    await engine.dispose()

    config = build_config({}).replace("database", url=url)
    config = config.replace("spool", dir=str(tmp_path / "spool"))
    client = await aiohttp_client(create_app(config, workers=False, intake=False))
    headers = {"Authorization": f"Bearer {secret}"}

    locker = _hold_write_lock(template, 30)
    try:
        started = time.monotonic()
        async with client.get("/api/v1/printouts", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["items"] == []
        async with client.get("/healthz") as resp:
            assert resp.status == 200
        async with client.get("/api/v1/accounts", headers=headers) as resp:
            assert resp.status == 200
        # Reads answered while the writer still holds the lock.
        assert locker.poll() is None
        elapsed = time.monotonic() - started
        assert elapsed < 10, f"reads waited {elapsed:.1f} s for the writer"
    finally:
        locker.kill()
        locker.communicate()


async def test_a_probe_gives_up_at_its_limit_even_if_the_work_hangs() -> None:
    release = asyncio.Event()

    async def stuck() -> str:
        try:
            await release.wait()
        except asyncio.CancelledError:
            # A stuck close: cancellation itself takes long, as a session's
            # rollback on a blocked connection does.
            await asyncio.sleep(5)
            raise
        return "never"

    async def quick() -> str:
        return "ok"

    assert await within(1.0, quick()) == "ok"
    started = time.monotonic()
    try:
        await within(0.2, stuck())
    except TimeoutError:
        pass
    else:
        raise AssertionError("the probe did not time out")
    assert time.monotonic() - started < 2
