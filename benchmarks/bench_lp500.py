"""500 jobs from ``lp`` to the printer: through the proxy vs a plain CUPS ipp queue.

One private cupsd holds both queues:

- ``pp-lp``: a proxy queue (device ``proxyprint:<intake socket>``, our
  backend), direct mode, target an ippeveprinter; the service runs as its own
  process (``proxyprint serve``, SQLite, default intervals) as deployed;
- ``ipp-lp``: a raw CUPS queue with the ``ipp`` backend straight to another
  ippeveprinter of the same kind (``?waitjob=false&waitprinter=false``: CUPS
  2.4's ipp backend would otherwise wait for each job to finish printing,
  polling, which the proxy does not do either).

Each side gets the same N one-page PDFs submitted the same way (pycups
``printFile`` in a loop, i.e. what ``lp`` sends: one Print-Job each), one side
after the other.  The figure is the wall time from the first submission
until the printer has received every job, taken from the printer's own
records (the time its print command started on each document).

The printers run a tiny shell command per document instead of the devkit's
Python one, so the printer (ippeveprinter takes one job at a time and
answers server-error-busy meanwhile) is not what is measured.
``BENCH_LP_JOBS`` sets N (default 500).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cups

from proxy import cupsadmin, printers
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter

from .harness import IPP_NO_WAIT, ServiceProcess, env_int, scratch_dir

DEFAULT_JOBS = 500
SIDE_TIMEOUT = 150.0  # seconds a side may take before it is reported as incomplete
PROXY_QUEUE = "pp-lp"
CUPS_QUEUE = "ipp-lp"
USER = "bench"

# Records each document like the devkit's command (``<document>.json`` with
# ``document``, ``status``, ``at`` and ``env``), in a few ms instead of a
# Python start-up per job.
FAST_COMMAND = r"""#!/bin/sh
doc="$1"
at=$(date +%s.%N)
printf '{"document": "%s", "status": "completed", "at": %s, "env": {"IPP_JOB_ID": "%s", "IPP_JOB_NAME": "%s"}}\n' \
  "${doc##*/}" "$at" "$IPP_JOB_ID" "$IPP_JOB_NAME" > "$doc.json.tmp"
mv "$doc.json.tmp" "$doc.json"
"""


class FastPrinter(IppEvePrinter):
    """An ippeveprinter whose per-document command is a short shell script."""

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
    return times


def _submit_and_wait(
    cupsd: PrivateCupsd, queue: str, pdf: Path, jobs: int, printer: IppEvePrinter
) -> tuple[float, int, float]:
    """(wall seconds to the last received job, jobs received, submission seconds)."""
    conn = cups.Connection(host=cupsd.server)
    cups.setUser(USER)
    start = time.time()
    for number in range(1, jobs + 1):
        conn.printFile(queue, str(pdf), f"{queue}-{number}", {})
    submitted = time.time() - start
    deadline = time.monotonic() + SIDE_TIMEOUT
    while len(_documents(printer)) < jobs and time.monotonic() < deadline:
        time.sleep(0.2)
    received = _received(printer)
    if not received:
        return SIDE_TIMEOUT, 0, submitted
    return max(received) - start, len(received), submitted


def _proxy_side(cupsd: PrivateCupsd, root: Path, pdf: Path, jobs: int) -> tuple[float, int, float]:
    printer = FastPrinter(name="proxyprint-bench-lp-proxy")
    service = ServiceProcess(root / "service", cups_server=cupsd.server)
    with _started(printer.start, printer.stop):
        service.migrate()
        service.add_printer(PROXY_QUEUE, printer.uri, users=[USER])
        cupsadmin.create_queue(
            PROXY_QUEUE,
            printers.device_uri(str(service.intake_socket)),
            cups_server=cupsd.server,
        )
        with _started(service.start, service.stop):
            return _submit_and_wait(cupsd, PROXY_QUEUE, pdf, jobs, printer)


def _cups_side(cupsd: PrivateCupsd, pdf: Path, jobs: int) -> tuple[float, int, float]:
    printer = FastPrinter(name="proxyprint-bench-lp-cups")
    with _started(printer.start, printer.stop):
        cupsadmin.create_queue(CUPS_QUEUE, f"{printer.uri}?{IPP_NO_WAIT}", cups_server=cupsd.server)
        return _submit_and_wait(cupsd, CUPS_QUEUE, pdf, jobs, printer)


def _side(label: str, result: tuple[float, int, float], jobs: int) -> str:
    seconds, received, submitted = result
    if received < jobs:
        return f"{label} INCOMPLETE: {received} of {jobs} jobs received within {SIDE_TIMEOUT:.0f} s"
    return (
        f"{label} {seconds:.1f} s ({jobs / seconds:.1f} jobs/s; submitting took {submitted:.1f} s)"
    )


def main() -> None:
    jobs = env_int("BENCH_LP_JOBS", DEFAULT_JOBS)
    with scratch_dir("ppbench-lp-") as root:
        pdf = make_pdf(root / "one-page.pdf", 1, title="proxyprint lp benchmark")
        cupsd = PrivateCupsd(log_level="warn")
        with _started(cupsd.start, cupsd.stop):
            ours = _proxy_side(cupsd, root, pdf, jobs)
            theirs = _cups_side(cupsd, pdf, jobs)
    line = (
        f"lp{jobs} ({jobs} one-page jobs, lp -> printer): "
        f"{_side('proxy queue (direct mode)', ours, jobs)}; "
        f"{_side('plain CUPS ipp queue', theirs, jobs)}"
    )
    if ours[1] == jobs and theirs[1] == jobs:
        line += f"; ratio {ours[0] / theirs[0]:.2f}x (goal <= 1.2x)"
    print(line, flush=True)


if __name__ == "__main__":
    main()
