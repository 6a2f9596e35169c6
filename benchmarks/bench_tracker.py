"""Tracker: IPP requests per printer per tick with 1,000 jobs in flight on 4 printers.

Four queues of a private cupsd accept jobs but do not print (disabled, so
every job stays pending); 1,000 real jobs are submitted to them through
``proxy.targets`` (IPP Print-Job, as dispatch does) and recorded as
dispatched print-outs of four proxy printers.  Then ``track_tick`` runs K
times on the real app (background workers off, so only the measured ticks
poll) and the targets' request counters say how many requests it made.

The baseline, measured in the same run through the same target objects: one
request per job per tick (a Get-Jobs naming one job, the cost of the naive
per-job Get-Job-Attributes loop), i.e. 250 requests per printer per tick.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from billing.db import make_engine, utcnow
from proxy import cupsadmin, dbadmin, printers
from proxy.app import create_app
from proxy.config import build_config
from proxy.devkit.cupsd import PrivateCupsd, free_port
from proxy.devkit.documents import make_pdf
from proxy.keys import SESSIONS, TARGETS
from proxy.pipeline.tracker import in_flight, track_tick
from proxy.targets.base import PrintRequest

from .harness import add_print_outs, median, scratch_dir

PRINTERS = 4
JOBS = 1000
TICKS = 5
SUBMIT_CONCURRENCY = 8


@contextmanager
def _cupsd() -> Iterator[PrivateCupsd]:
    cupsd = PrivateCupsd(log_level="warn")
    cupsd.start()
    try:
        yield cupsd
    finally:
        cupsd.stop()


def _queues(cupsd: PrivateCupsd) -> list[str]:
    """Queues that accept jobs and keep them pending (disabled = stopped)."""
    names = [f"trk-{n}" for n in range(1, PRINTERS + 1)]
    for name in names:
        cupsadmin.create_queue(name, "file:///dev/null", cups_server=cupsd.server)
        subprocess.run(["cupsdisable", name], env=cupsd.env(), check=True, timeout=30)
    return names


async def _app(root: Path, cupsd: PrivateCupsd) -> web.AppRunner:
    root.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite+aiosqlite:///{root / 'proxyprint.db'}"
    engine = make_engine(db_url)
    try:
        await dbadmin.upgrade(engine)
    finally:
        await engine.dispose()
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(root / "spool")},
            "cups": {"server": cupsd.server, "serverbin": str(cupsd.serverbin)},
            "http": {"listen": f"127.0.0.1:{free_port()}"},
        },
        {},
    )
    runner = web.AppRunner(create_app(config, workers=False, intake=False))
    await runner.setup()  # enters the cleanup contexts: database, spool, targets
    return runner


async def _submit(app: web.Application, queues: list[str], pdf: Path) -> dict[str, list[int]]:
    """JOBS real jobs, round robin over the queues: {target uri: [cupsd job ids]}."""
    pool = app[TARGETS]
    limit = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    jobs: dict[str, list[int]] = {f"cups://{q}": [] for q in queues}

    async def one(number: int) -> None:
        uri = f"cups://{queues[number % len(queues)]}"
        request = PrintRequest(
            path=pdf,
            document_format="application/pdf",
            job_name=f"tracker-bench-{number}",
            requesting_user="bench",
        )
        async with limit:
            submitted = await pool.get(uri).submit(request)
        jobs[uri].append(submitted.job_id)

    await asyncio.gather(*(one(n) for n in range(JOBS)))
    return jobs


async def _record(app: web.Application, jobs: dict[str, list[int]]) -> None:
    """Four proxy printers and one dispatched print-out per job."""
    now = utcnow()
    async with app[SESSIONS]() as session, session.begin():
        for number, (uri, job_ids) in enumerate(jobs.items(), start=1):
            printer = await printers.add_printer(
                session, f"pp-trk-{number}", target=uri, mode="direct"
            )
            await add_print_outs(
                session,
                printer,
                [
                    (
                        {"cups_job_id": job_id, "title": f"tracker-bench-{job_id}", "size": 1},
                        {"target_job_id": job_id, "dispatched_at": now},
                    )
                    for job_id in job_ids
                ],
            )


async def _measure(app: web.Application, jobs: dict[str, list[int]]) -> list[str]:
    pool = app[TARGETS]
    async with app[SESSIONS]() as session:
        flights = await in_flight(session)
    tracked = sum(len(j) for j in flights.values())

    durations: list[float] = []
    before = pool.requests_made()
    for _ in range(TICKS):
        start = time.perf_counter()
        await track_tick(app)
        durations.append(time.perf_counter() - start)
    requests = pool.requests_made() - before

    # What one batched poll sees (outside the counted ticks).
    start = time.perf_counter()
    seen = {uri: len(await pool.get(uri).poll(ids)) for uri, ids in jobs.items()}
    polls_alone = time.perf_counter() - start

    # The naive baseline: one request per job, through the same targets.
    before = pool.requests_made()
    start = time.perf_counter()
    for uri, ids in jobs.items():
        target = pool.get(uri)
        for job_id in ids:
            await target.poll([job_id])
    naive_seconds = time.perf_counter() - start
    naive_requests = pool.requests_made() - before

    per_tick = requests / (PRINTERS * TICKS)
    naive_per_tick = naive_requests / PRINTERS
    tick = median(durations)
    return [
        f"tracker ({JOBS:,} jobs in flight on {PRINTERS} printers, {TICKS} ticks): "
        f"{per_tick:.2f} IPP requests per printer per tick; naive per-job polling "
        f"{naive_per_tick:.0f} per printer per tick; ratio {per_tick / naive_per_tick:.4f}x "
        f"(goal <= 1 request per printer per tick)",
        f"tracker tick duration: median {tick * 1000:.0f} ms "
        f"(max {max(durations) * 1000:.0f} ms); one naive per-job tick "
        f"{naive_seconds * 1000:.0f} ms; ratio {tick / naive_seconds:.2f}x "
        f"(the {PRINTERS} batched Get-Jobs alone take {polls_alone * 1000:.0f} ms of a tick)",
        f"tracker: {tracked:,} print-outs in flight; one batched Get-Jobs per printer "
        f"answered {', '.join(f'{n}/{len(jobs[uri])}' for uri, n in seen.items())} jobs",
    ]


async def _run(root: Path, cupsd: PrivateCupsd, queues: list[str]) -> list[str]:
    pdf = make_pdf(root / "one-page.pdf", 1, title="proxyprint tracker benchmark")
    runner = await _app(root / "service", cupsd)
    try:
        app = runner.app
        jobs = await _submit(app, queues, pdf)
        await _record(app, jobs)
        return await _measure(app, jobs)
    finally:
        await runner.cleanup()


def main() -> None:
    with scratch_dir("ppbench-tracker-") as root, _cupsd() as cupsd:
        queues = _queues(cupsd)
        lines = asyncio.run(_run(root, cupsd, queues))
    for line in lines:
        print(line, flush=True)


if __name__ == "__main__":
    main()
