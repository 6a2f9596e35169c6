"""The service's outbox worker: ``billing.outbox``'s runner over every kind it has a
handler for (a row of another kind is postponed until a handler is registered)."""

from __future__ import annotations

from aiohttp import web

from billing import outbox
from billing.models import OutboxItem

from .. import metrics
from ..keys import HANDLERS, INSTANCE, SESSIONS

BATCH = 50
CONCURRENCY = 8


async def outbox_tick(app: web.Application) -> int:
    handlers: dict[str, outbox.Handler] = app[HANDLERS]
    if not handlers:
        return 0
    worker = app[INSTANCE].name
    async with app[SESSIONS]() as session, session.begin():
        # The attempt is committed before anything is sent (see billing/outbox/store.py).
        ids = await outbox.claim(session, worker, limit=BATCH)

    def done(item: OutboxItem) -> None:
        metrics.outbox_done(app, item.kind, item.created_at)

    await outbox.run_items(
        app[SESSIONS], ids, handlers, worker=worker, concurrency=CONCURRENCY, on_done=done
    )
    return len(ids)
