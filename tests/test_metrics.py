"""``GET /metrics`` after a known run, parsed with prometheus_client's own parser.

The run goes through the real pipeline functions, not the metrics helpers:
jobs arrive on the intake socket, ``dispatch_tick`` sends them to fake targets
(one accepts, one is down), ``track_tick`` completes and charges, and
``outbox_tick`` carries out outbox rows. Print-outs in other statuses and
modes, and outbox rows, are seeded through the domain functions. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import outbox
from billing.db import utcnow
from billing.enums import PrinterMode, PrintStatus
from billing.models import OutboxItem
from billing.papercut.client import PaperCutClient
from billing.papercut.exceptions import PaperCutError
from proxy import metrics
from proxy.app import create_app
from proxy.config import build_config
from proxy.keys import HANDLERS, PAPERCUT
from proxy.pipeline import pool as pool_module
from proxy.pipeline.dispatch import dispatch_tick
from proxy.pipeline.outbox_worker import outbox_tick
from proxy.pipeline.papercut import ADJUST_KIND
from proxy.pipeline.tracker import track_tick
from proxy.targets.base import IppJobState, JobState, PrintRequest, SubmittedJob
from proxy.targets.capabilities import Capabilities
from proxy.targets.errors import TargetRequestError
from tests import factories as f

Client = TestClient[web.Request, web.Application]
Sessions = async_sessionmaker[AsyncSession]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

OK_URI = "ipp://ok.example/ipp/print"
DOWN_URI = "ipp://down.example/ipp/print"


class FakeTarget:
    """A printer that completes every job at once, or one that is down."""

    def __init__(self, uri: str, *, down: bool = False) -> None:
        self.uri = uri
        self.down = down
        self.requests_made = 0
        self.jobs: dict[int, JobState] = {}
        self.by_uuid: dict[str, int] = {}

    async def submit(self, req: PrintRequest) -> SubmittedJob:
        self.requests_made += 1
        if self.down:
            raise TargetRequestError("connection refused", retryable=True, target=self.uri)
        job_id = 100 + len(self.jobs)
        self.jobs[job_id] = JobState(IppJobState.COMPLETED)
        if req.job_uuid is not None:
            self.by_uuid[req.job_uuid] = job_id
        return SubmittedJob(job_id)

    async def capabilities(self, *, refresh: bool = False) -> Capabilities:
        if self.down:
            raise TargetRequestError("connection refused", retryable=True, target=self.uri)
        return Capabilities(formats=frozenset({"application/pdf"}), max_copies=999)

    async def find(self, req: PrintRequest) -> SubmittedJob | None:
        self.requests_made += 1
        if self.down:
            raise TargetRequestError("connection refused", retryable=True, target=self.uri)
        job_id = self.by_uuid.get(req.job_uuid or "")
        return None if job_id is None else SubmittedJob(job_id)

    async def poll(self, job_ids: Collection[int]) -> dict[int, JobState]:
        self.requests_made += 1
        return {j: self.jobs[j] for j in job_ids if j in self.jobs}

    async def cancel(self, job_id: int) -> None:
        del job_id

    async def close(self) -> None:
        pass


class AcceptAll:
    """An outbox handler for which every row succeeds at once."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    async def already_applied(self, item: OutboxItem) -> bool:
        return False

    async def apply(self, item: OutboxItem) -> None:
        self.applied.append(item.id)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def scrape(client: Client, token: str) -> Samples:
    async with client.get("/metrics", headers=bearer(token)) as resp:
        text = await resp.text()
        assert resp.status == 200, text
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(text)


async def post_job(socket: Path, printer: str, *, expect: bool = False) -> int:
    meta = {
        "printer": printer,
        "job_id": 7,
        "job_uuid": f"urn:uuid:{uuid.uuid4()}",
        "user": "alice",
        "title": "metrics.txt",
        "copies": 1,
        "options": "",
        "content_type": "text/plain",
        "host": "localhost",
    }
    header = base64.b64encode(json.dumps(meta).encode()).decode()
    connector = aiohttp.UnixConnector(path=str(socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://intake/intake/v1/jobs",
            data=b"hello\n",
            headers={"X-Proxyprint-Meta": header},
            expect100=expect,
        ) as resp,
    ):
        assert resp.headers["X-Request-Id"]  # the intake has request ids too
        return resp.status


