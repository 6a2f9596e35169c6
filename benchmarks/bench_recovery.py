"""Recovery after SIGKILL: how long until every claimed print-out is dispatched.

Dispatch claims pending print-outs in batches (``claim_due``: ``claimed_by`` =
the instance's name, ``claim_until`` = now + 60 s) and sends them one after
the other.  When an instance is killed, its claims stay behind:

- **restarted instance**: an instance with the same ``[instance] name``
  takes the name's advisory lock and voids its dead predecessor's claims at
  start-up (``_settle_name``), so it sends the rest at once;
- **surviving peer**: another instance (another name) only gets the work
  once the claims expire, up to a minute after they were taken.

Everything runs against a fake IPP printer in this process (aiohttp on
127.0.0.1, ``/ipp/print``): Print-Job reads the document, creates the job
(it exists from then on, as at a real printer), waits a configurable delay
and answers ``successful-ok`` with job-id/job-uri/job-state; Get-Jobs
answers every job it created, completed, with the ``job-uuid`` and
``job-name`` it was sent (the dispatcher looks an interrupted Print-Job up
with ``Target.find``: for an ipp:// printer by the `` (pp-<hex>)`` marker in
the job-name, since printers replace the job-uuid; cupsd keeps it).  N
pending direct-mode print-outs (``PP_BENCH_RECOVERY_JOBS``, default 60; rows
written straight into the database, ``next_action_at`` = now, one small PDF
as their spool file) go to that printer from ``proxyprint serve`` processes
(default configuration, dispatch idle interval 2 s) on PostgreSQL: a fresh
database per run (``CREATE DATABASE pp_bench_recovery_<random>_<run>`` from
a template migrated with
``proxyprint db upgrade``, on the server of ``PP_BENCH_PG_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; all dropped at the end).

Three kinds of run, in one go: R rounds of the first two
(``PP_BENCH_RECOVERY_ROUNDS``, default 3; which goes first alternates; medians
reported), the third once (it lasts a minute):

1. baseline: one instance, the printer answering at once; from spawning
   ``proxyprint serve`` to the last print-out dispatched (the service's own
   ``dispatched_at``), so start-up counts, as it does after a restart;
2. restart: the printer takes 0.5 s per Print-Job, so the instance holds
   claims; once some are dispatched and a Print-Job is in flight (the printer
   has created that job, the service has not recorded it), SIGKILL, the delay
   goes to 0 and an instance with the same name is spawned at once; from the
   kill to the last print-out dispatched;
3. survivor: instances ``a`` and ``b`` (two names) share the work, 0.5 s per
   Print-Job; ``a`` is killed while it holds claims and has a Print-Job in
   flight, the delay goes to 0, ``a`` is not restarted; from the kill until
   ``b`` has dispatched everything (``b`` has nothing else to do).

Also checked in every run: each print-out reached the printer exactly once
(Print-Job requests counted per job-name, which carries the print-out's
title, and per ``job-uuid``), the interrupted one was found there rather than
sent again, and every print-out is dispatched.  A duplicate is printed in
detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from billing.db import make_engine, make_sessionmaker, utcnow
from billing.models import Event, PrintOut
from proxy import printers
from proxy.devkit.documents import make_pdf
from proxy.targets import ipp_codec as codec
from proxy.targets.ipp_codec import Attribute, GroupTag, Operation, StatusCode

from .harness import (
    LoopThread,
    ServiceProcess,
    add_print_outs,
    env_int,
    median,
    scratch_dir,
    wait_until,
)

ADMIN_DSN = os.environ.get("PP_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DEFAULT_JOBS = 60
DEFAULT_ROUNDS = 3  # baseline and restart; the survivor run (a minute) once
SLOW_SECS = 0.5  # per Print-Job while claims are to be held
RESTART_KILL_AFTER = 5  # restart run: killed once this many are dispatched
RUN_TIMEOUT = 30.0  # baseline / restart: all dispatched within
SURVIVOR_TIMEOUT = 100.0  # a claim lives 60 s (dispatch.CLAIM_FOR)
POLL = 0.02
FOUND_NOTE = "found there after an interrupted attempt"


# --- the fake printer ----------------------------------------------------------------


@dataclass
class PrinterJob:
    """A job the fake printer created (on receiving a whole Print-Job)."""

    job_id: int
    job_uuid: str | None
    job_name: str
    job_uri: str
    received: float  # time.time()


@dataclass
class FakePrinter:
    """Print-Job after ``delay`` seconds; Get-Jobs: every job created, completed."""

    delay: float = 0.0
    jobs: list[PrinterJob] = field(default_factory=list)
    # job-names created, not yet answered; replaced, never changed in place (read
    # from the benchmark's thread while the printer's loop thread works)
    in_flight: frozenset[str] = frozenset()
    get_jobs: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self, delay: float) -> None:
        self.delay = delay
        self.jobs = []
        self.in_flight = frozenset()
        self.get_jobs = 0

    async def handle(self, http: web.Request) -> web.Response:
        message = codec.decode(await http.read())  # the document follows the header
        if message.code == Operation.PRINT_JOB:
            answer = await self._print_job(message)
        elif message.code == Operation.GET_JOBS:
            self.get_jobs += 1
            answer = self._get_jobs(message)
        else:
            answer = codec.Message(StatusCode.SUCCESSFUL_OK, message.request_id, [_op_group()])
        return web.Response(body=answer.encode(), content_type="application/ipp")

    async def _print_job(self, req: codec.Message) -> codec.Message:
        attrs = req.operation_attributes
        job_uuid = attrs.first("job-uuid")
        name = attrs.first("job-name")
        uri = attrs.first("printer-uri")
        printer_uri = uri if isinstance(uri, str) else "ipp://127.0.0.1/ipp/print"
        job_id = next(self._ids)
        job = PrinterJob(
            job_id=job_id,
            job_uuid=job_uuid if isinstance(job_uuid, str) else None,
            job_name=name if isinstance(name, str) else "",
            job_uri=f"{printer_uri}/jobs/{job_id}",
            received=time.time(),
        )
        self.jobs.append(job)  # the job exists now, answered or not
        self.in_flight = self.in_flight | {job.job_name}
        try:
            if self.delay > 0:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight = self.in_flight - {job.job_name}
        group = (
            codec.Group(GroupTag.JOB)
            .add(Attribute.integer("job-id", job.job_id))
            .add(Attribute.uri("job-uri", job.job_uri))
            .add(Attribute.enum("job-state", 3))
            .add(Attribute.keyword("job-state-reasons", "none"))
        )
        return codec.Message(StatusCode.SUCCESSFUL_OK, req.request_id, [_op_group(), group])

    def _get_jobs(self, req: codec.Message) -> codec.Message:
        groups = [_op_group()]
        for job in self.jobs:
            group = (
                codec.Group(GroupTag.JOB)
                .add(Attribute.integer("job-id", job.job_id))
                .add(Attribute.uri("job-uri", job.job_uri))
                .add(Attribute.name_("job-name", job.job_name))
                .add(Attribute.enum("job-state", 9))
                .add(Attribute.keyword("job-state-reasons", "job-completed-successfully"))
            )
            if job.job_uuid is not None:
                group.add(Attribute.uri("job-uuid", job.job_uuid))
            groups.append(group)
        return codec.Message(StatusCode.SUCCESSFUL_OK, req.request_id, groups)


def _op_group() -> codec.Group:
    return (
        codec.Group(GroupTag.OPERATION)
        .add(Attribute.charset("attributes-charset", "utf-8"))
        .add(Attribute.language("attributes-natural-language", "en"))
    )


async def _serve_printer(printer: FakePrinter) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/ipp/print", printer.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port


# --- PostgreSQL ---------------------------------------------------------------------------


def _asyncpg_url(database: str) -> str:
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


async def _admin(sql: str) -> None:
    """One statement outside a transaction on the admin database."""
    engine = create_async_engine(
        _asyncpg_url(ADMIN_DSN.rsplit("/", 1)[1]), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def _seed(url: str, tag: str, target: str, document: Path, jobs: int) -> None:
    """A direct-mode printer sending to ``target`` and ``jobs`` pending print-outs, due now."""
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            printer = await printers.add_printer(
                session, f"pp-recovery-{tag}", target=target, mode="direct"
            )
            size, now = document.stat().st_size, utcnow()
            await add_print_outs(
                session,
                printer,
                [
                    (
                        {
                            "job_uuid": f"urn:uuid:{uuid.uuid4()}",
                            "title": _title(tag, number),
                            "spool_path": str(document),
                            "size": size,
                        },
                        {"next_action_at": now},
                    )
                    for number in range(jobs)
                ],
            )
    finally:
        await engine.dispose()


def _title(tag: str, number: int) -> str:
    return f"recovery-{tag}-{number:03d}"


@dataclass
class Progress:
    dispatched: int
    last_dispatched_at: dt.datetime | None
    claimed: dict[str, int]  # owner -> undispatched print-outs it claims


async def _progress(engine: AsyncEngine) -> Progress:
    async with make_sessionmaker(engine)() as session:
        dispatched, last = (
            await session.execute(
                select(func.count(PrintOut.id), func.max(PrintOut.dispatched_at)).where(
                    PrintOut.dispatched_at.is_not(None)
                )
            )
        ).one()
        rows = await session.execute(
            select(PrintOut.claimed_by, func.count(PrintOut.id))
            .where(PrintOut.dispatched_at.is_(None), PrintOut.claimed_by.is_not(None))
            .group_by(PrintOut.claimed_by)
        )
        claimed = {str(owner): int(n) for owner, n in rows}
    return Progress(int(dispatched), last, claimed)


async def _held_in_flight(engine: AsyncEngine, owner: str, names: frozenset[str]) -> int:
    """How many of the Print-Jobs in flight (by job-name) are for ``owner``'s claims."""
    titles = {_title_of(name) for name in names}
    if not titles:
        return 0
    async with make_sessionmaker(engine)() as session:
        found = await session.scalar(
            select(func.count(PrintOut.id)).where(
                PrintOut.title.in_(titles),
                PrintOut.claimed_by == owner,
                PrintOut.dispatched_at.is_(None),
            )
        )
    return int(found or 0)


async def _claims_expire(engine: AsyncEngine, owner: str) -> dt.datetime | None:
    async with make_sessionmaker(engine)() as session:
        return await session.scalar(
            select(func.max(PrintOut.claim_until)).where(
                PrintOut.claimed_by == owner, PrintOut.dispatched_at.is_(None)
            )
        )


@dataclass
class Outcome:
    print_outs: dict[str, tuple[int, str | None, int | None]]  # title -> (id, uuid, job id)
    found_events: int  # dispatched events noting "found there, not sent again"
    dispatched_events: Counter[int]  # print-out id -> "dispatched" events


async def _outcome(engine: AsyncEngine) -> Outcome:
    async with make_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(PrintOut.title, PrintOut.id, PrintOut.dispatch_uuid, PrintOut.target_job_id)
        )
        print_outs = {str(t): (int(i), u, j) for t, i, u, j in rows}
        events = list(
            await session.execute(
                select(Event.subject_id, Event.message).where(
                    Event.subject_type == "print_out", Event.reason == "dispatched"
                )
            )
        )
    found = sum(1 for _, message in events if FOUND_NOTE in (message or ""))
    per_print_out = Counter(int(subject) for subject, _ in events)
    return Outcome(print_outs, found, per_print_out)


def _released(log: str) -> int | None:
    """N of the "released N claim(s) left by the previous run" log line, if any."""
    for line in log.splitlines():
        if "claim(s) left by the previous run" in line:
            words = line.split("released", 1)[-1].split()
            if words and words[0].isdigit():
                return int(words[0])
    return None


def _title_of(job_name: str) -> str:
    """The print-out's title in the job-name (ipp:// targets append `` (pp-<hex>)``)."""
    return job_name.split(" (pp-", 1)[0]


# --- one run --------------------------------------------------------------------------------


class Service(ServiceProcess):
    """``proxyprint serve`` on the run's PostgreSQL database, with an instance name."""

    def __init__(self, root: Path, db_url: str, name: str) -> None:
        super().__init__(root)
        self.db_url = db_url
        self.name = name

    def write_config(self) -> None:
        super().write_config()
        with self.config_path.open("a") as fh:
            fh.write(f'[instance]\nname = "{self.name}"\n')

    def spawn(self) -> None:
        self.write_config()
        self.start()

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()


@dataclass
class Result:
    seconds: float  # start (spawn or kill) to the last print-out dispatched
    claimed_at_kill: int = 0
    in_flight_at_kill: int = 0
    healthy_after: float = 0.0  # restart: kill to the new instance answering /healthz
    claims_expire_after: float = 0.0  # survivor: kill to the dead peer's last claim_until
    found: int = 0  # print-outs found at the printer after an interruption
    sent: int = 0  # Print-Jobs the printer received
    problems: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, root: Path, loop: LoopThread, jobs: int) -> None:
        self.root = root
        self.loop = loop
        self.jobs = jobs
        self.printer = FakePrinter()
        self.target = ""
        self.document = make_pdf(root / "doc.pdf", 1, title="recovery bench")
        self.prefix = f"pp_bench_recovery_{uuid.uuid4().hex[:10]}"
        self.template = f"{self.prefix}_template"
        self.databases: list[str] = []
        self._runner: web.AppRunner | None = None

    # set-up and tear-down

    def open(self) -> None:
        self._runner, port = self.loop.run(_serve_printer(self.printer))
        self.target = f"ipp://127.0.0.1:{port}/ipp/print"
        self.loop.run(_admin(f'CREATE DATABASE "{self.template}"'))
        self.databases.append(self.template)
        migrator = ServiceProcess(self.root / "migrate")
        migrator.db_url = _asyncpg_url(self.template)
        migrator.migrate()

    def close(self) -> None:
        for name in reversed(self.databases):
            with contextlib.suppress(Exception):
                self.loop.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if self._runner is not None:
            with contextlib.suppress(Exception):
                self.loop.run(self._runner.cleanup())

    @contextlib.contextmanager
    def database(self, tag: str, delay: float) -> Iterator[AsyncEngine]:
        """A fresh copy of the migrated template with the N print-outs; the printer reset."""
        name = f"{self.prefix}_{tag}"
        self.loop.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.databases.append(name)
        url = _asyncpg_url(name)
        self.loop.run(_seed(url, tag, self.target, self.document, self.jobs))
        self.printer.reset(delay)
        engine = make_engine(url)
        try:
            yield engine
        finally:
            self.loop.run(engine.dispose())

    def service(self, engine: AsyncEngine, directory: str, name: str) -> Service:
        return Service(self.root / directory, engine.url.render_as_string(False), name)

    # waiting and checking

    def progress(self, engine: AsyncEngine) -> Progress:
        return self.loop.run(_progress(engine))

    def wait_all(self, engine: AsyncEngine, what: str, timeout: float) -> dt.datetime:
        """Until all N are dispatched; the last ``dispatched_at``."""
        last: list[dt.datetime] = []

        def done() -> bool:
            progress = self.progress(engine)
            if progress.dispatched < self.jobs or progress.last_dispatched_at is None:
                return False
            last.append(progress.last_dispatched_at)
            return True

        wait_until(done, what, timeout, interval=POLL)
        return last[0]

    def wait_kill_point(
        self, engine: AsyncEngine, owner: str, ready: Callable[[Progress], bool]
    ) -> None:
        """Until ``ready(progress)`` and a Print-Job for ``owner``'s claims is in flight."""

        def check() -> bool:
            if not ready(self.progress(engine)):
                return False
            names = self.printer.in_flight
            return self.loop.run(_held_in_flight(engine, owner, names)) > 0

        wait_until(check, f"{owner} holding claims with a Print-Job in flight", RUN_TIMEOUT, POLL)

    def check(self, engine: AsyncEngine, result: Result) -> None:
        """Exactly one Print-Job per print-out, each dispatched once and recorded."""
        outcome = self.loop.run(_outcome(engine))
        result.found = outcome.found_events
        result.sent = len(self.printer.jobs)
        by_title = Counter(_title_of(job.job_name) for job in self.printer.jobs)
        by_uuid = Counter(job.job_uuid for job in self.printer.jobs)
        for title, sent in sorted(by_title.items()):
            if sent > 1:
                jobs = [j for j in self.printer.jobs if _title_of(j.job_name) == title]
                po = outcome.print_outs.get(title)
                detail = ", ".join(f"job {j.job_id} {j.job_uuid} at {j.received:.3f}" for j in jobs)
                result.problems.append(
                    f"DUPLICATE: {title} (print-out {po[0] if po else '?'}, recorded job "
                    f"{po[2] if po else '?'}) reached the printer {sent} times: {detail}"
                )
        for job_uuid, sent in by_uuid.items():
            if job_uuid is not None and sent > 1:
                result.problems.append(f"DUPLICATE job-uuid {job_uuid}: {sent} Print-Jobs")
        missing = sorted(set(outcome.print_outs) - set(by_title))
        if missing:
            result.problems.append(f"never sent: {', '.join(missing)}")
        for title, (po_id, dispatch_uuid, job_id) in sorted(outcome.print_outs.items()):
            sent_jobs = [j for j in self.printer.jobs if _title_of(j.job_name) == title]
            if job_id not in {j.job_id for j in sent_jobs}:
                result.problems.append(
                    f"{title} (print-out {po_id}) recorded job {job_id}, not one the printer "
                    f"made for it ({[j.job_id for j in sent_jobs]})"
                )
            elif dispatch_uuid is not None and f"urn:uuid:{dispatch_uuid}" not in {
                j.job_uuid for j in sent_jobs
            }:
                result.problems.append(f"{title}: dispatch_uuid {dispatch_uuid} never sent")
        twice = {po: n for po, n in outcome.dispatched_events.items() if n > 1}
        if twice:
            result.problems.append(f"print-outs recorded as dispatched more than once: {twice}")

    # the three runs

    def baseline(self, tag: str) -> Result:
        with self.database(tag, delay=0.0) as engine:
            service = self.service(engine, tag, "bench-recovery-solo")
            try:
                started = time.time()
                service.spawn()
                healthy = time.time() - started
                last = self.wait_all(engine, f"{tag}: all dispatched", RUN_TIMEOUT)
            finally:
                service.stop()
            result = Result(last.timestamp() - started, healthy_after=healthy)
            self.check(engine, result)
            return result

    def restart(self, tag: str) -> Result:
        name = "bench-recovery-restart"
        with self.database(tag, delay=SLOW_SECS) as engine:
            first = self.service(engine, f"{tag}-killed", name)
            second = self.service(engine, f"{tag}-restarted", name)
            try:
                first.spawn()
                self.wait_kill_point(engine, name, lambda p: p.dispatched >= RESTART_KILL_AFTER)
                killed = time.time()
                first.kill()
                self.printer.delay = 0.0
                in_flight = len(self.printer.in_flight)  # all its own: the only instance
                claimed = self.progress(engine).claimed.get(name, 0)  # a few ms
                second.write_config()
                second.start()
                healthy = time.time() - killed
                last = self.wait_all(engine, f"{tag}: all dispatched", RUN_TIMEOUT)
            finally:
                first.stop()
                second.stop()
            result = Result(
                last.timestamp() - killed,
                claimed_at_kill=claimed,
                in_flight_at_kill=in_flight,
                healthy_after=healthy,
            )
            released = _released(second.log)
            if released is None:
                result.problems.append(
                    "the restarted instance did not void its predecessor's claims "
                    f"(log: {second.log[-1500:]!r})"
                )
            elif released < claimed:
                result.problems.append(f"{claimed} claimed at the kill, {released} released")
            self.check(engine, result)
            return result

    def survivor(self, tag: str) -> Result:
        with self.database(tag, delay=SLOW_SECS) as engine:
            peer_a = self.service(engine, "survivor-a", "bench-recovery-a")
            peer_b = self.service(engine, "survivor-b", "bench-recovery-b")
            try:
                peer_a.spawn()
                peer_b.spawn()
                self.wait_kill_point(
                    engine,
                    peer_a.name,
                    lambda p: (
                        p.claimed.get(peer_a.name, 0) > 0 and p.claimed.get(peer_b.name, 0) > 0
                    ),
                )
                killed = time.time()
                peer_a.kill()
                self.printer.delay = 0.0
                names = self.printer.in_flight
                progress = self.progress(engine)
                in_flight = self.loop.run(_held_in_flight(engine, peer_a.name, names))
                expire = self.loop.run(_claims_expire(engine, peer_a.name))
                last = self.wait_all(engine, "survivor: all dispatched", SURVIVOR_TIMEOUT)
            finally:
                peer_a.stop()
                peer_b.stop()
            result = Result(
                last.timestamp() - killed,
                claimed_at_kill=progress.claimed.get(peer_a.name, 0),
                in_flight_at_kill=in_flight,
                claims_expire_after=expire.timestamp() - killed if expire else float("nan"),
            )
            self.check(engine, result)
            return result


