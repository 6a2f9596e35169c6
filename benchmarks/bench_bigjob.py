"""A 1 GiB job: backend -> intake -> spool, next to ``cat`` of the same file.

The service runs as its own process (``proxyprint serve`` on SQLite, as an
admin runs it) so its peak RSS (VmHWM) is its own; the backend is installed
as ``proxyprint cups install-backend`` installs it and started as cupsd
starts it.  The baseline is ``cat`` copying the same file into the spool
directory: the least any spooler can do (read + write, no hashing, no page
count).  The backend's figure is the whole hand-off: upload, sha256, spool
write, page count and the database commit, until the backend exits.

The document is a real 64-page PostScript file of hex image data (DSC page
comments), generated once in a temporary directory and deleted afterwards:
the spool writer hashes every byte whatever they are, but a file the page
counter does not recognise (a sparse file of zeros) would be counted without
being read, and a PDF would be opened lazily by qpdf; PostScript makes the
counter read the whole file, as for a real large PostScript job.

The proxy printer holds its jobs (hold mode): the backend's run ends at the
intake's answer (a direct job's backend would follow it to its end, and its
target here is a port nobody listens on), and nothing is dispatched in the
background; the service is stopped right after the measurement.

On the local socket the backend passes cupsd's file by descriptor and the
service copies it in the kernel (``Spool.copy_in``); the last line gives the
intake's own timing of the best run (its answer's Server-Timing).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from proxy.devkit.cupsd import free_port

from .harness import (
    ServiceProcess,
    backend_argv,
    backend_env,
    install_backend,
    proc_status_kib,
    run_sampled,
    scratch_dir,
)

SIZE = 1 << 30
PAGES = 64
LINE = 128  # 127 hex digits + newline, like PostScript image data
QUEUE = "pp-bigjob"
RSS_GOAL_MIB = 64
MIB = 1 << 20
ROUNDS = 3  # cat and backend alternate (order swapped each round); the best of each counts
SETTLE = 1.0  # seconds after unlink + sync, so the disk is quiet before a timed run


def write_postscript(path: Path, size: int = SIZE, pages: int = PAGES) -> None:
    """Exactly ``size`` bytes of DSC PostScript with ``pages`` pages of hex image data."""
    header = (
        f"%!PS-Adobe-3.0\n%%Creator: proxyprint bigjob benchmark\n%%Pages: {pages}\n%%EndComments\n"
    ).encode("ascii")
    page_head = (
        "/picstr 64 string def 4096 4096 8 [4096 0 0 -4096 0 4096] "
        "{currentfile picstr readhexstring pop} image\n"
    ).encode("ascii")
    trailer = b"%%Trailer\n%%EOF\n"
    heads = [f"%%Page: {n} {n}\n".encode("ascii") + page_head for n in range(1, pages + 1)]
    fixed = len(header) + sum(len(h) + len(b"showpage\n") for h in heads) + len(trailer)
    filler = size - fixed
    per_page, extra = divmod(filler, pages)
    digits = os.urandom(MIB // 2).hex().encode("ascii")  # 1 MiB of hex digits
    block = b"".join(digits[i : i + LINE - 1] + b"\n" for i in range(0, len(digits), LINE - 1))[
        : (MIB // LINE) * LINE
    ]  # whole lines only
    with path.open("wb") as out:
        out.write(header)
        for number, head in enumerate(heads):
            out.write(head)
            _fill(out, per_page + (extra if number == pages - 1 else 0), block)
            out.write(b"showpage\n")
        out.write(trailer)
    if path.stat().st_size != size:
        raise RuntimeError(f"generated {path.stat().st_size} bytes, not {size}")


def _fill(out: BinaryIO, count: int, block: bytes) -> None:
    """``count`` bytes of hex lines, the last one shortened to fit."""
    whole, rest = divmod(count, LINE)
    lines_per_block = len(block) // LINE
    while whole:
        take = min(whole, lines_per_block)
        out.write(block[: take * LINE])
        whole -= take
    if rest:
        out.write(block[: rest - 1] + b"\n")


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def _warm(document: Path) -> None:
    """The same start for every timed run: earlier output flushed and its blocks
    freed (the file system may discard them), then the document read once so it
    is in the page cache for both."""
    os.sync()
    time.sleep(SETTLE)
    with document.open("rb") as fh:
        while fh.read(8 * MIB):
            pass
    os.sync()


@dataclass
class Run:
    seconds: float
    peak_kib: int
    upload_seconds: float | None = None  # until the spool file left incoming/
    timing: str | None = None  # the intake's Server-Timing (ms per phase)


def _cat_run(document: Path, spool: Path) -> Run:
    """The baseline: ``cat FILE > SPOOL/cat-baseline``, on the spool's file system."""
    copy = spool / "cat-baseline"
    _warm(document)
    with copy.open("wb") as out:
        cat = run_sampled(["cat", str(document)], {"PATH": "/usr/bin:/bin"}, stdout=out.fileno())
    copy.unlink()
    if cat.returncode != 0:
        raise RuntimeError(f"cat exited {cat.returncode}: {cat.stderr.decode()}")
    return Run(cat.seconds, cat.peak_kib)


