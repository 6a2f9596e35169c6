"""The SQLAlchemy base, column types that are exact on every backend, and engines."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    Numeric,
    Select,
    event,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

MONEY_SCALE = 6
_MONEY_FACTOR = Decimal(10) ** MONEY_SCALE


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Money(TypeDecorator[Decimal]):
    """Exact money: NUMERIC(20, 6) on PostgreSQL, integer micro-units on SQLite.

    SQLite has no exact decimal type (NUMERIC there is a float); integers keep
    SUM() exact and the decorator turns them back into Decimal.
    """

    impl = Numeric(20, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        if dialect.name == "sqlite":
            scaled = value * _MONEY_FACTOR
            if scaled != scaled.to_integral_value():
                raise ValueError(f"{value} has more than {MONEY_SCALE} decimals")
            return int(scaled)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)) / _MONEY_FACTOR
        return Decimal(value)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC)")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# PostgreSQL's deadlock_detected and serialization_failure: the server rolled the
# transaction back and the same work may simply be tried again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(exc: BaseException) -> bool:
    """A transaction the database aborted only because of a concurrent one."""
    orig = getattr(exc, "orig", None)
    # SQLAlchemy's asyncpg adapter gives pgcode/sqlstate, or keeps asyncpg's error as the cause.
    candidates = (orig, getattr(orig, "__cause__", None))
    codes = {getattr(c, name, None) for c in candidates for name in ("sqlstate", "pgcode")}
    return bool(codes & RETRYABLE_SQLSTATES)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy, not the sqlite3 module, emit BEGIN: SAVEPOINTs then work.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


READ_ONLY_OPTION = "proxyprint_read_only"


def _sqlite_begin(conn: Connection) -> None:
    # Writers: IMMEDIATE takes the write lock at BEGIN (waiting up to busy_timeout),
    # so two transactions that read then write can never deadlock on the lock
    # upgrade (WAL's SQLITE_BUSY_SNAPSHOT answers "database is locked" at once).
    # Readers: a deferred BEGIN takes no lock in WAL mode, so they never queue
    # behind a writer (another process may hold the write lock for seconds).
    if conn.get_execution_options().get(READ_ONLY_OPTION):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for in-memory databases)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_private(path: Path) -> None:
    """The state folder 0700 (when we create it) and the database files 0600.

    SQLite gives its -wal and -shm files the database file's mode, so a
    database created here at 0600 keeps them private whatever the umask.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
        os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077 and file.stat().st_uid == os.getuid():
                os.chmod(file, 0o600)
        except FileNotFoundError:
            continue


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``sqlite+aiosqlite`` or ``postgresql+asyncpg``."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            make_private(path)
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql"):
        return create_async_engine(
            url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True
        )
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite+aiosqlite or postgresql+asyncpg"
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def claim_ids(
    session: AsyncSession, query: Select[int], model: Any, values: dict[str, Any]
) -> list[int]:
    """The ids ``query`` selects, their rows stamped with ``values`` (a claim) in one go.

    On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED``, so instances
    claiming at once take different rows; SQLite has a single writer anyway.
    """
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(await session.scalars(query))
    if ids:
        await session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    return ids


def make_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read: on SQLite they take no lock at BEGIN.

    Writing through one is a bug: on SQLite it may fail with "database is locked"
    when a writer got in between (the lock upgrade a deferred BEGIN cannot wait for).
    """
    return async_sessionmaker(
        engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
    )
