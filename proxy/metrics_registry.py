"""The metrics object: one Prometheus registry per app and what it reports.

Leaf module (no app, no keys, no pipeline): the app keeps one ``Metrics``
under ``proxy.keys.METRICS``; the pipeline records into it through
``proxy.metrics`` and pushes the clients and outbox handlers it owns
(``watch_client``, ``watch_outbox``), so nothing here reaches into the pipeline.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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

from billing.db import utcnow
from billing.enums import PrinterMode, PrintStatus

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
        # Pushed by the parts that own them (the pipeline's contexts), read at scrape time.
        self.clients: dict[str, Any] = {}  # "papercut"/"officernd" -> its client
        self.outbox_handlers: Mapping[str, object] = {}  # kind -> handler (a live view)
        registry.register(_ScrapeCollector(self))

    def watch_client(self, system: str, client: Any) -> None:
        """Report ``client``'s own ``calls``/``errors``/``retries`` counters as ``system``."""
        self.clients[system] = client

    def watch_outbox(self, handlers: Mapping[str, object]) -> None:
        """Report every kind in ``handlers`` (kinds added later included), rows or not."""
        self.outbox_handlers = handlers

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