@pytest.fixture
def fake_targets(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, FakeTarget]]:
    targets = {OK_URI: FakeTarget(OK_URI), DOWN_URI: FakeTarget(DOWN_URI, down=True)}

    def open_target(uri: str, **_: Any) -> FakeTarget:
        return targets[uri]

    monkeypatch.setattr(pool_module, "open_target", open_target)
    yield targets


async def seed(sessions: Sessions) -> dict[str, str]:
    """Print-outs in several statuses and modes, outbox rows, tokens."""
    now = utcnow()
    async with sessions() as s, s.begin():
        alice = await f.user(s, "alice")
        await f.user(s, "bob")
        direct = await f.printer(s, "pp-direct", target=OK_URI)
        await f.printer(s, "pp-down", target=DOWN_URI)
        hold = await f.printer(s, "pp-hold", mode=PrinterMode.HOLD, target=OK_URI)
        ticket = await f.printer(s, "pp-ticket", mode=PrinterMode.TICKET, target=OK_URI)
        # direct: completed (charged), aborted, processing (dispatched 2 minutes ago)
        done = await f.print_out(s, direct, "alice", charged_to=[(alice, 1)])
        await f.charge(s, done, "0.30")
        aborted = await f.print_out(s, direct, "bob")
        await f.finish(s, aborted, PrintStatus.ABORTED, reason="target-rejected")
        printing = await f.print_out(s, direct, "bob")
        printing.dispatched_at = now - dt.timedelta(seconds=120)
        await f.finish(s, printing, PrintStatus.PROCESSING)
        # hold: two held, one expired; ticket: one held
        for _ in range(2):
            await f.finish(s, await f.print_out(s, hold, "alice"), PrintStatus.HELD)
        expired = await f.print_out(s, hold, "bob")
        await f.finish(s, expired, PrintStatus.CANCELED, reason="expired")
        await f.finish(s, await f.print_out(s, ticket, "bob"), PrintStatus.HELD)
        # PaperCut: waiting for PaperCut's print log for five minutes
        external = await f.print_out(s, direct, "alice")
        external.papercut = True
        external.dispatched_at = now - dt.timedelta(seconds=300)
        await f.finish(s, external, PrintStatus.PENDING_EXTERNAL)
        # outbox: two PaperCut adjustments (handled), a top-up nobody handles
        # (pending for ten minutes), a fee given up on
        for n in range(2):
            await outbox.enqueue(s, kind=ADJUST_KIND, key=f"adj-{n}", payload={})
        await outbox.enqueue(s, kind="officernd.topup", key="topup-1", payload={})
        await outbox.enqueue(s, kind="officernd.fee", key="fee-1", payload={})
        await s.execute(
            update(OutboxItem)
            .where(OutboxItem.idempotency_key == "topup-1")
            .values(created_at=now - dt.timedelta(seconds=600))
        )
        await s.execute(
            update(OutboxItem)
            .where(OutboxItem.idempotency_key == "fee-1")
            .values(status=2, last_error="no such member")
        )
        return {
            "admin": await f.token(s, "admin"),
            "reader": await f.token(s, "reader"),
            "alice": await f.token(s, "user", user="alice"),
        }


