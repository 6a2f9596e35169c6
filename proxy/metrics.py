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

import datetime as dt
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.db import utcnow
from billing.enums import FINAL_STATUSES, OutboxStatus, PrinterMode, PrintStatus
from billing.models import OutboxItem, PrintOut

from .app import CONFIG, READ_SESSIONS
from .probe import within

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DB_TIMEOUT_SECS = 5.0
UNMATCHED_ROUTE = "unmatched"  # 404s: the raw path would make a label per scanner probe
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# An upload (intake) or a Print-Job with the document (dispatch) can take minutes.
TRANSFER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The outbox retries with a back-off of up to 10 minutes, for as long as it takes.
OUTBOX_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)

TRACKER_TARGETS = "targets"  # track_tick: IPP printers and CUPS queues
TRACKER_PAPERCUT = "papercut"  # monitor_tick: PaperCut's print log


@dataclass(frozen=True)
class ClientCounts:
    """An external client's ``calls``/``errors``/``retries`` counters, copied."""

    calls: Mapping[str, int]
    errors: Mapping[str, int]
    retries: Mapping[str, int]

    @classmethod
    def of(cls, client: Any) -> ClientCounts:
        def copy(name: str) -> dict[str, int]:
            counts: Mapping[str, int] = getattr(client, name, None) or {}
            return {str(k): int(v) for k, v in counts.items()}

        return cls(copy("calls"), copy("errors"), copy("retries"))


@dataclass(frozen=True)
class Snapshot:
    """Everything read at scrape time. ``database_up`` False: the DB parts are empty."""

    database_up: bool = False
    # (status label, mode) -> print-outs
    print_outs: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # tracker -> dispatched_at of its oldest unfinished job (None: nothing in flight)
    oldest_in_flight: Mapping[str, dt.datetime | None] = field(default_factory=dict)
    # (kind, "pending" | "failed") -> (rows, oldest created_at)
    outbox: Mapping[tuple[str, str], tuple[int, dt.datetime | None]] = field(default_factory=dict)
    clients: Mapping[str, ClientCounts] = field(default_factory=dict)
    # Outbox kinds this instance handles: reported even when they have no rows.
    outbox_kinds: frozenset[str] = frozenset()
    at: dt.datetime = field(default_factory=utcnow)


class Metrics:
    """The app's registry and the metrics recorded as things happen."""

    def __init__(self, *, trackers: Iterable[str] = ()) -> None:
        registry = CollectorRegistry()
        self.registry = registry
        self.http_requests = Counter(
            "proxyprint_http_requests",
            "HTTP API requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "proxyprint_http_request_duration_seconds",
            "HTTP API request duration by method and route template",
            ["method", "route"],
            registry=registry,
        )
        self.intake_duration = Histogram(
            "proxyprint_intake_duration_seconds",
            "Intake of one job from the CUPS backend (upload, spool, pages, record) by HTTP status",
            ["status"],
            buckets=TRANSFER_BUCKETS,
            registry=registry,
        )
        self.dispatch_duration = Histogram(
            "proxyprint_dispatch_duration_seconds",
            "Sending one job to its target (Print-Job with the document) by result",
            ["result"],
            buckets=TRANSFER_BUCKETS,
            registry=registry,
        )
        self.charge_duration = Histogram(
            "proxyprint_charge_duration_seconds",
            "Charging a completed print-out locally (cost, pro rata, ledger) by source",
            ["source"],
            registry=registry,
        )
        self.outbox_latency = Histogram(
            "proxyprint_outbox_latency_seconds",
            "From an outbox row's creation (e.g. a PaperCut charge) to its acceptance, by kind",
            ["kind"],
            buckets=OUTBOX_BUCKETS,
            registry=registry,
        )
        self.tracker_ticks = Counter(
            "proxyprint_tracker_ticks",
            "Completed tracker ticks",
            ["tracker"],
            registry=registry,
        )
        self.tracker_poll_errors = Counter(
            "proxyprint_tracker_poll_errors",
            "Failed polls of a target's job states (the target is retried next tick)",
            ["target"],
            registry=registry,
        )
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.started = time.monotonic()
        self.expected_trackers = frozenset(trackers)
        self.last_tick: dict[str, tuple[float, float]] = {}  # tracker -> (monotonic, epoch)
        self.snapshot = Snapshot()
        registry.register(_ScrapeCollector(self))

    def tracker_lag(self, now: float | None = None) -> dict[str, float]:
        """Seconds since each tracker's last completed tick (since start if none yet)."""
        now = time.monotonic() if now is None else now
        lags = {name: now - self.started for name in self.expected_trackers}
        for name, (mono, _) in self.last_tick.items():
            lags[name] = now - mono
        return lags

    def render(self, snapshot: Snapshot) -> bytes:
        """Install ``snapshot`` and render the text format (no await between the two)."""
        self.snapshot = snapshot
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


