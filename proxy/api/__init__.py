"""The HTTP API: ``/api/v1/...`` resources and ``/healthz``.

One module per resource, each exposing ``routes()``; the error middleware is
the only place where exceptions become responses.
"""

from __future__ import annotations

from aiohttp import web

from . import accounts, delegations, health, jobs, nfc, printouts, tickets
from .errors import error_middleware

PREFIX = "/api/v1"


def setup_api(app: web.Application) -> None:
    """Install the middleware and every route on ``app`` (called by create_app)."""
    app.middlewares.append(error_middleware)
    app.router.add_routes(health.routes())
    app.router.add_routes(printouts.routes(PREFIX))
    app.router.add_routes(accounts.routes(PREFIX))
    app.router.add_routes(jobs.routes(PREFIX))
    app.router.add_routes(tickets.routes(PREFIX))
    app.router.add_routes(delegations.routes(PREFIX))
    nfc.setup_nfc_routes(app, PREFIX)
