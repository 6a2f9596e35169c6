"""NFC release: tap-to-printed latency of held jobs, next to direct-print latency.

One private cupsd, one ippeveprinter, and the whole service in-process
(``ServiceStack``, SQLite, tracker interval 0.2 s, the stack's default).  Two
proxy printers send to that same ippeveprinter:

- ``pp-tap-hold`` (hold mode): N jobs, one per user, are printed with ``lp``
  and wait ``held`` before anything is timed.  Each user has an NFC card and
  the reader ``bench-tap`` releases that printer, so a tap of user *i*'s card
  releases exactly job *i* (``POST /api/v1/readers/bench-tap/tap``);
- ``pp-tap-direct`` (direct mode): the same users print the same document
  with ``lp``, one job at a time.

What is timed, per job (one job at a time: ippeveprinter takes one job at a
time and answers server-error-busy meanwhile, so before every job the
printer is idle and the previous print-out is ``completed``):

- start: tap side, the moment the tap request is sent (client clock, so the
  HTTP round trip counts); direct side, the moment the print-out exists in
  our intake (its ``created_at``: the document is spooled and counted, the
  same point a held job is at when it is released);
- "printed": the printer has the whole document (the mtime of the file
  ippeveprinter wrote, so no polling granularity);
- "completed": our print-out is ``completed`` (its ``ended_at``, set by the
  tracker when the printer reports the job done; the tracker polls every
  tracker interval, so this includes up to one interval).

Tap and direct jobs alternate (which goes first alternates too), after warm-up
jobs of each.  ``BENCH_TAP_JOBS`` sets N (default 100).
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from billing.enums import PrintStatus
from billing.models import Event, PrintOut
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter, job_title
from proxy.devkit.stack import ServiceStack
from proxy.keys import SESSIONS

from .harness import (
    PRINTER_IDLE,
    LoopThread,
    env_int,
    median,
    percentile,
    printer_state,
    private_stack,
    scratch_dir,
    wait_until,
)

DEFAULT_JOBS = 100
WARMUP = 3
HOLD_QUEUE = "pp-tap-hold"
DIRECT_QUEUE = "pp-tap-direct"
READER = "bench-tap"
JOB_TIMEOUT = 30.0


@dataclass
class Sample:
    printed: float  # seconds from the start point to the printer having the document
    completed: float  # seconds from the start point to our print-out completed
    # Tap side only: seconds from the release (the HELD -> pending event, stamped
    # inside the tap's transaction like created_at in the intake's) to printed.
    released_to_printed: float = 0.0


@dataclass
class Bench:
    stack: ServiceStack
    loop: LoopThread
    printer: IppEvePrinter
    pdf: Path
    reader_token: str
    held: dict[str, int]  # user -> CUPS job id of the user's held job


def _user(number: int) -> str:
    return f"tap{number:03d}"


def _card(number: int) -> str:
    return f"04:7a:{number >> 8:02x}:{number & 0xFF:02x}"


def _title(kind: str, number: int) -> str:
    """A job name ippeveprinter keeps as is in its file name (``[A-Za-z0-9_]`` only)."""
    return f"{kind}_{number:04d}"


def _record(printer: IppEvePrinter, title: str) -> tuple[Path, str] | None:
    """(document, print command status) of the job named ``title``, once the printer has it.

    Looks up this one job's record (``<job-id>-<title>_pp_<marker>_.<ext>.json``:
    dispatch appends `` (pp-<marker>)`` to the job-name, see proxy.targets.ipp;
    written by the devkit's print command) instead of
    ``IppEvePrinter.documents()``, which reads every record so far on each call.
    """
    for record in printer.spool.glob(f"*-{title}*.json"):
        try:
            data = json.loads(record.read_text("utf-8"))
        except (OSError, ValueError):
            continue  # replaced meanwhile
        if job_title(data["env"].get("IPP_JOB_NAME", "")) == title:
            return record.with_suffix(""), str(data["status"])
    return None


def _received_at(printer: IppEvePrinter, title: str) -> float:
    """When the printer had the whole document: the mtime of the file it wrote."""
    found: list[Path] = []

    def received() -> bool:
        record = _record(printer, title)
        if record is not None:
            found.append(record[0])
        return record is not None

    wait_until(received, f"the printer received {title}", JOB_TIMEOUT, interval=0.005)
    return found[0].stat().st_mtime


async def _released_at(stack: ServiceStack, print_out_id: int) -> float:
    """When the tap released the print-out: its ``nfc-tap`` event (epoch seconds)."""
    assert stack.app is not None
    async with stack.app[SESSIONS]() as session:
        at = await session.scalar(
            select(Event.at).where(
                Event.subject_type == "print_out",
                Event.subject_id == str(print_out_id),
                Event.reason == "nfc-tap",
            )
        )
    if at is None:
        raise RuntimeError(f"print-out {print_out_id}: no nfc-tap event")
    return at.timestamp()


def _completed(bench: Bench, queue: str, job: int) -> PrintOut:
    po = bench.loop.run(
        bench.stack.wait_print_out(queue, job, [PrintStatus.COMPLETED], timeout=JOB_TIMEOUT)
    )
    if po.ended_at is None:
        raise RuntimeError(f"print-out {po.id} is completed without ended_at")
    return po


def _wait_idle(bench: Bench, title: str) -> None:
    """The document's print command has ended and the printer is idle again."""

    def idle() -> bool:
        record = _record(bench.printer, title)
        return (
            record is not None
            and record[1] == "completed"
            and printer_state(bench.printer.uri) == PRINTER_IDLE
        )

    wait_until(idle, f"printer idle after {title}", timeout=JOB_TIMEOUT)


