"""Runs the outbox: every external posting, retried until it succeeds, once."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from billing import outbox
from billing.models import OutboxItem

from .. import metrics
from ..keys import HANDLERS, INSTANCE, SESSIONS

log = logging.getLogger(__name__)

CONCURRENCY = 8


async def _run_one(app: web.Application, claimed: outbox.Claimed) -> None:
    handler: outbox.Handler | None = app[HANDLERS].get(claimed.kind)
    sessions = app[SESSIONS]
    async with sessions() as session:
        item = await session.get(OutboxItem, claimed.id)
    if item is None:
        return
    if handler is None:
        async with sessions() as session, session.begin():
            await outbox.postpone(
                session, item.id, claimed.attempts + 1, f"no handler for {item.kind}"
            )
        return
    try:
        # An earlier attempt may have reached the other side: look before re-sending.
        if claimed.attempts > 0 and await handler.already_applied(item):
            log.info("outbox %s: applied by an earlier attempt", item.idempotency_key)
        else:
            await handler.apply(item)
    except outbox.GiveUp as exc:
        async with sessions() as session, session.begin():
            await outbox.fail(session, item.id, str(exc))
        log.error("outbox %s failed for good: %s", item.idempotency_key, exc)
        return
    except (outbox.Retry, OSError, TimeoutError) as exc:
        async with sessions() as session, session.begin():
            await outbox.postpone(session, item.id, claimed.attempts + 1, str(exc))
        log.warning("outbox %s: %s (will retry)", item.idempotency_key, exc)
        return
    async with sessions() as session, session.begin():
        await outbox.finish(session, item.id)
    metrics.outbox_done(app, item.kind, item.created_at)


async def outbox_tick(app: web.Application) -> int:
    if not app[HANDLERS]:
        return 0
    async with app[SESSIONS]() as session, session.begin():
        # The attempt is committed before anything is sent (see billing/outbox.py).
        claimed = await outbox.claim(session, app[INSTANCE].name)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(item: outbox.Claimed) -> None:
        async with gate:
            try:
                await _run_one(app, item)
            except Exception:  # e.g. the database was busy: this row's claim expires
                log.exception("outbox row %s", item.id)

    # Rows are independent postings: their remote calls overlap.
    await asyncio.gather(*(run(item) for item in claimed))
    return len(claimed)
