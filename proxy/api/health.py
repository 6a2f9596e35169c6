"""``GET /healthz``: is the service up and can it reach its database? No auth."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from proxy.keys import SESSIONS

log = logging.getLogger(__name__)

# A health probe must answer before the prober gives up, even if the database
# hangs (PostgreSQL behind a dead network path): fail fast, report 503.
DB_TIMEOUT_SECS = 5.0


async def healthz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECS), request.app[SESSIONS]() as session:
            await session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("health check: database unreachable: %s", exc)
        return web.json_response({"status": "error", "database": "error"}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})


def routes() -> list[web.RouteDef]:
    return [web.get("/healthz", healthz)]