async def test_metrics_after_a_known_run(
    aiohttp_client: AiohttpClient,
    db_url: str,
    short_tmp: Path,
    sessionmaker: Sessions,
    fake_targets: dict[str, FakeTarget],
) -> None:
    tokens = await seed(sessionmaker)
    socket = short_tmp / "i.sock"
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(short_tmp / "spool")},
            "intake": {"socket": str(socket)},
        }
    )
    app = create_app(config, workers=False)
    handler = AcceptAll()
    app[HANDLERS] = {ADJUST_KIND: handler}
    metrics.watch_outbox(app, app[HANDLERS])  # as setup_workers does
    # A PaperCut server that is down: one read, tried twice.
    papercut = PaperCutClient("http://127.0.0.1:9/rpc/api/xmlrpc", "t", attempts=2, backoff=0.001)
    app[PAPERCUT] = papercut
    metrics.watch_client(app, "papercut", papercut)  # as papercut_ctx does
    client = await aiohttp_client(app)
    try:
        # The known run.
        assert await post_job(socket, "pp-direct") == 201
        assert await post_job(socket, "pp-down") == 201
        assert await post_job(socket, "pp-unknown") == 404
        # As the backend asks: refused instead of 100 Continue, still with an id and timed.
        assert await post_job(socket, "pp-unknown", expect=True) == 404
        assert await dispatch_tick(app) == 2  # one sent, one target down (retry later)
        assert await track_tick(app) == 1  # completed and charged
        assert await outbox_tick(app) == 3  # two adjustments done, the top-up postponed
        assert len(handler.applied) == 2
        with pytest.raises(PaperCutError):
            await papercut.is_user_exists("alice")
        admin = tokens["admin"]
        for _ in range(2):
            async with client.get("/api/v1/printouts", headers=bearer(admin)) as resp:
                assert resp.status == 200
        async with client.get("/api/v1/printouts") as resp:
            assert resp.status == 401
        async with client.get("/api/v1/printouts/999", headers=bearer(admin)) as resp:
            assert resp.status == 404
        async with client.get("/no/such/route") as resp:
            assert resp.status == 404
        async with client.get("/metrics") as resp:
            assert resp.status == 401
        async with client.get("/metrics", headers=bearer(tokens["alice"])) as resp:
            assert resp.status == 403

        got = await scrape(client, tokens["reader"])
    finally:
        await papercut.close()

    # Print-outs by status and mode: every combination is there, zeros included.
    expected = {
        ("completed", "direct"): 2,  # seeded + the job the fake printer completed
        ("aborted", "direct"): 1,
        ("processing", "direct"): 1,
        ("pending", "direct"): 1,  # the job whose target is down
        ("pending_external", "direct"): 1,
        ("held", "hold"): 2,
        ("canceled", "hold"): 1,
        ("held", "ticket"): 1,
    }
    for status in PrintStatus:
        for mode in PrinterMode:
            count = value(got, "proxyprint_print_outs", status=status.label, mode=mode.value)
            assert count == expected.get((status.label, mode.value), 0), (status, mode)
    assert value(got, "proxyprint_database_up") == 1

    # The oldest in-flight job per tracker: 120 s (printing), 300 s (PaperCut).
    targets = value(got, "proxyprint_in_flight_oldest_age_seconds", tracker="targets")
    papercut_age = value(got, "proxyprint_in_flight_oldest_age_seconds", tracker="papercut")
    assert targets is not None and 120 <= targets < 180
    assert papercut_age is not None and 300 <= papercut_age < 360

    # Outbox: depth, failed rows, the oldest pending row, the latency of the two done.
    assert value(got, "proxyprint_outbox_depth", kind="officernd.topup") == 1
    # A kind this instance handles is reported with no rows left.
    assert value(got, "proxyprint_outbox_depth", kind=ADJUST_KIND) == 0
    assert value(got, "proxyprint_outbox_failed", kind=ADJUST_KIND) == 0
    assert value(got, "proxyprint_outbox_depth", kind="officernd.fee") == 0
    assert value(got, "proxyprint_outbox_failed", kind="officernd.fee") == 1
    oldest = value(got, "proxyprint_outbox_oldest_pending_age_seconds")
    assert oldest is not None and 600 <= oldest < 660
    assert value(got, "proxyprint_outbox_latency_seconds_count", kind=ADJUST_KIND) == 2

    # Latencies of the known run.
    assert value(got, "proxyprint_intake_duration_seconds_count", status="201") == 2
    assert value(got, "proxyprint_intake_duration_seconds_count", status="404") == 2
    assert value(got, "proxyprint_dispatch_duration_seconds_count", result="ok") == 1
    assert value(got, "proxyprint_dispatch_duration_seconds_count", result="retry") == 1
    assert value(got, "proxyprint_dispatch_duration_seconds_count", result="rejected") is None
    assert value(got, "proxyprint_charge_duration_seconds_count", source="tracker") == 1
    for name in ("intake", "dispatch", "charge"):
        sums = f"proxyprint_{name}_duration_seconds_sum"
        total = sum(v for (n, _), v in got.items() if n == sums)
        assert total > 0, name

    # The tracker ticked once; before a tick (workers off) no lag is reported.
    assert value(got, "proxyprint_tracker_ticks_total", tracker="targets") == 1
    lag = value(got, "proxyprint_tracker_lag_seconds", tracker="targets")
    assert lag is not None and 0 <= lag < 30
    assert value(got, "proxyprint_tracker_lag_seconds", tracker="papercut") is None
    stamp = value(got, "proxyprint_tracker_last_tick_timestamp_seconds", tracker="targets")
    assert stamp is not None and abs(stamp - utcnow().timestamp()) < 30
    assert value(got, "proxyprint_tracker_poll_errors_total", target=OK_URI) is None

    # PaperCut: the client's own counters, one read tried twice.
    method = "api.isUserExists"
    assert value(got, "proxyprint_papercut_calls_total", method=method) == 2
    assert value(got, "proxyprint_papercut_errors_total", method=method) == 2
    assert value(got, "proxyprint_papercut_retries_total", method=method) == 1

    # HTTP requests by route template and status (the scrape itself counts after it).
    http = "proxyprint_http_requests_total"
    assert value(got, http, method="GET", route="/api/v1/printouts", status="200") == 2
    assert value(got, http, method="GET", route="/api/v1/printouts", status="401") == 1
    assert value(got, http, method="GET", route="/api/v1/printouts/{id}", status="404") == 1
    assert value(got, http, method="GET", route="unmatched", status="404") == 1
    assert value(got, http, method="GET", route="/metrics", status="401") == 1
    assert value(got, http, method="GET", route="/metrics", status="403") == 1
    assert value(got, http, method="GET", route="/metrics", status="200") is None
    routes = {dict(labels)["route"] for (n, labels) in got if n == http}
    assert "/no/such/route" not in routes  # raw paths never become labels
    duration = "proxyprint_http_request_duration_seconds_count"
    assert value(got, duration, method="GET", route="/api/v1/printouts") == 3

    # Process metrics come with the per-app registry.
    assert value(got, "process_cpu_seconds_total") is not None

    # A second scrape sees the first one.
    again = await scrape(client, tokens["admin"])
    assert value(again, http, method="GET", route="/metrics", status="200") == 1


