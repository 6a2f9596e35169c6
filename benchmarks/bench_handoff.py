"""Backend hand-off: wall time of one CUPS backend run for a 1-page PDF.

Our backend (installed as ``proxyprint cups install-backend`` installs it)
streams the job to the running service's intake (an in-process
``ServiceStack`` with a private cupsd), next to CUPS's own ``ipp`` backend
delivering the same file straight to an ippeveprinter, in the same run.
Both are started as cupsd starts a backend: ``DEVICE_URI``, ``PRINTER``,
``CONTENT_TYPE`` in the environment, ``job-id user title copies options
file`` as arguments, stderr read through a pipe.

Fairness: ippeveprinter takes one job at a time (server-error-busy
otherwise), so before every run the printer is idle and every earlier job is
finished (for the proxy: dispatched, printed and tracked to completed, so no
background work overlaps the next run).  The ``ipp`` backend is told not to
wait for the job or the printer (``waitjob=false&waitprinter=false``, which
CUPS 2.4's ipp backend honours), so both stop timing at the hand-off.  The
two backends alternate, after warm-up runs of each.

Also reported: ``python -X importtime`` of the backend's start-up, next to
the bare interpreter's own start-up imports (``-I -S -c pass``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from billing.enums import PrintStatus
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter

from .harness import (
    IPP_BACKEND,
    IPP_NO_WAIT,
    PRINTER_IDLE,
    backend_argv,
    backend_env,
    env_int,
    install_backend,
    median,
    percentile,
    printer_state,
    private_stack,
    scratch_dir,
    wait_until,
)

QUEUE = "pp-handoff"
WARMUP = 3
IMPORTTIME_RUNS = 5


def _run_backend(argv: list[str], env: dict[str, str]) -> float:
    """One backend run as cupsd makes it; its wall time in seconds."""
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        err = result.stderr.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{argv[0]} exited {result.returncode}:\n{err}")
    return seconds


def _wait_printed(printer: IppEvePrinter, count: int) -> None:
    """``count`` documents printed (command done) and the printer idle again."""

    def done() -> bool:
        docs = printer.documents()
        return (
            len(docs) >= count
            and all(d.status == "completed" for d in docs)
            and printer_state(printer.uri) == PRINTER_IDLE
        )

    wait_until(done, f"{count} documents printed", timeout=60)


# --- python -X importtime ------------------------------------------------------


def _imports(args: list[str]) -> dict[str, int]:
    """{module: self microseconds} from ``python -X importtime``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-I", "-S", *args],
        capture_output=True,
        timeout=60,
        check=True,
    )
    modules: dict[str, int] = {}
    for line in result.stderr.decode("utf-8", "replace").splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|", 2)
        modules[name.strip()] = int(self_us)
    return modules


def _importtime(backend: Path) -> str:
    runs = [_imports([str(backend)]) for _ in range(IMPORTTIME_RUNS)]
    bare_runs = [_imports(["-c", "pass"]) for _ in range(IMPORTTIME_RUNS)]
    total_ms = median([sum(r.values()) / 1000 for r in runs])
    bare_ms = median([sum(r.values()) / 1000 for r in bare_runs])
    modules = set(runs[0])
    own = modules - set(bare_runs[0])
    foreign = sorted(m for m in modules if m.split(".")[0] not in sys.stdlib_module_names)
    where = "all stdlib" if not foreign else f"NOT stdlib: {', '.join(foreign)}"
    return (
        f"handoff: backend start-up imports (python -X importtime -I -S, median of "
        f"{IMPORTTIME_RUNS}): {total_ms:.1f} ms for {len(modules)} modules ({where}); "
        f"bare interpreter start-up {bare_ms:.1f} ms for {len(bare_runs[0])} modules; "
        f"the backend's own {total_ms - bare_ms:.1f} ms for {len(own)} modules"
    )


# --- the benchmark -------------------------------------------------------------------


def _measure(root: Path, jobs: int) -> dict[str, list[float]]:
    pdf = make_pdf(root / "one-page.pdf", 1, title="proxyprint handoff benchmark")
    with private_stack(root, "proxyprint-bench-handoff") as (cupsd, printer, loop, stack):
        loop.run(stack.add_printer(QUEUE, target=printer.uri, mode="direct"))
        loop.run(stack.add_users("bench"))
        backend = cupsd.serverbin / "backend" / "proxyprint"
        ours_env = backend_env(f"proxyprint:{stack.intake_socket}", QUEUE, "application/pdf")
        ipp_env = backend_env(f"{printer.uri}?{IPP_NO_WAIT}", "ipp-handoff", "application/pdf")
        times: dict[str, list[float]] = {"ours": [], "ipp": [], "start-up": [], "bare": []}
        printed = 0
        for run in range(WARMUP + jobs):
            # Alternate which backend goes first, so neither always follows the other.
            order = ("ours", "ipp") if run % 2 == 0 else ("ipp", "ours")
            for which in order:
                job_id = 2 * run + (1 if which == "ours" else 2)
                if which == "ours":
                    seconds = _run_backend(backend_argv(backend, job_id, pdf), ours_env)
                    loop.run(
                        stack.wait_print_out(QUEUE, job_id, [PrintStatus.COMPLETED], timeout=60)
                    )
                else:
                    seconds = _run_backend(backend_argv(IPP_BACKEND, job_id, pdf), ipp_env)
                printed += 1
                _wait_printed(printer, printed)
                if run >= WARMUP:
                    times[which].append(seconds)
            # The backend's start-up alone (no arguments: discovery, no I/O), and
            # the bare interpreter it runs on, for the decomposition.
            startup = _run_backend([str(backend)], ours_env)
            bare = _run_backend([sys.executable, "-I", "-S", "-c", "pass"], ours_env)
            if run >= WARMUP:
                times["start-up"].append(startup)
                times["bare"].append(bare)
        return times


def main() -> None:
    jobs = env_int("BENCH_HANDOFF_JOBS", 30)
    with scratch_dir("ppbench-handoff-") as root:
        times = _measure(root, jobs)
        ours, theirs = times["ours"], times["ipp"]
        print(
            f"handoff (1-page job, N={jobs}): proxyprint backend median "
            f"{median(ours) * 1000:.0f} ms p95 {percentile(ours, 95) * 1000:.0f} ms; "
            f"CUPS ipp backend median {median(theirs) * 1000:.0f} ms "
            f"p95 {percentile(theirs, 95) * 1000:.0f} ms; "
            f"ratio {median(ours) / median(theirs):.2f}x (goal <= 1.0x)",
            flush=True,
        )
        startup, bare = median(times["start-up"]), median(times["bare"])
        print(
            f"handoff: of the proxyprint backend's median, {startup * 1000:.0f} ms is its "
            f"start-up alone (a no-argument run: interpreter + imports, no I/O; the bare "
            f"interpreter, python -I -S -c pass, takes {bare * 1000:.0f} ms) and about "
            f"{(median(ours) - startup) * 1000:.0f} ms the exchange with the intake",
            flush=True,
        )
        print(_importtime(install_backend(root)), flush=True)


if __name__ == "__main__":
    main()
