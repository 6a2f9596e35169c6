"""Cluster intake: jobs/s with 1 and with 2 ``proxyprint serve`` instances on PostgreSQL.

Each run gets a fresh PostgreSQL database (``CREATE DATABASE
pp_bench_cluster_<random>_<N>`` on the server of ``PP_BENCH_PG_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; migrated with ``proxyprint
db upgrade``; dropped after the run) holding one proxy printer in **hold**
mode (nothing is ever dispatched: only the intake is measured) and the user
``bench``.  N instances of ``proxyprint serve`` (default configuration, as
deployed) run as their own processes on that one database, each with its own
intake socket, HTTP port and spool directory (nothing is dispatched here, so
the spool need not be shared; a real cluster shares it, see README).

C client threads (``PP_BENCH_CLUSTER_WORKERS``, default 8) each run our CUPS
backend as cupsd runs it (``cups_backend/proxyprint.py``; a 1-page PDF as the
job file; ``DEVICE_URI=proxyprint:<socket>``), one job after the other; job i
goes to instance i mod N.  After a warm-up of 8 jobs per instance, M jobs
(``PP_BENCH_CLUSTER_JOBS``, default 300) are timed: M divided by the wall time
from the first submission to the last backend's exit.  Every backend must
exit 0, and the database must then hold exactly warm-up + M print-outs.

The baseline is 1 instance, measured in the same run: R rounds
(``PP_BENCH_CLUSTER_ROUNDS``, default 3) of both configurations, the order
alternating, and the ratio of the medians (each round's own ratio is printed
too).  Also printed: p50/p95 of one backend run (the hand-off latency, which
includes the backend's interpreter start), where the CPU went in the timed
windows per job (the services, the PostgreSQL server processes, the backends,
this driver, anything else on the machine) with the throughput that CPU
allows on this machine's cores, and the PostgreSQL transactions per job
(``pg_stat_database``; the intake's own are two, the rest are the worker
loops it wakes).  The clients share the cores with the services: on a small
machine that the 1-instance run already keeps busy, a second instance has no
idle core to use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from billing.enums import PrintStatus
from proxy.devkit.documents import make_pdf

from .harness import (
    ServiceProcess,
    backend_argv,
    backend_env,
    env_int,
    install_backend,
    median,
    percentile,
    scratch_dir,
)

ADMIN_DSN = os.environ.get("PP_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PRINTER = "pp-cluster"
USER = "bench"
# A hold-mode printer is never sent anything until released; the target is never reached.
UNREACHABLE_TARGET = "ipp://127.0.0.1:9/ipp/print"
WARMUP_PER_INSTANCE = 8
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- PostgreSQL: a private database per configuration ---------------------------------


def _asyncpg_url(database: str) -> str:
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


def _admin(sql: str) -> list[Any]:
    """One statement on the admin database, outside a transaction (CREATE DATABASE
    needs that); the first column of its rows."""

    async def go() -> list[Any]:
        engine = create_async_engine(
            _asyncpg_url(ADMIN_DSN.rsplit("/", 1)[1]), isolation_level="AUTOCOMMIT"
        )
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text(sql))
                return list(result.scalars()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(go())


@contextlib.contextmanager
def _database(name: str) -> Iterator[str]:
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield _asyncpg_url(name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _prepare(service: ServiceProcess) -> None:
    """Migrate (``proxyprint db upgrade``), then the hold printer and the user."""
    from billing import accounts
    from proxy import printers

    service.migrate()

    async def work(session: Any) -> None:
        await printers.add_printer(session, PRINTER, target=UNREACHABLE_TARGET, mode="hold")
        await accounts.create_user(session, USER)

    service.session_run(work)


def _print_outs(service: ServiceProcess) -> dict[int, int]:
    """{status: count} of the print-outs in the service's database."""
    counts: dict[int, int] = {}

    async def work(session: Any) -> None:
        rows = await session.execute(text("SELECT status, count(*) FROM print_outs GROUP BY 1"))
        counts.update({int(status): int(n) for status, n in rows})

    service.session_run(work)
    return counts


# --- CPU accounting from /proc ---------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the ")": state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _postgres_pids(database: str) -> list[int]:
    """The server processes of ``database`` and the shared ones (WAL writer, checkpointer...).

    Not every ``postgres`` process: others may be using the server meanwhile.
    """
    query = f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}' OR datname IS NULL"
    return [int(pid) for pid in _admin(query)]


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which user already counts
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class CpuSnapshot:
    services: list[float]
    postgres: dict[int, float]
    children: float  # reaped children of this process: the backends
    driver: float  # this process
    machine: tuple[float, float]

    @classmethod
    def take(
        cls, services: Sequence[ServiceProcess], database: str, also: Iterable[int] = ()
    ) -> CpuSnapshot:
        """Now; ``also``: server processes to read besides the database's current ones."""
        pids = {*_postgres_pids(database), *also}
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            services=[_proc_cpu(s.pid) for s in services],
            postgres={pid: _proc_cpu(pid) for pid in pids},
            children=kids.ru_utime + kids.ru_stime,
            driver=me.ru_utime + me.ru_stime,
            machine=_machine_busy(),
        )


