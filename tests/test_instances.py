"""Several instances: SQLite refuses a second one; on PostgreSQL one leads each sweep."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from billing.db import make_engine
from proxy.app import create_app
from proxy.config import build_config
from proxy.exceptions import ConfigError
from proxy.pipeline.leader import leading


async def test_a_second_instance_on_sqlite_is_refused(
    sqlite_template: Path, tmp_path: Path
) -> None:
    db = tmp_path / "one.db"
    shutil.copyfile(sqlite_template, db)
    db_url = f"sqlite+aiosqlite:///{db}"
    config = build_config(
        {"database": {"url": db_url}, "spool": {"dir": str(tmp_path / "spool")}}
    )
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
