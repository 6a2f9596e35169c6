"""The durable outbox: side effects on other systems (PaperCut, OfficeRnD).

A row is written in the same database transaction as the state change that
needs it, so a change and its side effect are never half done. A worker
claims due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), records the
attempt (``attempts`` is committed before the call), performs it, and marks it
done. A row whose earlier attempt may have reached the other system is
checked there first (``Handler.already_applied``), so a crash between the call
and the commit never applies it twice.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import Insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from .db import utcnow
from .enums import OutboxStatus
from .models import OutboxItem

CLAIM_FOR = timedelta(seconds=60)
MAX_BACKOFF = timedelta(minutes=10)


class Handler(Protocol):
    """Carries out one kind of outbox row."""

    async def already_applied(self, item: OutboxItem) -> bool:
        """Whether an earlier attempt of ``item`` took effect (only asked when attempts > 0)."""
        ...

    async def apply(self, item: OutboxItem) -> None:
        """Do it. Raise ``Retry`` for a temporary failure, ``GiveUp`` for a permanent one."""
        ...


class Retry(Exception):
    """A temporary failure: try again later."""


class GiveUp(Exception):
    """A permanent failure: an admin must look (the row is marked FAILED)."""


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    attempts: int


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def enqueue(
    session: AsyncSession,
    *,
    kind: str,
    key: str,
    payload: dict[str, Any],
    print_out_id: int | None = None,
) -> bool:
    """Add a row unless one with ``key`` exists; True if it was new."""
    insert: type[Insert] = _insert(session)
    result = await session.execute(
        insert(OutboxItem)
        .values(
            kind=kind,
            idempotency_key=key,
            payload=payload,
            print_out_id=print_out_id,
            status=int(OutboxStatus.PENDING),
            attempts=0,
            next_attempt_at=utcnow(),
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()  # type: ignore[attr-defined]
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def claim(session: AsyncSession, worker: str, limit: int = 50) -> list[Claimed]:
    """Claim due rows for ``worker`` and count the attempt (commit before acting)."""
    now = utcnow()
    query = (
        select(OutboxItem.id, OutboxItem.kind, OutboxItem.attempts)
        .where(
            OutboxItem.status == int(OutboxStatus.PENDING),
            OutboxItem.next_attempt_at <= now,
            or_(OutboxItem.claim_until.is_(None), OutboxItem.claim_until < now),
        )
        .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    if rows:
        await session.execute(
            update(OutboxItem)
            .where(OutboxItem.id.in_([r.id for r in rows]))
            .values(
                claimed_by=worker,
                claim_until=now + CLAIM_FOR,
                attempts=OutboxItem.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
    # ``attempts`` here is the count BEFORE this attempt: > 0 means "maybe applied".
    return [Claimed(r.id, r.kind, r.attempts) for r in rows]


def backoff(attempts: int) -> timedelta:
    base = min(MAX_BACKOFF.total_seconds(), 2.0 ** min(attempts, 12))
    return timedelta(seconds=base * random.uniform(0.5, 1.0))


async def finish(session: AsyncSession, item_id: int) -> None:
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(
            status=int(OutboxStatus.DONE),
            done_at=utcnow(),
            claimed_by=None,
            claim_until=None,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )


async def postpone(session: AsyncSession, item_id: int, attempts: int, error: str) -> None:
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(
            next_attempt_at=utcnow() + backoff(attempts),
            claimed_by=None,
            claim_until=None,
            last_error=error[:2000],
        )
        .execution_options(synchronize_session=False)
    )


async def fail(session: AsyncSession, item_id: int, error: str) -> None:
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(
            status=int(OutboxStatus.FAILED),
            claimed_by=None,
            claim_until=None,
            last_error=error[:2000],
        )
        .execution_options(synchronize_session=False)
    )


async def depth(session: AsyncSession) -> int:
    from sqlalchemy import func

    count = await session.scalar(
        select(func.count()).where(OutboxItem.status == int(OutboxStatus.PENDING))
    )
    return int(count or 0)


async def pending_for(session: AsyncSession, print_out_ids: Sequence[int]) -> list[OutboxItem]:
    return list(
        await session.scalars(
            select(OutboxItem).where(
                OutboxItem.print_out_id.in_(print_out_ids),
                OutboxItem.status == int(OutboxStatus.PENDING),
            )
        )
    )