@dataclass
class CpuUse:
    services: list[float]
    postgres: float
    backends: float
    driver: float
    machine_busy: float
    machine_total: float


def _cpu_use(before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
    # A server process that started during the window counts from zero; one that
    # ended is lost (the services keep their pooled connections open).
    postgres = sum(
        max(0.0, cpu - before.postgres.get(pid, 0.0)) for pid, cpu in after.postgres.items()
    )
    return CpuUse(
        services=[b - a for a, b in zip(before.services, after.services, strict=True)],
        postgres=postgres,
        backends=after.children - before.children,
        driver=after.driver - before.driver,
        machine_busy=after.machine[0] - before.machine[0],
        machine_total=after.machine[1] - before.machine[1],
    )


# --- the clients -------------------------------------------------------------------------


@dataclass
class Clients:
    """C worker threads running backends; job i goes to instance i mod N."""

    backend: Path
    pdf: Path
    sockets: list[Path]
    workers: int
    failures: list[str] = field(default_factory=list)

    def run(self, jobs: int, first_job_id: int) -> tuple[float, list[float]]:
        """Hand off ``jobs`` jobs; (wall seconds, per-job backend seconds)."""
        envs = [
            backend_env(f"proxyprint:{socket}", PRINTER, "application/pdf")
            for socket in self.sockets
        ]
        numbers = iter(range(jobs))
        lock = threading.Lock()
        latencies: list[float] = []

        def worker() -> None:
            while True:
                with lock:
                    number = next(numbers, None)
                if number is None:
                    return
                argv = backend_argv(self.backend, first_job_id + number, self.pdf, user=USER)
                start = time.perf_counter()
                result = subprocess.run(
                    argv,
                    env=envs[number % len(envs)],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=120,
                    check=False,
                )
                seconds = time.perf_counter() - start
                with lock:
                    latencies.append(seconds)
                    if result.returncode != 0:
                        err = result.stderr.decode("utf-8", "replace")[-500:]
                        self.failures.append(f"job {number}: exit {result.returncode}: {err}")

        threads = [
            threading.Thread(target=worker, name=f"cluster-client-{i}", daemon=True)
            for i in range(self.workers)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start, latencies


# --- one configuration, one round ----------------------------------------------------


@dataclass
class Run:
    instances: int
    jobs: int  # timed
    handed_off: int  # warm-up included
    seconds: float
    latencies: list[float]
    cpu: CpuUse
    print_outs: dict[int, int]
    transactions: int  # PostgreSQL commits + rollbacks from the first start to the last stop
    errors: int

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


def _transactions(database: str) -> int:
    """Commits + rollbacks in ``database`` so far, once no session is connected to it."""
    deadline = time.monotonic() + 10
    while (
        _admin(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'")[0]
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    time.sleep(0.2)  # a session's counters are flushed as it exits
    query = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{}'"
    return int(_admin(query.format(database))[0])


def _run(root: Path, backend: Path, pdf: Path, *, instances: int, jobs: int, workers: int) -> Run:
    name = f"pp_bench_cluster_{uuid.uuid4().hex[:10]}_{instances}"
    with _database(name) as url:
        services = []
        for index in range(instances):
            service = ServiceProcess(root / f"{name}-instance{index}")
            service.db_url = url  # PostgreSQL instead of the harness's SQLite file
            service.write_config()
            services.append(service)
        _prepare(services[0])
        transactions = -_transactions(name)
        warmup = WARMUP_PER_INSTANCE * instances
        clients = Clients(backend, pdf, [s.intake_socket for s in services], workers)
        try:
            for service in services:
                service.start()
            clients.run(warmup, first_job_id=1)
            before = CpuSnapshot.take(services, name)
            seconds, latencies = clients.run(jobs, first_job_id=warmup + 1)
            cpu = _cpu_use(before, CpuSnapshot.take(services, name, also=before.postgres))
        finally:
            for service in services:
                service.stop()
        transactions += _transactions(name)
        if clients.failures:
            shown = "\n".join(clients.failures[:5])
            raise RuntimeError(
                f"cluster: {len(clients.failures)} of {warmup + jobs} backend runs failed "
                f"with {instances} instance(s):\n{shown}"
            )
        print_outs = _print_outs(services[0])
        errors = sum(" ERROR " in line for service in services for line in service.log.splitlines())
        if sum(print_outs.values()) != warmup + jobs:
            raise RuntimeError(
                f"cluster: {sum(print_outs.values())} print-outs in the database for "
                f"{warmup + jobs} jobs handed off to {instances} instance(s)"
            )
        for service in services:
            shutil.rmtree(service.root, ignore_errors=True)
        return Run(
            instances,
            jobs,
            warmup + jobs,
            seconds,
            latencies,
            cpu,
            print_outs,
            transactions,
            errors,
        )


# --- the benchmark -------------------------------------------------------------------


def _describe(runs: Sequence[Run]) -> str:
    ms = [s * 1000 for run in runs for s in run.latencies]
    rates = ", ".join(f"{run.rate:.1f}" for run in runs)
    return (
        f"{median([run.rate for run in runs]):.1f} jobs/s (rounds: {rates}; hand-off "
        f"p50 {percentile(ms, 50):.0f} ms p95 {percentile(ms, 95):.0f} ms)"
    )


def _cpu_line(runs: Sequence[Run]) -> str:
    """Where the CPU went in the timed windows, per job, over every round."""
    jobs = sum(run.jobs for run in runs)
    seconds = sum(run.seconds for run in runs)
    cores = os.cpu_count() or 1
    serve = sum(sum(run.cpu.services) for run in runs)
    postgres = sum(run.cpu.postgres for run in runs)
    backends = sum(run.cpu.backends for run in runs)
    driver = sum(run.cpu.driver for run in runs)
    busy = sum(run.cpu.machine_busy for run in runs)
    total = sum(run.cpu.machine_total for run in runs)
    other = busy - serve - postgres - backends - driver

    def per_job(cpu_seconds: float) -> str:
        return f"{cpu_seconds / jobs * 1000:.1f}"

    instances = runs[0].instances
    shared = ""
    if other > 0.1 * busy:
        shared = (
            f" (NOTE: {other / busy * 100:.0f}% of the busy CPU was other processes on the "
            "machine: these figures are disturbed)"
        )
    return (
        f"cluster: CPU per job with {instances} instance{'s' if instances > 1 else ''} "
        f"(ms; timed windows, {seconds:.1f} s on {cores} cores, machine "
        f"{busy / total * 100:.0f}% busy): proxyprint serve {per_job(serve)}, PostgreSQL "
        f"{per_job(postgres)}, backends {per_job(backends)}, this driver {per_job(driver)}, "
        f"other processes {per_job(other)}; all of it {per_job(busy)} ms/job = at most "
        f"{jobs / busy * cores:.0f} jobs/s on {cores} cores{shared}"
    )


def _db_line(runs: Sequence[Run]) -> str:
    handed_off = sum(run.handed_off for run in runs)
    counts: dict[int, int] = {}
    for run in runs:
        for status, n in run.print_outs.items():
            counts[status] = counts.get(status, 0) + n
    statuses = ", ".join(f"{n} {PrintStatus(s).label}" for s, n in sorted(counts.items()))
    if set(counts) != {int(PrintStatus.HELD)}:
        statuses += " (expected all held)"
    transactions = sum(run.transactions for run in runs)
    instances = runs[0].instances
    return (
        f"cluster: {instances} instance{'s' if instances > 1 else ''}: {handed_off} jobs handed "
        f"off (warm-up included), {sum(counts.values())} print-outs in the databases "
        f"({statuses}), none lost; {transactions / handed_off:.1f} PostgreSQL transactions "
        f"per job (first start to last stop, idle ticks included); "
        f"{sum(run.errors for run in runs)} ERROR lines in the services' logs"
    )


def main() -> None:
    jobs = env_int("PP_BENCH_CLUSTER_JOBS", 300)
    workers = env_int("PP_BENCH_CLUSTER_WORKERS", 8)
    rounds = env_int("PP_BENCH_CLUSTER_ROUNDS", 3)
    runs: dict[int, list[Run]] = {1: [], 2: []}
    with scratch_dir("ppbench-cluster-") as root:
        pdf = make_pdf(root / "one-page.pdf", 1, title="proxyprint cluster benchmark")
        backend = install_backend(root)
        for round_number in range(rounds):
            # Alternate which configuration goes first, so neither always follows the other.
            order = (1, 2) if round_number % 2 == 0 else (2, 1)
            for instances in order:
                runs[instances].append(
                    _run(root, backend, pdf, instances=instances, jobs=jobs, workers=workers)
                )
    one, two = runs[1], runs[2]
    ratio = median([r.rate for r in two]) / median([r.rate for r in one])
    per_round = ", ".join(f"{b.rate / a.rate:.2f}x" for a, b in zip(one, two, strict=True))
    print(
        f"cluster intake (PostgreSQL, hold-mode printer, {jobs} 1-page PDF jobs per run from "
        f"{workers} client workers, median of {rounds} rounds, {os.cpu_count()} cores): "
        f"2 instances: {_describe(two)} vs 1 instance: {_describe(one)}; ratio {ratio:.2f}x "
        f"(per round {per_round})",
        flush=True,
    )
    for configuration in (one, two):
        print(_cpu_line(configuration), flush=True)
    for configuration in (one, two):
        print(_db_line(configuration), flush=True)


if __name__ == "__main__":
    main()
