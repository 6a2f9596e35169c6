"""The outbox's rows: enqueue, claim, renew, finish, postpone, fail (SQL only).

A row is written in the same database transaction as the state change that
needs it, so a change and its side effect are never half done. ``claim``
takes due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and counts the
attempt in the same statement; the caller commits that before acting, so
``attempts`` on a loaded row counts the attempt under way (see
``runner.may_have_been_applied``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Insert, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import claim_ids, utcnow
from ..enums import OutboxStatus
from ..models import OutboxItem

CLAIM_FOR = timedelta(seconds=60)  # renewed while a row runs (``renew``)
CHUNK = 500  # rows per statement: well under SQLite's and asyncpg's parameter limits
MAX_WORKER = 64  # outbox.claimed_by is String(64)
MAX_ERROR = 2000

_PENDING = OutboxItem.status == int(OutboxStatus.PENDING)


def _insert(session: AsyncSession) -> type[Insert]:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert  # type: ignore[return-value]


def _row(kind: str, key: str, payload: dict[str, Any], print_out_id: int | None) -> dict[str, Any]:
    now = utcnow()
    return {
        "kind": kind,
        "idempotency_key": key,
        "payload": payload,
        "print_out_id": print_out_id,
        "status": int(OutboxStatus.PENDING),
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


async def enqueue(
    session: AsyncSession,
    *,
    kind: str,
    key: str,
    payload: dict[str, Any],
    print_out_id: int | None = None,
) -> bool:
    """Add a row unless one with ``key`` exists; True if it was new."""
    result = await session.execute(
        _insert(session)(OutboxItem)
        .values(**_row(kind, key, payload, print_out_id))
        .on_conflict_do_nothing()  # type: ignore[attr-defined]
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def enqueue_many(
    session: AsyncSession, kind: str, rows: Sequence[tuple[str, dict[str, Any]]]
) -> set[str]:
    """``enqueue`` in bulk: add the rows whose key is new; the keys added."""
    keys = [key for key, _ in rows]
    existing: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        existing.update(
            await session.scalars(
                select(OutboxItem.idempotency_key).where(OutboxItem.idempotency_key.in_(chunk))
            )
        )
    fresh = [(key, payload) for key, payload in rows if key not in existing]
    if fresh:
        # executemany: SQLAlchemy sends pages of multi-row INSERTs from one cached statement
        await session.execute(
            _insert(session)(OutboxItem).on_conflict_do_nothing(),  # type: ignore[attr-defined]
            [_row(kind, key, payload, None) for key, payload in fresh],
        )
    return {key for key, _ in fresh}


async def claim(
    session: AsyncSession,
    worker: str,
    *,
    kinds: Collection[str] | None = None,
    limit: int = 50,
    due_only: bool = True,
    keys: Collection[str] | None = None,
    exclude: Collection[int] = (),
) -> list[int]:
    """Claim pending rows for ``worker`` and count the attempt (commit before acting).

    ``kinds`` None: every kind. ``due_only=False`` also takes rows waiting for
    a retry; ``keys`` limits the claim to those idempotency keys, ``exclude``
    leaves rows out. Rows another worker holds are skipped.
    """
    now = utcnow()
    query = select(OutboxItem.id).where(
        _PENDING, or_(OutboxItem.claim_until.is_(None), OutboxItem.claim_until < now)
    )
    if kinds is not None:
        query = query.where(OutboxItem.kind.in_(list(kinds)))
    if due_only:
        query = query.where(OutboxItem.next_attempt_at <= now)
    if keys is not None:
        query = query.where(OutboxItem.idempotency_key.in_(list(keys)))
    if exclude:
        query = query.where(OutboxItem.id.not_in(list(exclude)))
    query = query.order_by(OutboxItem.next_attempt_at, OutboxItem.id).limit(limit)
    claim_values = {
        "claimed_by": worker[:MAX_WORKER],
        "claim_until": now + CLAIM_FOR,
        "attempts": OutboxItem.attempts + 1,
    }
    return await claim_ids(session, query, OutboxItem, claim_values)


async def renew(session: AsyncSession, ids: Sequence[int], worker: str) -> None:
    """Extend ``worker``'s claim on the pending rows of ``ids``."""
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id.in_(list(ids)), OutboxItem.claimed_by == worker[:MAX_WORKER], _PENDING)
        .values(claim_until=utcnow() + CLAIM_FOR)
        .execution_options(synchronize_session=False)
    )


async def load(session: AsyncSession, ids: Sequence[int]) -> list[OutboxItem]:
    return list(await session.scalars(select(OutboxItem).where(OutboxItem.id.in_(list(ids)))))


async def finish(session: AsyncSession, ids: Sequence[int]) -> None:
    """Mark rows done (one statement)."""
    if not ids:
        return
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id.in_(list(ids)))
        .values(
            status=int(OutboxStatus.DONE),
            done_at=utcnow(),
            claimed_by=None,
            claim_until=None,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )


async def postpone(session: AsyncSession, item_id: int, pause: float, error: str) -> None:
    """Release the row for another attempt in ``pause`` seconds."""
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(
            next_attempt_at=utcnow() + timedelta(seconds=pause),
            claimed_by=None,
            claim_until=None,
            last_error=error[:MAX_ERROR],
        )
        .execution_options(synchronize_session=False)
    )


async def fail(session: AsyncSession, item_id: int, error: str) -> None:
    """Give the row up for good (FAILED): an admin looks."""
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(
            status=int(OutboxStatus.FAILED),
            claimed_by=None,
            claim_until=None,
            last_error=error[:MAX_ERROR],
        )
        .execution_options(synchronize_session=False)
    )


async def pending_count(session: AsyncSession, kind: str | None = None) -> int:
    query = select(func.count()).where(_PENDING)
    if kind is not None:
        query = query.where(OutboxItem.kind == kind)
    return int(await session.scalar(query) or 0)


async def next_chance(session: AsyncSession, kind: str) -> float | None:
    """Seconds until a pending row of ``kind`` can be claimed; None when there is none."""
    now = utcnow()
    of_kind = (OutboxItem.kind == kind, _PENDING)
    free = await session.scalar(
        select(func.min(OutboxItem.next_attempt_at)).where(
            *of_kind, or_(OutboxItem.claim_until.is_(None), OutboxItem.claim_until < now)
        )
    )
    held = await session.scalar(
        select(func.min(OutboxItem.claim_until)).where(*of_kind, OutboxItem.claim_until >= now)
    )
    times = [t for t in (free, held) if t is not None]
    if not times:
        return None
    return max(0.0, (min(times) - now).total_seconds())
