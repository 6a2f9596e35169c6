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
finished.  The ``ipp`` backend is told not to wait for the job or the printer
(``waitjob=false&waitprinter=false``, which CUPS 2.4's ipp backend honours),
and the proxy queue holds its jobs (hold mode: its backend exits at the
intake's answer; a direct job's backend would follow the job to its end, which
``lp500`` measures), so both stop timing at the hand-off.  The two backends
alternate, after warm-up runs of each.

Also reported: where the proxyprint median goes (the backend's start-up, and
the service's own timing of each job from its answer's ``Server-Timing``:
the decision before the document, the transfer into the spool, the page
count, the commit); ``python -X importtime`` of the backend's start-up, next
to the bare interpreter's own start-up imports (``-I -S -c pass``); and the
service's RSS (``proxyprint serve`` as its own process) idle, after 10 and
after ``BENCH_RSS_JOBS`` (default 1,000) jobs handed to it one after another.
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
    ServiceProcess,
    backend_argv,
    backend_env,
    env_int,
    install_backend,
    median,
    percentile,
    printer_state,
    private_stack,
    proc_status_kib,
    scratch_dir,
    wait_until,
)

QUEUE = "pp-handoff"
WARMUP = 3
IMPORTTIME_RUNS = 5


def _run_backend(
    argv: list[str], env: dict[str, str], phases: dict[str, list[float]] | None = None
) -> float:
    """One backend run as cupsd makes it; its wall time in seconds.

    ``phases``: the intake's own timing of this job (its answer's Server-Timing,
    which our backend logs at DEBUG), appended per phase in seconds.
    """
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    seconds = time.perf_counter() - start
    err = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {result.returncode}:\n{err[-2000:]}")
    if phases is not None:
        for phase, ms in _server_timing(err).items():
            phases.setdefault(phase, []).append(ms / 1000)
    return seconds


def _server_timing(stderr: str) -> dict[str, float]:
    """{phase: ms} from the backend's ``DEBUG: Intake timing: a;dur=1.5, b;dur=2``."""
    for line in stderr.splitlines():
        if line.startswith("DEBUG: Intake timing: "):
            found = {}
            for item in line.removeprefix("DEBUG: Intake timing: ").split(","):
                name, _, duration = item.strip().partition(";dur=")
                found[name] = float(duration)
            return found
    return {}


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
        # A hold printer: our backend's hand-off ends at the intake's answer, as the
        # ipp backend's ends at the printer's (told not to wait for the job); a
        # direct job's backend follows it to its end (lp500 measures that).
        loop.run(stack.add_printer(QUEUE, target=printer.uri, mode="hold"))
        loop.run(stack.add_users("bench"))
        backend = cupsd.serverbin / "backend" / "proxyprint"
        ours_env = backend_env(f"proxyprint:{stack.intake_socket}", QUEUE, "application/pdf")
        ipp_env = backend_env(f"{printer.uri}?{IPP_NO_WAIT}", "ipp-handoff", "application/pdf")
        times: dict[str, list[float]] = {"ours": [], "ipp": [], "start-up": [], "bare": []}
        server: dict[str, list[float]] = {}
        printed = 0
        for run in range(WARMUP + jobs):
            # Alternate which backend goes first, so neither always follows the other.
            order = ("ours", "ipp") if run % 2 == 0 else ("ipp", "ours")
            for which in order:
                job_id = 2 * run + (1 if which == "ours" else 2)
                if which == "ours":
                    phases = server if run >= WARMUP else None
                    seconds = _run_backend(backend_argv(backend, job_id, pdf), ours_env, phases)
                    loop.run(stack.wait_print_out(QUEUE, job_id, [PrintStatus.HELD], timeout=60))
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
        times.update({f"intake {phase}": values for phase, values in server.items()})
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
        phases = {k.removeprefix("intake "): median(v) for k, v in times.items() if " " in k}
        if phases:
            inside = sum(phases.values())
            rest = median(ours) - startup - inside
            print(
                "handoff: breakdown of the proxyprint median (ms, medians): start-up "
                f"{startup * 1000:.1f}; in the service: decision before the document "
                f"{phases.get('precheck', 0) * 1000:.1f}, transfer into the spool "
                f"{phases.get('spool', 0) * 1000:.1f}, page count "
                f"{phases.get('count', 0) * 1000:.1f}, commit "
                f"{phases.get('commit', 0) * 1000:.1f}; the rest (connect, HTTP, answer, "
                f"the backend's exit) {rest * 1000:.1f}",
                flush=True,
            )
        print(_importtime(install_backend(root)), flush=True)
        print(_service_rss(root), flush=True)


# --- the service's memory over many jobs -------------------------------------------


def _service_rss(root: Path) -> str:
    """``proxyprint serve`` (its own process) before, after 10 and after N jobs.

    The jobs go to a hold printer through the installed backend, as cupsd
    starts it: the intake path alone (nothing dispatched), one after another.
    """
    jobs = env_int("BENCH_RSS_JOBS", 1000, minimum=10)
    pdf = make_pdf(root / "rss.pdf", 1, title="proxyprint rss benchmark")
    service = ServiceProcess(root / "rss-service")
    service.migrate()
    service.add_printer("pp-rss", "ipp://127.0.0.1:9/ipp/print", users=["bench"], mode="hold")
    backend = install_backend(root / "rss")
    env = backend_env(f"proxyprint:{service.intake_socket}", "pp-rss", "application/pdf")
    samples: dict[int, int] = {}
    with service:
        service.start()
        samples[0] = proc_status_kib(service.pid, "VmRSS") or 0
        for number in range(1, jobs + 1):
            _run_backend(backend_argv(backend, number, pdf), env)
            if number in (10, jobs):
                samples[number] = proc_status_kib(service.pid, "VmRSS") or 0
    idle, ten, many = (samples[k] / 1024 for k in (0, 10, jobs))
    return (
        f"handoff: service RSS (proxyprint serve, own process, hold printer): idle "
        f"{idle:.1f} MiB, after 10 jobs {ten:.1f} MiB, after {jobs} jobs {many:.1f} MiB; "
        f"growth from 10 to {jobs} jobs {many - ten:+.1f} MiB (goal: within 10 MiB)"
    )


if __name__ == "__main__":
    main()
