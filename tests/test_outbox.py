"""The one outbox runner on SQLite and PostgreSQL: attempts, the applied-already check,
outcomes, and the one retry policy."""

from __future__ import annotations

import random

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import outbox
from billing.enums import OutboxStatus
from billing.models import OutboxItem
from billing.retry import RetryPolicy

Sessions = async_sessionmaker[AsyncSession]
FAST = RetryPolicy.forever(backoff=0.0, max_backoff=0.0)  # due again at once


class Flaky:
    """Applies the posting, then loses the answer once (as a crash after the call would)."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.asked: list[int] = []  # attempts at which already_applied was asked

    async def already_applied(self, item: OutboxItem) -> bool:
        self.asked.append(item.attempts)
        return item.idempotency_key in self.applied

    async def apply(self, item: OutboxItem) -> None:
        self.applied.append(item.idempotency_key)
        if self.applied.count(item.idempotency_key) == 1:
            raise outbox.Retry("answer lost")


class Refuses:
    async def already_applied(self, item: OutboxItem) -> bool:
        return False

    async def apply(self, item: OutboxItem) -> None:
        raise outbox.GiveUp("no such account")


async def _row(sessions: Sessions, key: str) -> OutboxItem:
    async with sessions() as session:
        item = await session.scalar(select(OutboxItem).where(OutboxItem.idempotency_key == key))
    assert item is not None
    return item


async def test_a_lost_answer_is_not_applied_twice(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session, session.begin():
        assert await outbox.enqueue(session, kind="k", key="k:1", payload={})
        assert not await outbox.enqueue(session, kind="k", key="k:1", payload={"x": 1})
    handler = Flaky()
    result = await outbox.drain(sessionmaker, "k", handler, worker="w", wait=5.0, policy=FAST)
    assert (result.done, result.retried, result.failed, result.pending) == (1, 1, 0, 0)
    # Applied once; the second attempt asked first and found it applied.
    assert handler.applied == ["k:1"]
    assert handler.asked == [2]
    item = await _row(sessionmaker, "k:1")
    assert (item.status, item.attempts, item.claimed_by) == (int(OutboxStatus.DONE), 2, None)


async def test_give_up_fails_the_row_and_no_handler_postpones(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session, session.begin():
        await outbox.enqueue(session, kind="refused", key="r:1", payload={})
        await outbox.enqueue(session, kind="unknown", key="u:1", payload={})
        ids = await outbox.claim(session, "w")
    assert len(ids) == 2
    result = await outbox.run_items(
        sessionmaker, ids, {"refused": Refuses()}, worker="w", policy=outbox.RETRY
    )
    assert (result.done, result.failed, result.retried) == (0, 1, 1)
    assert result.errors == ["r:1: no such account"]
    refused, unknown = await _row(sessionmaker, "r:1"), await _row(sessionmaker, "u:1")
    assert (refused.status, refused.last_error) == (int(OutboxStatus.FAILED), "no such account")
    assert unknown.status == int(OutboxStatus.PENDING)
    assert unknown.last_error == "no handler for unknown"
    assert unknown.next_attempt_at > unknown.created_at  # waits the policy's pause
    async with sessionmaker() as session, session.begin():
        assert await outbox.claim(session, "w") == []  # neither is due now


def test_one_retry_policy() -> None:
    policy = RetryPolicy(5, backoff=1.0, max_backoff=10.0, rng=random.Random(7))
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0)):
        pause = policy.pause(attempt)
        assert ceiling / 2 <= pause <= ceiling
    forever = RetryPolicy.forever(backoff=2.0, max_backoff=600.0)
    assert 300.0 <= forever.pause(10**6) <= 600.0  # no overflow, however many attempts
    assert forever.attempts > 10**9
