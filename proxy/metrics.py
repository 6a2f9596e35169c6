"""Prometheus metrics (``GET /metrics``): one registry per app, no globals.

What is measured where:

* as it happens (counters, histograms): HTTP requests by route and status
  (middleware), intake and dispatch durations, the local charge step, the
  outbox latency (a charge decided until PaperCut/OfficeRnD accepted it),
  tracker ticks and poll errors. The pipeline calls the small functions
  below (``dispatched``, ``charged``, ...); each is a no-op for an app
  without metrics.
* at scrape time (:class:`Snapshot`): print-outs by status and mode (one
  ``GROUP BY`` query), the oldest in-flight job, the outbox depth (a second
  ``GROUP BY``), the tracker lag, and the PaperCut/OfficeRnD clients' own
  call/error/retry counters.

A scrape sets the snapshot and renders it with no ``await`` in between, so
concurrent scrapes never mix their numbers. The metric names are listed in
README.md ("Monitoring and logs").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.db import utcnow
from billing.enums import FINAL_STATUSES, OutboxStatus, PrintStatus
from billing.models import OutboxItem, PrintOut

from .keys import CONFIG, METRICS, SESSIONS
from .logs import install_request_ids
from .metrics_registry import TRACKER_PAPERCUT, TRACKER_TARGETS, ClientCounts, Metrics, Snapshot

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DB_TIMEOUT_SECS = 5.0
UNMATCHED_ROUTE = "unmatched"  # 404s: the raw path would make a label per scanner probe
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- scrape -----------------------------------------------------------------------

_IN_FLIGHT = frozenset(int(s) for s in PrintStatus if s not in FINAL_STATUSES)
_LABELS = {int(s): s.label for s in PrintStatus}


async def read_database(session: AsyncSession) -> dict[str, Any]:
    """The scrape's two GROUP BY queries: print-outs, and the unfinished outbox."""
    print_outs: Tally[tuple[str, str]] = Tally()
    oldest: dict[str, dt.datetime | None] = {TRACKER_TARGETS: None, TRACKER_PAPERCUT: None}
    rows = await session.execute(
        select(
            PrintOut.status,
            PrintOut.mode,
            PrintOut.papercut,
            func.count(),
            func.min(PrintOut.dispatched_at),
        ).group_by(PrintOut.status, PrintOut.mode, PrintOut.papercut)
    )
    for status, mode, papercut, count, first_dispatch in rows:
        label = _LABELS.get(status, str(status))
        print_outs[(label, mode)] += int(count)
        if status in _IN_FLIGHT and first_dispatch is not None:
            tracker = TRACKER_PAPERCUT if papercut else TRACKER_TARGETS
            known = oldest[tracker]
            oldest[tracker] = first_dispatch if known is None else min(known, first_dispatch)
    outbox: dict[tuple[str, str], tuple[int, dt.datetime | None]] = {}
    states = {int(OutboxStatus.PENDING): "pending", int(OutboxStatus.FAILED): "failed"}
    pending = await session.execute(
        select(OutboxItem.kind, OutboxItem.status, func.count(), func.min(OutboxItem.created_at))
        .where(OutboxItem.status.in_(list(states)))
        .group_by(OutboxItem.kind, OutboxItem.status)
    )
    for kind, state, count, first in pending:
        outbox[(kind, states[state])] = (int(count), first)
    return {"print_outs": dict(print_outs), "oldest_in_flight": oldest, "outbox": outbox}


async def take_snapshot(app: web.Application) -> Snapshot:
    """Read the database (bounded by DB_TIMEOUT_SECS) and the watched clients' counters."""
    watched = app.get(METRICS)
    clients = {}
    kinds: frozenset[str] = frozenset()
    if watched is not None:
        clients = {name: ClientCounts.of(c) for name, c in watched.clients.items()}
        kinds = frozenset(watched.outbox_handlers)
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECS), app[SESSIONS]() as session:
            db = await read_database(session)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("metrics: database unreachable: %s", exc)
        return Snapshot(database_up=False, clients=clients)
    return Snapshot(database_up=True, clients=clients, outbox_kinds=kinds, **db)


