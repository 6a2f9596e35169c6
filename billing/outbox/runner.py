"""The one outbox runner: the service's worker and every in-process drain use it.

An attempt (``attempt``) asks a row's ``Handler`` first whether an earlier
attempt may have reached the other system and did (``may_have_been_applied``
then ``Handler.already_applied``), and only then carries it out; its
``Outcome`` is settled in one transaction per batch: done, postponed by the
``RetryPolicy``, or failed for good. Claims are renewed while a batch runs,
so a slow server never lets another worker take a row still being carried
out. Exactly once: the attempt is committed (``store.claim``) before the
call, and a crash after the call is caught by the next attempt's check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..models import OutboxItem
from ..retry import RetryPolicy
from . import store

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16
MAX_ERRORS = 50
# 2 s, 4 s, … at most 10 minutes (jittered), for as long as it takes.
RETRY = RetryPolicy.forever(backoff=2.0, max_backoff=600.0)


class Outcome(StrEnum):
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"


class Retry(Exception):
    """A temporary failure: try again later."""


class GiveUp(Exception):
    """A permanent failure: an admin must look (the row is marked FAILED)."""


class Handler(Protocol):
    """Carries out one kind of outbox row."""

    async def already_applied(self, item: OutboxItem) -> bool:
        """Whether an earlier attempt of ``item`` took effect (asked only when
        ``may_have_been_applied``)."""
        ...

    async def apply(self, item: OutboxItem) -> None:
        """Do it. Raise ``Retry`` for a temporary failure, ``GiveUp`` for a permanent one."""
        ...


def may_have_been_applied(item: OutboxItem) -> bool:
    """An earlier attempt exists (``attempts`` counts the one under way)."""
    return item.attempts > 1


async def attempt(handler: Handler | None, item: OutboxItem) -> tuple[Outcome, str]:
    """One attempt at ``item``: its outcome and, unless done, the error."""
    if handler is None:
        return Outcome.RETRY, f"no handler for {item.kind}"
    try:
        if may_have_been_applied(item) and await handler.already_applied(item):
            log.info("outbox %s: applied by an earlier attempt", item.idempotency_key)
            return Outcome.DONE, ""
        await handler.apply(item)
    except GiveUp as exc:
        log.error("outbox %s failed for good: %s", item.idempotency_key, exc)
        return Outcome.FAILED, str(exc)
    except (Retry, OSError, TimeoutError) as exc:
        log.warning("outbox %s: %s (will retry)", item.idempotency_key, exc)
        return Outcome.RETRY, str(exc) or type(exc).__name__
    except Exception as exc:  # a bug in one handler never stops the other rows
        log.exception("outbox %s", item.idempotency_key)
        return Outcome.RETRY, f"{type(exc).__name__}: {exc}"
    return Outcome.DONE, ""


@dataclass
class DrainResult:
    done: int = 0
    failed: int = 0
    retried: int = 0
    pending: int = 0  # left for a later run or the service's outbox worker
    errors: list[str] = field(default_factory=list)  # rows given up
    last_retry_error: str = ""

    def count(self, item: OutboxItem, outcome: Outcome, error: str) -> None:
        if outcome is Outcome.DONE:
            self.done += 1
        elif outcome is Outcome.FAILED:
            self.failed += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(f"{item.idempotency_key}: {error}")
        else:
            self.retried += 1
            self.last_retry_error = f"{item.idempotency_key}: {error}"


async def _settle(
    session: AsyncSession, outcomes: Sequence[tuple[OutboxItem, Outcome, str]], policy: RetryPolicy
) -> None:
    await store.finish(
        session, [item.id for item, outcome, _ in outcomes if outcome is Outcome.DONE]
    )
    for item, outcome, error in outcomes:
        if outcome is Outcome.FAILED:
            await store.fail(session, item.id, error)
        elif outcome is Outcome.RETRY:
            await store.postpone(session, item.id, policy.pause(item.attempts), error)


async def _keep_claims(
    sessions: async_sessionmaker[AsyncSession], ids: Sequence[int], worker: str
) -> None:
    while True:
        await asyncio.sleep(store.CLAIM_FOR.total_seconds() / 3)
        async with sessions() as session, session.begin():
            await store.renew(session, ids, worker)


async def run_items(
    sessions: async_sessionmaker[AsyncSession],
    ids: Sequence[int],
    handlers: Mapping[str, Handler],
    *,
    worker: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    policy: RetryPolicy = RETRY,
    result: DrainResult | None = None,
    progress: Callable[[], None] | None = None,
    on_done: Callable[[OutboxItem], None] | None = None,
) -> DrainResult:
    """Carry out rows ``worker`` claimed (concurrently), then settle them in one transaction."""
    result = result or DrainResult()
    if not ids:
        return result
    async with sessions() as session:
        items = await store.load(session, ids)
    gate = asyncio.Semaphore(concurrency)

    async def one(item: OutboxItem) -> tuple[OutboxItem, Outcome, str]:
        async with gate:
            outcome, error = await attempt(handlers.get(item.kind), item)
        if progress is not None:
            progress()
        return item, outcome, error

    heartbeat = asyncio.create_task(_keep_claims(sessions, ids, worker))
    try:
        # Rows are independent postings: their remote calls overlap.
        outcomes = await asyncio.gather(*(one(item) for item in items))
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    async with sessions() as session, session.begin():
        await _settle(session, outcomes, policy)
    for item, outcome, error in outcomes:
        result.count(item, outcome, error)
        if outcome is Outcome.DONE and on_done is not None:
            on_done(item)
    return result


async def drain(
    sessions: async_sessionmaker[AsyncSession],
    kind: str,
    handler: Handler,
    *,
    worker: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    wait: float = 0.0,
    policy: RetryPolicy = RETRY,
    due_only: bool = True,
    progress: Callable[[], None] | None = None,
) -> DrainResult:
    """Carry out the pending rows of ``kind`` in this process.

    Claims ``4 x concurrency`` rows at a time. ``due_only=False`` first takes
    every pending row once, those waiting for a retry too (a sync finishing
    what a crashed run left). A row that fails for now is retried after the
    policy's pause for up to ``wait`` seconds in all; after that it stays
    pending for the next run or the service's outbox worker.
    """
    result = DrainResult()
    deadline = time.monotonic() + wait
    batch = max(1, 4 * concurrency)
    seen: set[int] = set()  # with due_only=False: each row once, then it waits its turn
    while True:
        async with sessions() as session, session.begin():
            ids = await store.claim(
                session,
                worker,
                kinds=(kind,),
                limit=batch,
                due_only=due_only,
                exclude=() if due_only else seen,
            )
        if not ids and not due_only:
            due_only = True
            continue
        if ids:
            seen.update(ids)
            await run_items(
                sessions,
                ids,
                {kind: handler},
                worker=worker,
                concurrency=concurrency,
                policy=policy,
                result=result,
                progress=progress,
            )
            continue
        left = deadline - time.monotonic()
        async with sessions() as session:
            chance = await store.next_chance(session, kind)
        if chance is None or left <= 0 or chance > left:
            break
        await asyncio.sleep(max(chance, 0.01))
    async with sessions() as session:
        result.pending = await store.pending_count(session, kind)
    return result
