"""500 jobs from ``lp`` to the printer: through the proxy vs a plain CUPS ipp queue.

One private cupsd holds both queues:

- ``pp-lp``: a proxy queue (device ``proxyprint:<intake socket>``, our
  backend), direct mode, target an ippeveprinter; the service runs as its own
  process (``proxyprint serve``, SQLite, default intervals) as deployed;
- ``ipp-lp``: a raw CUPS queue with the ``ipp`` backend straight to another
  ippeveprinter of the same kind, as CUPS sets it up: the backend waits for
  the printer and for each job to finish printing (``waitjob``/``waitprinter``
  left at their defaults), as our backend follows each direct job to its end
  (SPEC §5): both sides wait for the printer, so the queue runs one job at a
  time on each.

Each side gets the same N one-page PDFs submitted the same way (pycups
``printFile`` in a loop, i.e. what ``lp`` sends: one Print-Job each), one side
after the other.  The figure is the wall time from the first submission
until the printer has received every job, from the printer's own files (with
``-k`` ippeveprinter keeps each document; its last write is when the printer
had it whole); the time until CUPS had ended every job is printed as well.

The printers "print" with ``/bin/true`` instead of the devkit's Python
command, so the printer is not what is measured.  ippeveprinter still takes
one job at a time and answers server-error-busy meanwhile; how often that
happened on each side is printed, since the two react differently (the ipp
backend sleeps 10 s, dispatch retries after 2 s).

``BENCH_LP_JOBS`` sets N (default 500).  Each side has a budget of 120 s:
when the proxy cannot deliver N jobs within it, the output says so and both
sides are compared on the number it did deliver (the jobs left are
canceled before the other side runs).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cups

from proxy import cupsadmin, printers
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter

from .harness import ServiceProcess, env_int, scratch_dir

DEFAULT_JOBS = 500
BUDGET = 120.0  # seconds per side; a proxy side that needs longer is compared on fewer jobs
BUSY_SLEEP = 10.0  # what CUPS 2.4's ipp backend sleeps after server-error-busy
PROXY_QUEUE = "pp-lp"
CUPS_QUEUE = "ipp-lp"
USER = "bench"


class FastPrinter(IppEvePrinter):
    """An ippeveprinter that "prints" with ``/bin/true`` (the devkit's command is a
    Python start-up per document); ``-k`` still keeps every document."""

    def _args(self) -> list[str]:
        args = super()._args()
        args[args.index("-c") + 1] = "/bin/true"
        return args


@contextlib.contextmanager
def _started(start: Callable[[], None], stop: Callable[[], None]) -> Iterator[None]:
    try:
        start()
        yield
    finally:
        stop()


def _documents(printer: IppEvePrinter) -> list[Path]:
    return [p for p in printer.spool.iterdir() if p.suffix not in (".prn", ".json", ".tmp")]


def _received(printer: IppEvePrinter) -> list[float]:
    """When the printer had each document whole: its file's last write (epoch seconds)."""
    times = []
    for document in _documents(printer):
        with contextlib.suppress(OSError):
            times.append(document.stat().st_mtime)
    return sorted(times)


@dataclass
class Side:
    start: float  # epoch seconds of the first submission
    received: list[float]  # epoch seconds, sorted, within the budget
    submitting: float  # seconds the submissions took
    busy: int  # server-error-busy answers the printer gave
    errors: int = 0  # ERROR lines in the service's log (proxy side)
    ended: float | None = None  # epoch seconds when CUPS had ended every job of the queue

    def seconds(self, count: int) -> float:
        """Wall time from the first submission until ``count`` jobs were received."""
        return self.received[count - 1] - self.start


def _submit_and_wait(
    cupsd: PrivateCupsd, queue: str, pdf: Path, jobs: int, printer: IppEvePrinter
) -> Side:
    conn = cups.Connection(host=cupsd.server)
    cups.setUser(USER)
    start = time.time()
    for number in range(1, jobs + 1):
        conn.printFile(queue, str(pdf), f"{queue}-{number}", {})
    submitting = time.time() - start
    deadline = start + BUDGET
    while len(_documents(printer)) < jobs and time.time() < deadline:
        time.sleep(0.2)
    received = [t for t in _received(printer) if t <= deadline]
    while _active(conn, queue) and time.time() < deadline:
        time.sleep(0.05)
    ended = time.time() if not _active(conn, queue) else None
    return Side(start, received, submitting, printer.log.count("server-error-busy"), ended=ended)


def _active(conn: cups.Connection, queue: str) -> bool:
    """Has the queue jobs that have not ended in CUPS (its backend still running)?"""
    jobs = conn.getJobs(which_jobs="not-completed", requested_attributes=["job-printer-uri"])
    return any(str(job.get("job-printer-uri", "")).endswith(f"/{queue}") for job in jobs.values())


def _stop_queue(cupsd: PrivateCupsd, queue: str) -> None:
    """Stop a queue and cancel what is left in it (jobs past the budget)."""
    for command in (["cupsdisable", queue], ["cancel", "-a", queue]):
        subprocess.run(command, env=cupsd.env(), capture_output=True, timeout=60, check=False)


