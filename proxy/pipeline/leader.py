"""Who runs what when several instances share one database.

Work on rows (dispatch, outbox) is claimed row by row with ``FOR UPDATE SKIP
LOCKED``. Whole-table sweeps (tracker, PaperCut monitor, hold expiry) would
only duplicate each other's requests, so on PostgreSQL each tick runs on one
instance at a time, under a session advisory lock. SQLite supports a single
instance: ``exclusive_instance`` refuses a second one with a clear error.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..exceptions import ConfigError


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    digest = hashlib.sha256(f"proxyprint:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@asynccontextmanager
async def leading(engine: AsyncEngine, name: str) -> AsyncIterator[bool]:
    """Yield whether this instance holds ``name`` for the block (always on SQLite)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.connect() as conn:
        got = bool(
            await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(name)})
        )
        try:
            yield got
        finally:
            if got:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
            await conn.rollback()


def sqlite_path(url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix) or url.endswith(":memory:"):
        return None
    return Path(url[len(prefix) :])


def exclusive_instance(url: str) -> IO[bytes] | None:
    """On SQLite, lock ``<db>.instance-lock`` for this process's lifetime.

    Returns the open lock file (keep it open; closing releases the lock), or
    None for databases that support several instances.
    """
    path = sqlite_path(url)
    if path is None:
        return None
    lock_path = path.with_name(path.name + ".instance-lock")
    handle = lock_path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"another proxyprint instance is already serving the SQLite database {path}: "
            "SQLite supports one instance; use PostgreSQL (database.url = "
            "postgresql+asyncpg://...) to run several"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle
