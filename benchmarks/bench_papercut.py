"""PaperCut: 1,000 pending print-outs, from "printed" in PaperCut to charged here and there.

The PaperCut simulator (its own event loop in a thread, as a separate server
would be) holds 1,000 jobs in a hold/release queue: one
``tbl_printer_usage_log`` row each (``record_job``, as its CUPS backend writes
them). The service's database has the matching print-outs, inserted directly
as dispatch leaves them: ``pending_external`` with a unique document name and
2 or 3 zero-amount transactions on user and shared accounts that exist in
PaperCut too. Then the real service runs (``ServiceStack``, workers on,
tracker interval 0.2 s). Once its PaperCut monitor has read the print log
with every job held, the jobs are released in the simulator: all at once
(back to back; the default) or, with ``BENCH_PAPERCUT_RELEASE=waves``, 10
every 100 ms. Each release is time-stamped when its commit returns.

Measured per print-out:

* printed -> completed: from the release to the first poll (every 20 ms, a
  plain read-only engine on the service's database) that sees it
  ``completed``;
* printed -> adjusted: from the release to the last of its PaperCut
  adjustments, by the simulator's own ``transaction_date`` (written in the
  transaction that applies it).

Also counted: print-log queries per monitor tick (``printlog.QUERIES`` over
the run; ticks counted by wrapping ``monitor_tick`` and the batched read)
next to the naive one query per pending job per tick; and, timed once before
the service starts, one batched read of the 1,000 names next to 1,000
one-name reads. Exactly once: PaperCut write calls (the simulator's request
counter, every method ``is_write``) = adjustments it holds = outbox rows done
= local transactions charged; the adjustments' sum is minus the local costs
to the cent, in total and per account. Warnings and errors the service logs
are counted and summarised.

The service needs no cupsd here: nothing in this flow talks to CUPS (the
print-outs have no CUPS job id, so the tracker has nothing to poll), and the
stack's config points at a cupsd that is never started: a CUPS call would
fail and show among the logged errors.

The run stops waiting ``BUDGET`` seconds after it began and then reports
what was done by then, marked INCOMPLETE.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from billing import accounts
from billing.db import make_engine, make_sessionmaker, utcnow
from billing.enums import OutboxStatus, PrintStatus
from billing.models import Account, AccountTransaction, OutboxItem, PrintIn, PrintOut
from billing.papercut import printlog
from billing.papercut.client import is_write
from proxy import printers
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.papercut.simdb import papercut_account_name
from proxy.devkit.papercut.simulator import PaperCutSimulator
from proxy.devkit.stack import ServiceStack
from proxy.pipeline import papercut as pc_pipeline

from .harness import LoopThread, median, percentile, scratch_dir

JOBS = 1000
TRACKER_INTERVAL = 0.2
POLL = 0.02
BUDGET = 82.0  # seconds from the start of the benchmark to giving up waiting
TOKEN = "bench-token"
SERVER = "papercut"
QUEUE = "pc-hold"
PRINTER = "pp-papercut"
PAGE_COST = Decimal("0.15")
USERS = [f"u{n:02d}" for n in range(20)]
SHARED = ["ProjA", "ProjB", "ProjC", "Research/Lab"]
MARK = "[pp:"
SEED = 20240601
_PRINT_OUT = re.compile(r"print-out (\d+):")


@dataclass(frozen=True)
class Mode:
    label: str
    wave: int  # jobs released back to back
    gap: float  # seconds from one wave's start to the next


MODES = {
    "burst": Mode("released all at once", JOBS, 0.0),
    "waves": Mode("released 10 every 100 ms", 10, 0.1),
}


@dataclass(frozen=True)
class Job:
    name: str
    user: str
    pages: int
    copies: int
    accounts: list[tuple[str, str, int]]  # (account type, path, weight)


def _jobs(rng: random.Random) -> list[Job]:
    jobs = []
    for i in range(JOBS):
        user = USERS[i % len(USERS)]
        other = USERS[(i * 7 + 3) % len(USERS)]
        if other == user:
            other = USERS[(i + 1) % len(USERS)]
        shared = SHARED[i % len(SHARED)]
        if i % 2:  # three transactions: the user, a delegator, a shared account
            parts = [("user", user), ("user", other), ("shared", shared)]
        elif i % 4:
            parts = [("user", user), ("user", other)]
        else:
            parts = [("user", user), ("shared", shared)]
        jobs.append(
            Job(
                name=pc_pipeline.document_name(f"bench report {i}.pdf"),
                user=user,
                pages=rng.randint(1, 6),
                copies=rng.randint(1, 3),
                accounts=[(kind, path, rng.randint(1, 3)) for kind, path in parts],
            )
        )
    return jobs


# --- set-up -------------------------------------------------------------------------------


def _setup_papercut(sim: PaperCutSimulator, jobs: Sequence[Job]) -> None:
    for user in USERS:
        sim.add_user(user, balance=Decimal("100.00"))
    for path in SHARED:
        sim.add_shared_account(path)
    sim.add_printer(SERVER, QUEUE, cost_mono=PAGE_COST, hold_release=True)
    for job in jobs:
        sim.record_job(
            job.name,
            user=job.user,
            printer=QUEUE,
            server=SERVER,
            pages=job.pages,
            copies=job.copies,
        )
    held = {row.document_name for row in sim.held_jobs()}
    if held != {job.name for job in jobs}:
        raise RuntimeError(f"the simulator holds {len(held)} of {len(jobs)} jobs")


async def _setup_service(db_url: str, jobs: Sequence[Job]) -> None:
    """Users, shared accounts, a PaperCut printer and the pending print-outs."""
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            for user in USERS:
                await accounts.create_user(session, user)
            for path in SHARED:
                await accounts.create_shared_account(session, path)
            printer = await printers.add_printer(
                session, PRINTER, target=f"cups://{QUEUE}", mode="direct", papercut=True
            )
            ids = {(a.type, a.path): a.id for a in (await session.scalars(select(Account))).all()}
            now = utcnow()
            print_ins = [
                PrintIn(
                    printer_id=printer.id,
                    delegate=job.user,
                    title=job.name.partition(".proxyprint.")[0],
                    sha256="0" * 64,
                    size=1,
                    pages=job.pages,
                    copies_requested=job.copies,
                )
                for job in jobs
            ]
            session.add_all(print_ins)
            await session.flush()
            print_outs = [
                PrintOut(
                    print_in_id=print_in.id,
                    printer_id=printer.id,
                    mode="direct",
                    target=f"cups://{QUEUE}",
                    papercut=True,
                    status=int(PrintStatus.PENDING_EXTERNAL),
                    delegate=job.user,
                    title=print_in.title,
                    pages=job.pages,
                    copies=job.copies,
                    currency="EUR",
                    document_name=job.name,
                    dispatched_at=now,
                )
                for print_in, job in zip(print_ins, jobs, strict=True)
            ]
            session.add_all(print_outs)
            await session.flush()
            session.add_all(
                AccountTransaction(
                    print_out_id=po.id,
                    account_id=ids[kind, path],
                    weight=weight,
                    amount=Decimal(0),
                    status=int(PrintStatus.PENDING_EXTERNAL),
                    idempotency_key=f"po:{po.id}:acct:{ids[kind, path]}",
                )
                for po, job in zip(print_outs, jobs, strict=True)
                for kind, path, weight in job.accounts
            )
    finally:
        await engine.dispose()


async def _read_timing(db_url: str, names: Sequence[str]) -> tuple[float, float, int]:
    """One batched print-log read of every name vs one read per name (seconds each)."""
    engine = create_async_engine(db_url)
    try:
        await printlog.fetch(engine, names[:1])  # connect once, outside the timing
        start = time.perf_counter()
        found = await printlog.fetch(engine, names)
        batched = time.perf_counter() - start
        start = time.perf_counter()
        for name in names:
            await printlog.fetch(engine, [name])
        naive = time.perf_counter() - start
    finally:
        await engine.dispose()
    return batched, naive, len(found)


# --- instruments ------------------------------------------------------------------------------


class _Logged(logging.Handler):
    """Counts the warnings and errors logged, by logger, message and exception."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        what = record.getMessage().splitlines()[0][:60]
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            detail = str(exc).splitlines()[0] if str(exc) else ""
            what += f" ({type(exc).__name__}: {detail[:60]})"
        self.counts[f"{record.levelname} {what}"] += 1


@dataclass
class Probe:
    """What the wrapped monitor did."""

    ticks: int = 0
    asked: list[int] = field(default_factory=list)  # names per batched read
    ended: list[int] = field(default_factory=list)  # print-outs ended, per tick that ended any
    looked: asyncio.Event = field(default_factory=asyncio.Event)  # a read with all held


@contextmanager
def _instrumented(probe: Probe) -> Iterator[None]:
    """Count monitor ticks and the names each read asked for (restored after)."""
    real_tick = pc_pipeline.monitor_tick
    real_fetch = printlog.fetch

    async def tick(app: web.Application) -> int:
        probe.ticks += 1
        ended = await real_tick(app)
        if ended:
            probe.ended.append(ended)
        return ended

    async def fetch(
        engine: AsyncEngine, document_names: Sequence[str]
    ) -> dict[str, printlog.PrintLogRow]:
        probe.asked.append(len(document_names))
        rows = await real_fetch(engine, document_names)
        probe.looked.set()
        return rows

    pc_pipeline.monitor_tick = tick
    printlog.fetch = fetch
    try:
        yield
    finally:
        pc_pipeline.monitor_tick = real_tick
        printlog.fetch = real_fetch


async def _release(sim: PaperCutSimulator, names: Sequence[str], mode: Mode) -> dict[str, float]:
    """Release the held jobs (on the simulator's loop); the wall clock of each commit."""
    stamps: dict[str, float] = {}
    start = time.monotonic()
    for number, first in enumerate(range(0, len(names), mode.wave)):
        delay = start + number * mode.gap - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for name in names[first : first + mode.wave]:
            if not sim.release(name):
                raise RuntimeError(f"{name} was not held")
            stamps[name] = time.time()
    return stamps


async def _watch(reader: AsyncEngine, completed: dict[int, float], total: int) -> None:
    """Time-stamp each print-out when a poll first sees it completed."""
    query = select(PrintOut.id).where(PrintOut.status == int(PrintStatus.COMPLETED))
    while len(completed) < total:
        now = time.time()
        async with reader.connect() as conn:
            for (po_id,) in await conn.execute(query):
                completed.setdefault(po_id, now)
        await asyncio.sleep(POLL)


async def _outbox_left(reader: AsyncEngine) -> int:
    async with reader.connect() as conn:
        left = await conn.scalar(
            select(func.count())
            .select_from(OutboxItem)
            .where(
                OutboxItem.kind == pc_pipeline.ADJUST_KIND,
                OutboxItem.status != int(OutboxStatus.DONE),
            )
        )
    return int(left or 0)


@dataclass
class Run:
    released: dict[str, float]  # document name -> wall clock of the release's commit
    release_span: float
    completed: dict[int, float]  # print-out id -> wall clock of the poll that saw it
    ids: dict[int, str]  # print-out id -> document name
    probe: Probe
    fetch_queries: int
    rechecks: int
    logged: Counter[str]
    finished: bool
    wall: float  # service start -> all done (or giving up)


async def _serve(
    root: Path,
    sim: PaperCutSimulator,
    sim_loop: LoopThread,
    jobs: Sequence[Job],
    *,
    mode: Mode,
    deadline: float,
) -> Run:
    # Config only: this flow never talks to CUPS, and this cupsd is never started.
    cupsd = PrivateCupsd()
    cupsd.root = root / "cupsd-not-started"
    extra = {"papercut": {"url": sim.url, "token": TOKEN, "db_url": sim.db_url}}
    stack = ServiceStack(cupsd, root / "service", tracker_interval=TRACKER_INTERVAL, extra=extra)
    await stack.migrate()
    await _setup_service(stack.db_url, jobs)
    names = [job.name for job in jobs]
    reader = create_async_engine(stack.db_url)  # plain: its reads take no write lock
    async with reader.connect() as conn:
        rows = await conn.execute(select(PrintOut.id, PrintOut.document_name))
        ids = {po_id: str(name) for po_id, name in rows}
    logged = _Logged()
    logging.getLogger().addHandler(logged)
    probe = Probe()
    fetches = printlog.QUERIES["fetch"]
    rechecks = printlog.QUERIES["adjustment_applied"]
    completed: dict[int, float] = {}
    released: dict[str, float] = {}
    finished = False
    try:
        with _instrumented(probe):
            started = time.monotonic()
            await stack.start()
            watcher = asyncio.create_task(_watch(reader, completed, len(names)))
            try:
                await asyncio.wait_for(probe.looked.wait(), deadline - time.monotonic())
                future = asyncio.run_coroutine_threadsafe(_release(sim, names, mode), sim_loop.loop)
                released = await asyncio.wrap_future(future)
                while time.monotonic() < deadline:
                    if watcher.done():
                        watcher.result()  # raises what the watcher raised
                        if await _outbox_left(reader) == 0:
                            finished = True
                            break
                    await asyncio.sleep(0.05)
            except TimeoutError:
                pass
            finally:
                wall = time.monotonic() - started
                watcher.cancel()
                await stack.stop()
    finally:
        logging.getLogger().removeHandler(logged)
        await reader.dispose()
    return Run(
        released=released,
        release_span=max(released.values()) - min(released.values()) if released else 0.0,
        completed=completed,
        ids=ids,
        probe=probe,
        fetch_queries=printlog.QUERIES["fetch"] - fetches,
        rechecks=printlog.QUERIES["adjustment_applied"] - rechecks,
        logged=logged.counts,
        finished=finished,
        wall=wall,
    )


# --- checks and figures -----------------------------------------------------------------------


@dataclass
class Local:
    costs: dict[int, Decimal]  # completed print-out id -> cost
    by_account: dict[str, Decimal]  # PaperCut account name -> charged here
    charged: Counter[int]  # print-out id -> transactions with an amount
    outbox_done: int


async def _local(db_url: str) -> Local:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(PrintOut.id, PrintOut.cost).where(
                    PrintOut.status == int(PrintStatus.COMPLETED)
                )
            )
            costs: dict[int, Decimal] = {}
            for po_id, cost in rows:
                if cost is None:
                    raise RuntimeError(f"print-out {po_id} is completed without a cost")
                costs[po_id] = cost
            by_account: dict[str, Decimal] = defaultdict(Decimal)
            charged: Counter[int] = Counter()
            txns = await conn.execute(
                select(
                    AccountTransaction.print_out_id, AccountTransaction.amount, Account.path
                ).join(Account, Account.id == AccountTransaction.account_id)
            )
            for po_id, amount, path in txns:
                if Decimal(amount):
                    by_account[papercut_account_name(path)] += Decimal(amount)
                    charged[po_id] += 1
            done = await conn.scalar(
                select(func.count())
                .select_from(OutboxItem)
                .where(
                    OutboxItem.kind == pc_pipeline.ADJUST_KIND,
                    OutboxItem.status == int(OutboxStatus.DONE),
                )
            )
    finally:
        await engine.dispose()
    return Local(costs, dict(by_account), charged, int(done or 0))


def _wall(iso: str) -> float:
    when = dt.datetime.fromisoformat(iso)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return f"median {median(values):.2f} s p95 {percentile(values, 95):.2f} s"


