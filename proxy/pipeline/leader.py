"""Who runs what when several instances share one database.

Work on rows (dispatch, outbox) is claimed row by row with ``FOR UPDATE SKIP
LOCKED``, under the instance's name (``[instance] name``, default
``HOSTNAME:<intake socket>``). A started instance holds an advisory lock on its
name for its lifetime, so claims still carrying that name were left by a dead
predecessor: they are voided at once rather than after they expire. A second
live process with the same name gets ``NAME:PID`` instead.

Whole-table sweeps (tracker, PaperCut monitor, hold expiry) would only
duplicate each other's requests, so on PostgreSQL each tick runs on one
instance at a time, under a session advisory lock. SQLite supports a single
instance: ``exclusive_instance`` refuses a second one with a clear error.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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


# Suffixes of the names the OfficeRnD jobs claim outbox rows under.
WORKER_ROLES = ("sync", "fees", "topup")


@dataclass
class Instance:
    """Who this process is in claims; ``name`` is settled when the workers start."""

    name: str = f"{socket.gethostname()}:{os.getpid()}"


NAME_MAX = 48  # claimed_by holds 64: room for ":PID" and a worker role


def configured_name(configured: str, intake_socket: str) -> str:
    """The name claims carry; a long one is cut with a digest of the whole, so
    two instances whose names differ only at the end stay apart."""
    name = configured or f"{socket.gethostname()}:{intake_socket}"
    if len(name) <= NAME_MAX:
        return name
    return f"{name[: NAME_MAX - 9]}~{hashlib.sha256(name.encode()).hexdigest()[:8]}"


async def hold_name(engine: AsyncEngine, name: str) -> AsyncConnection | None:
    """Lock ``name`` for this process on PostgreSQL (keep the connection open).

    None when another live process holds it. The lock goes when the
    connection does, so also when the process is killed.
    """
    conn = await engine.connect()
    try:
        got = bool(
            await conn.scalar(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(f"instance:{name}")}
            )
        )
        await conn.commit()  # the session lock outlives the transaction
    except BaseException:
        await conn.close()
        raise
    if not got:
        await conn.close()
        return None
    return conn
