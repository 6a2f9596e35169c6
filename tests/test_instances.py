"""Several instances: SQLite refuses a second one; on PostgreSQL one leads each sweep."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from datetime import timedelta
from pathlib import Path
from unittest.mock import ANY

import pytest
from aiohttp import web
from sqlalchemy import select

from billing.db import make_engine, make_sessionmaker, utcnow
from billing.models import OutboxItem
from proxy.app import create_app
from proxy.config import Config, build_config
from proxy.exceptions import ConfigError
from proxy.keys import INSTANCE
from proxy.pipeline.leader import NAME_MAX, configured_name, leading
from tests.fixtures_db import _truncate_pg


async def test_a_second_instance_on_sqlite_is_refused(
    sqlite_template: Path, tmp_path: Path
) -> None:
    db = tmp_path / "one.db"
    shutil.copyfile(sqlite_template, db)
    db_url = f"sqlite+aiosqlite:///{db}"
    config = build_config({"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "spool")}})
    first = web.AppRunner(create_app(config, intake=False))
    await first.setup()
    try:
        second = web.AppRunner(create_app(config, intake=False))
        with pytest.raises(ConfigError, match="SQLite supports one instance"):
            await second.setup()
        await second.cleanup()
    finally:
        await first.cleanup()
    # The lock goes with the instance: a restart is fine.
    again = web.AppRunner(create_app(config, intake=False))
    await again.setup()
    await again.cleanup()


async def test_one_instance_leads_a_sweep_on_postgresql(pg_database: str) -> None:
    db_url = pg_database
    one, two = make_engine(db_url), make_engine(db_url)
    try:
        async with leading(one, "tracker") as first:
            async with leading(two, "tracker") as second:
                assert (first, second) == (True, False)
            async with leading(two, "expiry") as other_sweep:
                assert other_sweep
        async with leading(two, "tracker") as later:
            assert later  # released when the first instance's tick ended
    finally:
        await asyncio.gather(one.dispose(), two.dispose())


def _config(db_url: str, tmp_path: Path, name: str) -> Config:
    return build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(tmp_path / "spool")},
            "instance": {"name": name},
            "tracker": {"interval_secs": 30},
        }
    )


async def _claims(db_url: str) -> dict[str, str | None]:
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as s:
            rows = (await s.scalars(select(OutboxItem))).all()
            return {row.idempotency_key: row.claimed_by for row in rows}
    finally:
        await engine.dispose()


async def test_a_restarted_instance_voids_only_its_own_dead_claims_at_once(
    pg_database: str, tmp_path: Path
) -> None:
    await _truncate_pg(pg_database)
    later = utcnow() + timedelta(hours=1)  # due later: no worker touches them meanwhile
    engine = make_engine(pg_database)
    async with make_sessionmaker(engine)() as s, s.begin():
        for key, owner in [
            ("a", "print1"),
            ("b", "print1:fees"),
            ("c", "print2"),
            ("d", "print1:9"),
        ]:
            s.add(
                OutboxItem(
                    kind="test",
                    idempotency_key=key,
                    payload={},
                    next_attempt_at=later,
                    claimed_by=owner,
                    claim_until=later,
                )
            )
    await engine.dispose()

    first = create_app(_config(pg_database, tmp_path, "print1"), intake=False)
    runner = web.AppRunner(first)
    await runner.setup()
    try:
        assert first[INSTANCE].name == "print1"
        # print1 died and came back: its claims are free now, not in 60 s; another
        # instance's and another process's ("print1:9") stay.
        assert await _claims(pg_database) == {"a": None, "b": None, "c": "print2", "d": "print1:9"}

        # The same name started twice by mistake: the second gets NAME:PID and frees nothing.
        engine = make_engine(pg_database)
        async with make_sessionmaker(engine)() as s, s.begin():
            item = await s.scalar(select(OutboxItem).where(OutboxItem.idempotency_key == "a"))
            assert item is not None
            item.claimed_by, item.claim_until = "print1", later
        await engine.dispose()
        twin = create_app(_config(pg_database, tmp_path, "print1"), intake=False)
        twin_runner = web.AppRunner(twin)
        await twin_runner.setup()
        try:
            assert twin[INSTANCE].name == f"print1:{os.getpid()}"
            assert (await _claims(pg_database))["a"] == "print1"
        finally:
            await twin_runner.cleanup()
    finally:
        await runner.cleanup()
    # The name is free again once its holder stopped.
    again = create_app(_config(pg_database, tmp_path, "print1"), intake=False)
    again_runner = web.AppRunner(again)
    await again_runner.setup()
    try:
        assert again[INSTANCE].name == "print1"
        assert (await _claims(pg_database))["a"] is None
    finally:
        await again_runner.cleanup()


def test_instance_names_are_short_and_stay_apart() -> None:
    assert configured_name("print-a", "/run/x.sock") == "print-a"
    default = f"{socket.gethostname()}:/run/pp.sock"
    assert configured_name("", "/run/pp.sock") == (default if len(default) <= NAME_MAX else ANY)
    long_a = configured_name("", "/srv/proxyprint/instances/building-a/run/intake.sock")
    long_b = configured_name("", "/srv/proxyprint/instances/building-b/run/intake.sock")
    assert len(long_a) == len(long_b) == NAME_MAX and long_a != long_b