def _proxy_side(cupsd: PrivateCupsd, root: Path, pdf: Path, jobs: int) -> Side:
    printer = FastPrinter(name="proxyprint-bench-lp-proxy")
    service = ServiceProcess(root / "service", cups_server=cupsd.server)
    with _started(printer.start, printer.stop):
        service.migrate()
        service.add_printer(PROXY_QUEUE, printer.uri, users=[USER])
        cupsadmin.create_queue(
            PROXY_QUEUE,
            printers.device_uri(str(service.intake_socket)),
            cups_server=cupsd.server,
            error_policy=printers.PROXY_QUEUE_ERROR_POLICY,  # as `proxyprint printer add`
        )
        try:
            with _started(service.start, service.stop):
                side = _submit_and_wait(cupsd, PROXY_QUEUE, pdf, jobs, printer)
        finally:
            _stop_queue(cupsd, PROXY_QUEUE)
        side.errors = sum(" ERROR " in line for line in service.log.splitlines())
        return side


def _cups_side(cupsd: PrivateCupsd, pdf: Path, jobs: int) -> Side:
    printer = FastPrinter(name="proxyprint-bench-lp-cups")
    with _started(printer.start, printer.stop):
        cupsadmin.create_queue(CUPS_QUEUE, printer.uri, cups_server=cupsd.server)
        try:
            return _submit_and_wait(cupsd, CUPS_QUEUE, pdf, jobs, printer)
        finally:
            _stop_queue(cupsd, CUPS_QUEUE)


def _rate(side: Side, count: int) -> str:
    seconds = side.seconds(count)
    return f"{seconds:.1f} s ({count / seconds:.1f} jobs/s)"


def main() -> None:
    jobs = env_int("BENCH_LP_JOBS", DEFAULT_JOBS)
    with scratch_dir("ppbench-lp-") as root:
        pdf = make_pdf(root / "one-page.pdf", 1, title="proxyprint lp benchmark")
        cupsd = PrivateCupsd(log_level="warn")
        with _started(cupsd.start, cupsd.stop):
            ours = _proxy_side(cupsd, root, pdf, jobs)
            count = len(ours.received)
            if count < jobs:
                print(
                    f"lp500: N={jobs} does not fit in {BUDGET:.0f} s per side here: the proxy "
                    f"delivered {count} jobs within it, so both sides are compared on N={count}",
                    flush=True,
                )
            if count == 0:
                return
            theirs = _cups_side(cupsd, pdf, count)
    label = f"lp500 (N={count} one-page jobs, first lp until the printer received all)"
    delivered = len(theirs.received)
    if delivered < count:
        # The plain queue ran out of its budget: compare the time each side took
        # for the jobs the plain queue did deliver (the proxy's first ones).
        ratio = ours.seconds(delivered) / theirs.seconds(delivered) if delivered else 0.0
        print(
            f"{label}: proxy queue (direct mode) {_rate(ours, count)}; plain CUPS ipp queue "
            f"INCOMPLETE, {delivered} of {count} within {BUDGET:.0f} s; on those first "
            f"{delivered} jobs: proxy {ours.seconds(delivered):.1f} s, plain CUPS "
            f"{theirs.seconds(delivered):.1f} s, ratio {ratio:.2f}x (goal <= 1.2x)"
            if delivered
            else f"{label}: proxy queue (direct mode) {_rate(ours, count)}; plain CUPS ipp "
            f"queue delivered nothing within {BUDGET:.0f} s",
            flush=True,
        )
        if not delivered:
            return
        count = delivered
    else:
        ratio = ours.seconds(count) / theirs.seconds(count)
        print(
            f"{label}: proxy queue (direct mode) {_rate(ours, count)}; plain CUPS ipp queue "
            f"{_rate(theirs, count)}; ratio {ratio:.2f}x (goal <= 1.2x)",
            flush=True,
        )
    unstalled = ""
    cups_seconds = theirs.seconds(count) - BUSY_SLEEP * theirs.busy
    if theirs.busy and cups_seconds > 0:
        unstalled = (
            f"; without those sleeps the CUPS side would take about {cups_seconds:.1f} s "
            f"(ratio {ours.seconds(count) / cups_seconds:.2f}x)"
        )
    print(
        f"lp500: printer busy answers (ippeveprinter prints one job at a time): proxy side "
        f"{ours.busy} (dispatch retries such a job after 2 s), CUPS side {theirs.busy} (the "
        f"ipp backend sleeps {BUSY_SLEEP:.0f} s after each){unstalled}",
        flush=True,
    )
    if ours.ended is not None and theirs.ended is not None and count == jobs:
        ours_end, theirs_end = ours.ended - ours.start, theirs.ended - theirs.start
        print(
            f"lp500: until CUPS had ended every job (each backend exits once its job "
            f"printed): proxy {ours_end:.1f} s, plain CUPS {theirs_end:.1f} s; "
            f"ratio {ours_end / theirs_end:.2f}x",
            flush=True,
        )
    print(
        f"lp500: submitting took {ours.submitting:.1f} s (proxy) and {theirs.submitting:.1f} s "
        f"(CUPS); the service logged {ours.errors} ERROR lines",
        flush=True,
    )


if __name__ == "__main__":
    main()