def _median(results: list[Result], value: Callable[[Result], float]) -> float:
    return median([value(r) for r in results])


def _report(jobs: int, bases: list[Result], restarts: list[Result], survivor: Result) -> list[str]:
    base = _median(bases, lambda r: r.seconds)
    restart = _median(restarts, lambda r: r.seconds)
    counts = sorted({r.claimed_at_kill for r in restarts})
    claimed = "/".join(str(r.claimed_at_kill) for r in restarts) if len(counts) > 1 else counts[0]
    rounds = len(bases)
    runs = [*bases, *restarts, survivor]
    problems = [
        f"  {label}: {problem}"
        for label, result in (
            *((f"baseline {n + 1}", r) for n, r in enumerate(bases)),
            *((f"restart {n + 1}", r) for n, r in enumerate(restarts)),
            ("survivor", survivor),
        )
        for problem in result.problems
    ]
    return [
        f"recovery after SIGKILL (N={jobs}, {claimed} / {survivor.claimed_at_kill} claimed): "
        f"restarted instance {restart:.1f} s, surviving peer {survivor.seconds:.1f} s; "
        f"baseline dispatch of all {jobs} undisturbed {base:.1f} s; "
        f"ratios {restart / base:.1f}x / {survivor.seconds / base:.1f}x",
        f"  (medians of {rounds} rounds for restart and baseline, each from spawning "
        f"proxyprint serve (start-up to /healthz {_median(bases, lambda r: r.healthy_after):.1f}"
        f" s) or from the kill (restarted instance healthy "
        f"{_median(restarts, lambda r: r.healthy_after):.1f} s after it): rounds "
        + ", ".join(f"{r.seconds:.1f}" for r in restarts)
        + " vs "
        + ", ".join(f"{r.seconds:.1f}" for r in bases)
        + " s)",
        f"  (surviving peer: the dead peer's claims expired {survivor.claims_expire_after:.1f} s "
        f"after the kill; Print-Jobs in flight at the kills "
        f"{sum(r.in_flight_at_kill for r in restarts)} / {survivor.in_flight_at_kill}, found at "
        f"the printer and not sent again {sum(r.found for r in restarts)} / {survivor.found}; "
        f"{sum(r.sent for r in runs)} Print-Jobs in {len(runs)} runs of {jobs}: "
        + ("each print-out exactly once)" if not problems else "PROBLEMS:)"),
        *problems,
    ]


def main() -> None:
    jobs = env_int("PP_BENCH_RECOVERY_JOBS", DEFAULT_JOBS)
    rounds = env_int("PP_BENCH_RECOVERY_ROUNDS", DEFAULT_ROUNDS)
    loop = LoopThread()
    bases: list[Result] = []
    restarts: list[Result] = []
    try:
        with scratch_dir("pp-bench-recovery-") as root:
            bench = Bench(root, loop, jobs)
            try:
                bench.open()
                for number in range(1, rounds + 1):
                    # Alternate which goes first (caches, a busy machine's drift).
                    if number % 2:
                        bases.append(bench.baseline(f"baseline{number}"))
                        restarts.append(bench.restart(f"restart{number}"))
                    else:
                        restarts.append(bench.restart(f"restart{number}"))
                        bases.append(bench.baseline(f"baseline{number}"))
                survivor = bench.survivor("survivor")
            finally:
                bench.close()
    finally:
        loop.close()
    for line in _report(jobs, bases, restarts, survivor):
        print(line, flush=True)
