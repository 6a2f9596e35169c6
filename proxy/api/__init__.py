"""The HTTP API: ``/api/v1/...`` resources and ``/healthz``.

One module per resource, each exposing ``routes()``; the error middleware is
the only place where exceptions become responses.
"""

from __future__ import annotations

from aiohttp import web

from proxy.logs import install_request_ids
from proxy.metrics import http_metrics_middleware

from . import (
    accounts,
    admin,
    delegations,
    health,
    jobs,
    metrics,
    nfc,
    openapi,
    printouts,
    reports,
    tickets,
)
from .errors import error_middleware

PREFIX = "/api/v1"


def setup_api(app: web.Application) -> None:
    """Install the middleware and every route on ``app`` (called by create_app)."""
    # Outermost first: the request id is set before anything logs, and the
    # metrics see the status the error middleware chose.
    install_request_ids(app)
    app.middlewares.append(http_metrics_middleware)
    app.middlewares.append(error_middleware)
    app.router.add_routes(health.routes())
    app.router.add_routes(metrics.routes())
    app.router.add_routes(openapi.routes(PREFIX))
    app.router.add_routes(printouts.routes(PREFIX))
    app.router.add_routes(accounts.routes(PREFIX))
    app.router.add_routes(jobs.routes(PREFIX))
    app.router.add_routes(tickets.routes(PREFIX))
    app.router.add_routes(delegations.routes(PREFIX))
    app.router.add_routes(admin.routes(PREFIX))
    app.router.add_routes(reports.routes(PREFIX))
    nfc.setup_nfc_routes(app, PREFIX)