def _tap(bench: Bench, card: str) -> list[int]:
    """One HTTP tap as a reader sends it (its own connection); the released ids."""
    host, _, port = bench.stack.config.http.listen.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=JOB_TIMEOUT)
    try:
        conn.request(
            "POST",
            f"/api/v1/readers/{READER}/tap",
            body=json.dumps({"card": card}),
            headers={
                "Authorization": f"Bearer {bench.reader_token}",
                "Content-Type": "application/json",
            },
        )
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"tap {card}: HTTP {response.status} {body[:500]!r}")
    return [int(item["id"]) for item in json.loads(body)["released"]]


def _tap_job(bench: Bench, number: int) -> tuple[Sample, float]:
    """Tap user ``number``'s card; (latencies, seconds until the tap was answered)."""
    user = _user(number)
    start = time.time()
    ids = _tap(bench, _card(number))
    answered = time.time() - start
    if len(ids) != 1:
        raise RuntimeError(f"tap of {user}'s card released {ids}, expected one job")
    received = _received_at(bench.printer, _title("tap", number))
    po = _completed(bench, HOLD_QUEUE, bench.held[user])
    _wait_idle(bench, _title("tap", number))
    assert po.ended_at is not None
    released = bench.loop.run(_released_at(bench.stack, po.id))
    sample = Sample(received - start, po.ended_at.timestamp() - start, received - released)
    return sample, answered


def _direct_job(bench: Bench, number: int) -> Sample:
    title = _title("direct", number)
    job = bench.loop.run(bench.stack.lp(DIRECT_QUEUE, bench.pdf, user=_user(number), title=title))
    received = _received_at(bench.printer, title)
    po = _completed(bench, DIRECT_QUEUE, job)
    _wait_idle(bench, title)
    assert po.ended_at is not None
    start = po.created_at.timestamp()
    return Sample(received - start, po.ended_at.timestamp() - start)