class _ScrapeCollector:
    """The values computed at scrape time, from ``Metrics.snapshot``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # names are not checked against other collectors: nothing to clash

    def collect(self) -> Iterable[Metric]:
        snap = self.metrics.snapshot
        yield from self._database(snap)
        yield from self._trackers(snap)
        yield from self._clients(snap)

    def _database(self, snap: Snapshot) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "proxyprint_database_up", "Whether the scrape could read the database (1) or not (0)"
        )
        up.add_metric([], 1.0 if snap.database_up else 0.0)
        yield up
        if not snap.database_up:
            return
        jobs = GaugeMetricFamily(
            "proxyprint_print_outs",
            "Print-outs in the database by status and mode",
            labels=["status", "mode"],
        )
        # Every combination, zeros included: a series must not vanish when it empties.
        for status in PrintStatus:
            for mode in PrinterMode:
                count = snap.print_outs.get((status.label, mode.value), 0)
                jobs.add_metric([status.label, mode.value], float(count))
        yield jobs
        oldest = GaugeMetricFamily(
            "proxyprint_in_flight_oldest_age_seconds",
            "Age of the oldest dispatched, unfinished print-out per tracker (0: none)",
            labels=["tracker"],
        )
        for tracker in (TRACKER_TARGETS, TRACKER_PAPERCUT):
            since = snap.oldest_in_flight.get(tracker)
            age = max(0.0, (snap.at - since).total_seconds()) if since is not None else 0.0
            oldest.add_metric([tracker], age)
        yield oldest
        depth = GaugeMetricFamily(
            "proxyprint_outbox_depth",
            "Outbox rows waiting to be carried out (pending), by kind",
            labels=["kind"],
        )
        failed = GaugeMetricFamily(
            "proxyprint_outbox_failed",
            "Outbox rows given up on (an admin must look), by kind",
            labels=["kind"],
        )
        oldest_pending = GaugeMetricFamily(
            "proxyprint_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row (0: none)",
        )
        ages = [0.0]
        kinds = snap.outbox_kinds | {kind for kind, _ in snap.outbox}
        for kind in sorted(kinds):
            for state, family in (("pending", depth), ("failed", failed)):
                count, created = snap.outbox.get((kind, state), (0, None))
                family.add_metric([kind], float(count))
                if state == "pending" and created is not None:
                    ages.append((snap.at - created).total_seconds())
        oldest_pending.add_metric([], max(ages))
        yield depth
        yield failed
        yield oldest_pending

    def _trackers(self, snap: Snapshot) -> Iterator[Metric]:
        del snap  # the tracker stamps live in memory, not in the database
        lag = GaugeMetricFamily(
            "proxyprint_tracker_lag_seconds",
            "Seconds since this instance's last completed tracker tick (since start before the"
            " first); several instances: only the leader ticks, take the min",
            labels=["tracker"],
        )
        for name, seconds in sorted(self.metrics.tracker_lag().items()):
            lag.add_metric([name], seconds)
        yield lag
        last = GaugeMetricFamily(
            "proxyprint_tracker_last_tick_timestamp_seconds",
            "Unix time of the tracker's last completed tick",
            labels=["tracker"],
        )
        for name, (_, epoch) in sorted(self.metrics.last_tick.items()):
            last.add_metric([name], epoch)
        yield last

    def _clients(self, snap: Snapshot) -> Iterator[Metric]:
        for system, label in (("papercut", "method"), ("officernd", "call")):
            counts = snap.clients.get(system)
            for part, text in (
                ("calls", "requests sent (attempts)"),
                ("errors", "failed attempts"),
                ("retries", "repeated attempts"),
            ):
                family = CounterMetricFamily(
                    f"proxyprint_{system}_{part}",
                    f"{system} API {text} by {label} (the client's own counters)",
                    labels=[label],
                )
                for key, value in sorted((getattr(counts, part) if counts else {}).items()):
                    family.add_metric([key], float(value))
                yield family


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


def _clients(app: web.Application) -> dict[str, ClientCounts]:
    from .pipeline.officernd import OFFICERND
    from .pipeline.papercut import PAPERCUT

    found: dict[str, ClientCounts] = {}
    if PAPERCUT in app:
        found["papercut"] = ClientCounts.of(app[PAPERCUT])
    if OFFICERND in app:
        found["officernd"] = ClientCounts.of(app[OFFICERND])
    return found


async def take_snapshot(app: web.Application) -> Snapshot:
    """Read the database (bounded by DB_TIMEOUT_SECS) and the clients' counters."""
    from .pipeline.outbox_worker import HANDLERS

    clients = _clients(app)
    handlers: dict[str, Any] = app.get(HANDLERS, {})
    kinds = frozenset(handlers)

    async def read() -> dict[str, Any]:
        async with app[READ_SESSIONS]() as session:
            return await read_database(session)

    try:
        db = await within(DB_TIMEOUT_SECS, read())
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
    from .logs import install_request_ids

    install_request_ids(intake)
    metrics = main.get(METRICS)
    if metrics is not None:
        intake.middlewares.insert(1, intake_middleware(metrics))
