"""Conversion at dispatch: a 100-page PDF to PWG raster at 300 dpi, next to ``gs``.

A printer that takes only PWG raster and JPEG (ippeveprinter ``-f
image/pwg-raster,image/jpeg``) gets a 100-page PDF through the whole path: the
backend hands it to ``proxyprint serve`` (its own process, SQLite), dispatch
plans, converts (Ghostscript, in a subprocess) and sends the raster. Our
figure is dispatch's conversion + Print-Job: from the ``converted`` event
(written just before the converter starts) to the ``dispatched`` event (after
the printer accepted the raster). The baseline is the same Ghostscript
command run directly on the same file in the same run (what ``cupsfilter``
would run for this printer). The service's peak RSS (VmHWM) is read before
and after: the conversion runs in a subprocess, so it stays flat.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.pipeline import convert

from .harness import (
    ServiceProcess,
    backend_argv,
    backend_env,
    install_backend,
    proc_status_kib,
    run_sampled,
    scratch_dir,
)

PAGES = 100
DPI = 300
QUEUE = "pp-convert"
ROUNDS = 2


def _gs_direct(document: Path, out: Path) -> float:
    """The baseline: the command dispatch runs, run by hand."""
    step = convert.gs_raster("pwgraster", DPI, gray=False)
    argv = step.command(document, out)
    argv[0] = convert.tool(argv[0]) or argv[0]
    run = run_sampled(argv, {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, interval=0.05)
    if run.returncode != 0:
        raise RuntimeError(f"gs exited {run.returncode}: {run.stderr.decode()[-1000:]}")
    out.unlink()
    return run.seconds


def _times(db: Path, print_out: int) -> tuple[float, float] | None:
    with sqlite3.connect(db) as conn:
        rows = dict(
            conn.execute(
                "SELECT reason, at FROM events WHERE subject_type = 'print_out' "
                "AND subject_id = ? AND reason IN ('converted', 'dispatched')",
                (str(print_out),),
            ).fetchall()
        )
    if "converted" not in rows or "dispatched" not in rows:
        return None
    parse = dt.datetime.fromisoformat
    return parse(str(rows["converted"])).timestamp(), parse(str(rows["dispatched"])).timestamp()


def _last_print_out(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT max(id) FROM print_outs").fetchone()
    return int(row[0] or 0)


def _ours(backend: Path, job_id: int, document: Path, service: ServiceProcess) -> float:
    env = backend_env(f"proxyprint:{service.intake_socket}", QUEUE, "application/pdf")
    handed = run_sampled(backend_argv(backend, job_id, document, title="hundred.pdf"), env)
    if handed.returncode != 0:
        raise RuntimeError(f"backend exited {handed.returncode}: {handed.stderr.decode()[-2000:]}")
    db = service.root / "proxyprint.db"
    print_out = _last_print_out(db)
    deadline = time.monotonic() + 600
    while (times := _times(db, print_out)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"print-out {print_out} not dispatched:\n{service.log[-3000:]}")
        time.sleep(0.1)
    return times[1] - times[0]


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def main() -> None:
    with scratch_dir("ppbench-convert-") as root:
        document = make_pdf(root / "hundred.pdf", PAGES)
        with IppEvePrinter(formats=("image/pwg-raster", "image/jpeg")) as printer:
            service = ServiceProcess(root / "service", tracker_interval=0.2)
            service.migrate()
            service.add_printer(QUEUE, printer.uri, users=["bench"])
            backend = install_backend(root)
            direct: list[float] = []
            ours: list[float] = []
            try:
                service.start()
                before = proc_status_kib(service.pid, "VmHWM")
                for job_id in range(1, ROUNDS + 1):
                    direct.append(_gs_direct(document, root / "direct.pwg"))
                    ours.append(_ours(backend, job_id, document, service))
                after = proc_status_kib(service.pid, "VmHWM")
            finally:
                service.stop()
    best, base = min(ours), min(direct)
    print(
        f"convert ({PAGES}-page PDF -> PWG raster {DPI} dpi sRGB, best of {ROUNDS}): dispatch "
        f"(conversion + Print-Job) {best:.2f} s; gs run directly {base:.2f} s; "
        f"ratio {best / base:.2f}x (goal <= 1.1x)",
        flush=True,
    )
    print(f"convert: service peak RSS {_mib(before)} before, {_mib(after)} after", flush=True)