def _set_up(bench: Bench, jobs: int) -> float:
    """Printers, users, cards, the reader, and every tap job held; seconds to hold them."""
    stack, loop = bench.stack, bench.loop
    loop.run(stack.add_printer(HOLD_QUEUE, target=bench.printer.uri, mode="hold"))
    loop.run(stack.add_printer(DIRECT_QUEUE, target=bench.printer.uri, mode="direct"))
    numbers = range(jobs)
    loop.run(stack.add_users(*(_user(n) for n in numbers)))
    for number in numbers:
        loop.run(stack.add_card(_user(number), _card(number)))
    bench.reader_token = loop.run(stack.add_reader(READER, [HOLD_QUEUE]))
    start = time.perf_counter()
    for number in numbers:
        bench.held[_user(number)] = loop.run(
            stack.lp(HOLD_QUEUE, bench.pdf, user=_user(number), title=_title("tap", number))
        )
    for job in bench.held.values():
        loop.run(stack.wait_print_out(HOLD_QUEUE, job, [PrintStatus.HELD], timeout=120))
    return time.perf_counter() - start


@dataclass
class Result:
    taps: list[Sample]
    directs: list[Sample]
    answers: list[float]  # seconds until each measured tap was answered
    hold_seconds: float  # lp of every tap job until all were held
    tracker_interval: float


def _measure(root: Path, jobs: int) -> Result:
    pdf = make_pdf(root / "one-page.pdf", 1, title="proxyprint tap benchmark")
    with private_stack(root, "proxyprint-bench-tap") as (_cupsd, printer, loop, stack):
        bench = Bench(stack, loop, printer, pdf, "", {})
        hold_seconds = _set_up(bench, WARMUP + jobs)
        taps: list[Sample] = []
        directs: list[Sample] = []
        answers: list[float] = []
        for number in range(WARMUP + jobs):
            measured = number >= WARMUP
            order = ("tap", "direct") if number % 2 == 0 else ("direct", "tap")
            for which in order:
                if which == "tap":
                    sample, answered = _tap_job(bench, number)
                    if measured:
                        taps.append(sample)
                        answers.append(answered)
                else:
                    sample = _direct_job(bench, number)
                    if measured:
                        directs.append(sample)
        return Result(taps, directs, answers, hold_seconds, stack.config.tracker.interval_secs)


def _ms(values: list[float]) -> str:
    return f"median {median(values) * 1000:.0f} ms p95 {percentile(values, 95) * 1000:.0f} ms"


def main() -> None:
    jobs = env_int("BENCH_TAP_JOBS", DEFAULT_JOBS)
    with scratch_dir("ppbench-tap-") as root:
        started = time.perf_counter()
        result = _measure(root, jobs)
        seconds = time.perf_counter() - started
    tap_printed = [s.printed for s in result.taps]
    direct_printed = [s.printed for s in result.directs]
    tap_completed = [s.completed for s in result.taps]
    direct_completed = [s.completed for s in result.directs]
    print(
        f"tap->printed (N={jobs}, 1-page PDF, printed = the printer has the document): "
        f"{_ms(tap_printed)}; direct intake->printed: {_ms(direct_printed)}; "
        f"ratio {median(tap_printed) / median(direct_printed):.2f}x",
        flush=True,
    )
    print(
        f"tap->print-out completed (N={jobs}, tracker interval {result.tracker_interval} s): "
        f"{_ms(tap_completed)}; direct intake->completed: {_ms(direct_completed)}; "
        f"ratio {median(tap_completed) / median(direct_completed):.2f}x",
        flush=True,
    )
    released_printed = [s.released_to_printed for s in result.taps]
    print(
        f"tap, server side: release (tap's transaction) ->printed {_ms(released_printed)}; "
        f"direct intake (intake's transaction) ->printed {_ms(direct_printed)}; "
        f"ratio {median(released_printed) / median(direct_printed):.2f}x",
        flush=True,
    )
    print(
        f"tap: HTTP tap answered in {_ms(result.answers)} (part of tap->printed); "
        f"{WARMUP + jobs} jobs held via lp in {result.hold_seconds:.1f} s; "
        f"{WARMUP} warm-up jobs per side not counted; whole run {seconds:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