def _backend_run(backend: Path, job_id: int, document: Path, service: ServiceProcess) -> Run:
    jobs_dir = service.spool_dir / "jobs"
    already = set(os.listdir(jobs_dir))
    uploaded: list[float] = []

    def watch(elapsed: float) -> None:
        if not uploaded and set(os.listdir(jobs_dir)) - already:
            uploaded.append(elapsed)

    _warm(document)
    env = backend_env(f"proxyprint:{service.intake_socket}", QUEUE, "application/postscript")
    ours = run_sampled(
        backend_argv(backend, job_id, document, title="big.ps"),
        env,
        on_sample=watch,
        interval=0.01,
        timeout=600,
    )
    if ours.returncode != 0:
        raise RuntimeError(
            f"backend exited {ours.returncode}:\n{ours.stderr.decode()[-2000:]}\n"
            f"{service.log[-3000:]}"
        )
    timing = next(
        (
            line.removeprefix("DEBUG: Intake timing: ")
            for line in ours.stderr.decode("utf-8", "replace").splitlines()
            if line.startswith("DEBUG: Intake timing: ")
        ),
        None,
    )
    return Run(ours.seconds, ours.peak_kib, uploaded[0] if uploaded else None, timing)


def _measure(root: Path) -> tuple[list[Run], list[Run], int | None, int | None, str]:
    document = root / "big.ps"
    write_postscript(document)
    service = ServiceProcess(root / "service")
    service.migrate()
    service.add_printer(
        QUEUE, f"ipp://127.0.0.1:{free_port()}/ipp/print", users=["bench"], mode="hold"
    )
    backend = install_backend(root)
    cats: list[Run] = []
    ours: list[Run] = []
    try:
        service.start()
        before = proc_status_kib(service.pid, "VmHWM")
        for job_id in range(1, ROUNDS + 1):
            if job_id % 2:
                cats.append(_cat_run(document, service.spool_dir))
            ours.append(_backend_run(backend, job_id, document, service))
            # The service's job copy is not needed any more: keep the disk use down.
            for spooled in (service.spool_dir / "jobs").iterdir():
                spooled.unlink()
            if not job_id % 2:
                cats.append(_cat_run(document, service.spool_dir))
        after = proc_status_kib(service.pid, "VmHWM")
        recorded = _recorded(service.root / "proxyprint.db")
    finally:
        service.stop()
    return cats, ours, before, after, recorded


def main() -> None:
    with scratch_dir("ppbench-bigjob-") as root:
        cats, ours, before, after, recorded = _measure(root)
    best = min(ours, key=lambda r: r.seconds)
    cat = min(cats, key=lambda r: r.seconds)
    ours_rate = SIZE / MIB / best.seconds
    cat_rate = SIZE / MIB / cat.seconds
    print(
        f"bigjob (1 GiB PostScript, {PAGES} pages, best of {ROUNDS}): backend -> intake -> "
        f"spool {ours_rate:,.0f} MiB/s ({best.seconds:.2f} s); cat into the spool directory "
        f"{cat_rate:,.0f} MiB/s ({cat.seconds:.2f} s); ratio {ours_rate / cat_rate:.2f}x "
        f"(goal >= 0.5x)",
        flush=True,
    )
    if best.upload_seconds is not None:
        print(
            f"bigjob: of the backend's {best.seconds:.2f} s, upload + sha256 + spool write "
            f"took {best.upload_seconds:.2f} s, page count + database + answer "
            f"{best.seconds - best.upload_seconds:.2f} s",
            flush=True,
        )
    print(
        f"bigjob peak RSS (VmHWM): backend {_mib(max(r.peak_kib for r in ours))} "
        f"(cat {_mib(max(r.peak_kib for r in cats))}); service {_mib(after)} after "
        f"{ROUNDS} jobs, {_mib(before)} before them (goal < {RSS_GOAL_MIB} MiB each)",
        flush=True,
    )
    print(f"bigjob: the service recorded {recorded}", flush=True)
    if best.timing:
        print(f"bigjob: the intake's timing of the best run (ms): {best.timing}", flush=True)


def _recorded(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT size, pages, pages_estimated FROM print_ins ORDER BY id DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return "no print-in"
    size, pages, estimated = row
    kind = "estimated" if estimated else "exact"
    return f"a print-in of {size:,} bytes, {pages} pages ({kind})"


if __name__ == "__main__":
    main()