async def scrape(app: web.Application) -> bytes:
    snapshot = await take_snapshot(app)
    return app[METRICS].render(snapshot)


# --- recording (called by the pipeline; no-ops without metrics) --------------------


def _of(app: web.Application) -> Metrics | None:
    return app.get(METRICS)


def dispatched(app: web.Application, started: float, result: str) -> None:
    """One submission to a target ended: ``ok``, ``retry`` or ``rejected``."""
    if (m := _of(app)) is not None:
        m.dispatch_duration.labels(result).observe(time.monotonic() - started)


def charged(app: web.Application, source: str, started: float) -> None:
    """A completed print-out was charged locally (``tracker`` or ``papercut``)."""
    if (m := _of(app)) is not None:
        m.charge_duration.labels(source).observe(time.monotonic() - started)


def outbox_done(app: web.Application, kind: str, created_at: dt.datetime) -> None:
    """An outbox row was carried out; its latency counts from its creation."""
    if (m := _of(app)) is not None:
        m.outbox_latency.labels(kind).observe(max(0.0, (utcnow() - created_at).total_seconds()))


def tracker_ticked(app: web.Application, tracker: str) -> None:
    """A tracker tick completed (``targets`` or ``papercut``)."""
    if (m := _of(app)) is not None:
        m.last_tick[tracker] = (time.monotonic(), time.time())
        m.tracker_ticks.labels(tracker).inc()


def poll_failed(app: web.Application, target: str) -> None:
    if (m := _of(app)) is not None:
        m.tracker_poll_errors.labels(target).inc()


def watch_client(app: web.Application, system: str, client: Any) -> None:
    """Scrapes report ``client``'s call/error/retry counters (``papercut``, ``officernd``)."""
    if (m := _of(app)) is not None:
        m.watch_client(system, client)


def watch_outbox(app: web.Application, handlers: Mapping[str, object]) -> None:
    """Scrapes report the outbox depth of every kind ``handlers`` carries out."""
    if (m := _of(app)) is not None:
        m.watch_outbox(handlers)


# --- middlewares --------------------------------------------------------------------


def route_of(request: web.Request) -> str:
    """The route template (``/api/v1/printouts/{id}``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def _status_of(exc: BaseException) -> int:
    return exc.status if isinstance(exc, web.HTTPException) else 500


async def _timed(
    request: web.Request, handler: Handler, record: Callable[[int, float], None]
) -> web.StreamResponse:
    """Run ``handler``; then ``record(final status, seconds)``, also when it raised."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except BaseException as exc:
        status = _status_of(exc)
        raise
    finally:
        record(status, time.monotonic() - started)


@web.middleware
async def http_metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by route template and final status."""
    metrics = request.app.get(METRICS)
    if metrics is None:
        return await handler(request)
    method = request.method if request.method in _METHODS else "OTHER"
    route = route_of(request)

    def record(status: int, seconds: float) -> None:
        metrics.http_requests.labels(method, route, str(status)).inc()
        metrics.http_duration.labels(method, route).observe(seconds)

    return await _timed(request, handler, record)


def intake_middleware(metrics: Metrics) -> Any:
    """Times every intake request (the intake app shares the main app's metrics)."""

    def record(status: int, seconds: float) -> None:
        metrics.intake_duration.labels(str(status)).observe(seconds)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _timed(request, handler, record)

    return middleware


def setup_metrics(app: web.Application, *, workers: bool) -> None:
    """Create the app's metrics; ``workers`` says which trackers will tick."""
    trackers = []
    if workers:
        trackers.append(TRACKER_TARGETS)
        if app[CONFIG].papercut.url:
            trackers.append(TRACKER_PAPERCUT)
    app[METRICS] = Metrics(trackers=trackers)


def instrument_intake(intake: web.Application, main: web.Application) -> None:
    """Request ids and the intake histogram on the intake app (before it starts)."""
    install_request_ids(intake)
    metrics = main.get(METRICS)
    if metrics is not None:
        intake.middlewares.insert(1, intake_middleware(metrics))