def _report(mode: Mode, run: Run, local: Local, sim: PaperCutSimulator) -> list[str]:
    adjustments = sim.adjustments(comment_contains=MARK)
    applied_at: dict[int, float] = {}
    per_po: Counter[int] = Counter()
    by_account: dict[str, Decimal] = defaultdict(Decimal)
    for adj in adjustments:
        match = _PRINT_OUT.search(adj.comment)
        if match is None:
            raise RuntimeError(f"an adjustment names no print-out: {adj.comment!r}")
        po_id = int(match.group(1))
        per_po[po_id] += 1
        applied_at[po_id] = max(applied_at.get(po_id, 0.0), _wall(adj.transaction_date))
        by_account[adj.account_name] += adj.amount
    writes = sum(n for method, n in sim.requests.items() if is_write(method))
    expected = sum(local.charged.values())

    def since_release(stamps: dict[int, float], ids: Sequence[int]) -> list[float]:
        return [stamps[i] - run.released[run.ids[i]] for i in ids]

    to_completed = since_release(run.completed, list(run.completed))
    # A print-out is adjusted when all of its charged transactions are in PaperCut.
    adjusted = [i for i, n in per_po.items() if n == local.charged.get(i)]
    to_adjusted = since_release(applied_at, adjusted)
    total_adjusted = sum((a.amount for a in adjustments), Decimal(0))
    total_cost = sum(local.costs.values(), Decimal(0))
    agree = sum(1 for name, amount in local.by_account.items() if by_account.get(name) == -amount)
    sums_ok = total_adjusted == -total_cost and agree == len(local.by_account) == len(by_account)
    once = len(adjustments) == writes == local.outbox_done and per_po == local.charged
    if not run.finished:
        money = "sums not compared (unfinished)"
    elif sums_ok:
        money = "sums agree to the cent"
    else:
        money = f"SUMS DIFFER: adjustments {total_adjusted} vs costs -{total_cost}"
    reads = len(run.probe.asked)
    per_tick = run.fetch_queries / reads if reads else 0.0
    naive = sum(run.probe.asked) / reads if reads else 0.0
    status = "" if run.finished else f"INCOMPLETE after {run.wall:.0f} s: "
    head = (
        f"papercut ({JOBS:,} pending, {mode.label}): {status}printed->completed "
        f"{_seconds(to_completed)}; printed->adjusted {_seconds(to_adjusted)}; "
        f"print-log queries per tick {per_tick:.1f} (naive {naive:,.0f}: ratio "
        f"{per_tick / naive if naive else 0:.3f}x); adjustments {len(adjustments):,} "
        f"{'=' if len(adjustments) == writes else '!='} write calls {writes:,}; {money}"
    )
    logged = sum(run.logged.values())
    top = "; ".join(f"{n}x {what}" for what, n in run.logged.most_common(3))
    return [
        head,
        f"papercut ({mode.label}) progress: {len(run.completed):,}/{JOBS:,} completed, "
        f"{len(adjusted):,}/{JOBS:,} fully adjusted ({len(adjustments):,}/{expected:,} "
        f"adjustments), {run.wall:.1f} s after the service started; releases took "
        f"{run.release_span:.2f} s; max printed->completed "
        f"{max(to_completed, default=0):.2f} s, max printed->adjusted "
        f"{max(to_adjusted, default=0):.2f} s (polled every {POLL * 1000:.0f} ms)",
        f"papercut ({mode.label}) monitor: {run.probe.ticks} ticks (interval "
        f"{TRACKER_INTERVAL} s), {reads} with pending jobs, {run.fetch_queries} print-log "
        f"queries; names asked per read {', '.join(f'{n:,}' for n in run.probe.asked[:6])}"
        f"{', ...' if reads > 6 else ''}; print-outs ended per tick "
        f"{', '.join(f'{n:,}' for n in run.probe.ended) or 'none'}",
        f"papercut ({mode.label}) money: {len(adjustments):,} adjustments on "
        f"{len(by_account)} PaperCut accounts sum to {total_adjusted}, local costs "
        f"{total_cost}; {agree}/{len(local.by_account)} accounts agree; exactly once: "
        f"{'yes' if once else 'NO'} (write calls {writes:,}, outbox rows done "
        f"{local.outbox_done:,}, charged transactions {expected:,}, re-checks after an "
        f"uncertain attempt {run.rechecks})",
        f"papercut ({mode.label}) service log: {logged} warnings/errors"
        + (f": {top}" if top else ""),
    ]


def _scenario(root: Path, mode: Mode, deadline: float) -> list[str]:
    jobs = _jobs(random.Random(SEED))
    names = [job.name for job in jobs]
    sim_loop = LoopThread()
    sim = PaperCutSimulator(root / "papercut.db", token=TOKEN)
    try:
        _setup_papercut(sim, jobs)
        sim_loop.run(sim.start())
        batched, naive, found = asyncio.run(_read_timing(sim.db_url, names))
        run = asyncio.run(_serve(root, sim, sim_loop, jobs, mode=mode, deadline=deadline))
        local = asyncio.run(_local(f"sqlite+aiosqlite:///{root / 'service' / 'proxyprint.db'}"))
        lines = _report(mode, run, local, sim)
    finally:
        sim_loop.run(sim.stop())
        sim.close()
        sim_loop.close()
    lines.append(
        f"papercut print-log read of {JOBS:,} held names ({found:,} rows): one batched read "
        f"{batched * 1000:.1f} ms vs {JOBS:,} one-name reads {naive * 1000:.0f} ms "
        f"(ratio {batched / naive:.3f}x)"
    )
    return lines


def main() -> None:
    deadline = time.monotonic() + BUDGET
    key = os.environ.get("BENCH_PAPERCUT_RELEASE", "burst").strip() or "burst"
    if key not in MODES:
        raise SystemExit(f"BENCH_PAPERCUT_RELEASE={key!r}: use {' or '.join(MODES)}")
    with scratch_dir(f"ppbench-papercut-{key}-") as root:
        lines = _scenario(root, MODES[key], deadline)
    for line in lines:
        print(line, flush=True)


if __name__ == "__main__":
    main()