async def test_tracker_lag_is_reported_from_start_when_workers_run() -> None:
    m = metrics.Metrics(trackers=["targets", "papercut"])
    before = m.tracker_lag()
    assert set(before) == {"targets", "papercut"}
    m.last_tick["targets"] = (m.started + 5.0, 0.0)
    lag = m.tracker_lag(now=m.started + 7.0)
    assert lag == {"targets": 2.0, "papercut": 7.0}


def test_without_the_database_only_database_up_0() -> None:
    got = parse(metrics.Metrics().render(metrics.Snapshot(database_up=False)).decode())
    assert value(got, "proxyprint_database_up") == 0
    assert not [name for name, _ in got if name == "proxyprint_print_outs"]


def test_apps_in_one_process_do_not_share_a_registry(tmp_path: Path) -> None:
    config = build_config({"database": {"url": f"sqlite+aiosqlite:///{tmp_path}/x.db"}})
    one = create_app(config, workers=False, intake=False)
    two = create_app(config, workers=False, intake=False)
    one[metrics.METRICS].http_requests.labels("GET", "/x", "200").inc()
    text_two = two[metrics.METRICS].render(metrics.Snapshot()).decode()
    assert 'route="/x"' not in text_two
    text_one = one[metrics.METRICS].render(metrics.Snapshot()).decode()
    assert 'proxyprint_http_requests_total{method="GET",route="/x",status="200"} 1.0' in text_one
