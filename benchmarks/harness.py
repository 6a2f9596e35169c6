"""Shared pieces of the pipeline benchmarks (not a benchmark: no ``bench_`` prefix).

Everything here starts what it needs in a private temporary directory and
stops it again: the service as its own process (``ServiceProcess``), an event
loop in a thread for an in-process ``ServiceStack`` (``LoopThread``), small
IPP probes of an ippeveprinter, ``/proc`` readers and the statistics the
benchmarks print.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from billing.enums import PrintStatus
from billing.models import Printer, PrintIn, PrintOut
from proxy import cupsadmin
from proxy.devkit.cupsd import PrivateCupsd, free_port
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.stack import ServiceStack
from proxy.targets import ipp_codec as codec
from proxy.targets.ipp_codec import Attribute, GroupTag, Operation

T = TypeVar("T")

VENV_BIN = Path(sys.executable).parent
PROXYPRINT = VENV_BIN / "proxyprint"
IPP_BACKEND = Path("/usr/lib/cups/backend/ipp")
PRINTER_IDLE = 3  # IPP printer-state idle
# ippeveprinter accepts one job at a time (server-error-busy otherwise); the
# CUPS ipp backend then waits for the job only if told to: CUPS 2.4's backend
# honours ``waitjob`` and ``waitprinter`` in the device URI (backend/ipp.c).
IPP_NO_WAIT = "waitjob=false&waitprinter=false"


# --- statistics ------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r}: expected an integer") from None
    return max(minimum, value)


# --- processes and /proc -------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class Sampled:
    """A child's exit code, wall time and the highest VmHWM seen while it ran."""

    returncode: int
    seconds: float
    peak_kib: int
    stderr: bytes


def run_sampled(
    args: Sequence[str],
    env: dict[str, str],
    *,
    stdout: int | None = None,
    on_sample: Callable[[float], None] | None = None,
    interval: float = 0.005,
    timeout: float = 600.0,
) -> Sampled:
    """Run a command, sampling its VmHWM from /proc until it exits.

    VmHWM is the peak RSS of the process's own address space.  (``ru_maxrss``
    of ``wait4`` is not used: after a vfork+exec it can include the parent's
    peak.)  The peak of a process whose memory stays flat is reached early,
    so sampling every few ms sees it.  ``stdout``: a file descriptor for the
    output (default: kept with stderr); ``on_sample(elapsed)`` is called at
    every sample.
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=err if stdout is None else stdout,
            stderr=err,
        )
        peak = 0
        deadline = start + timeout
        while proc.poll() is None:
            hwm = proc_status_kib(proc.pid, "VmHWM")
            if hwm is not None:
                peak = max(peak, hwm)
            if on_sample is not None:
                on_sample(time.perf_counter() - start)
            if time.perf_counter() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{args[0]} did not finish within {timeout} s")
            time.sleep(interval)
        seconds = time.perf_counter() - start
        err.seek(0)
        return Sampled(proc.returncode, seconds, peak, err.read())


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time (only our own child)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # backends run by cupsd as lp must traverse it
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the CUPS backends, run as cupsd runs them -----------------------------------------


def install_backend(root: Path) -> Path:
    """Our backend as ``proxyprint cups install-backend`` installs it, in ``root``."""
    return cupsadmin.install_backend(root / "serverbin")


def job_options(extra: str = "") -> str:
    """argv[5] as cupsd builds it: a fresh job-uuid and the originating host."""
    options = f"job-uuid=urn:uuid:{uuid.uuid4()} job-originating-host-name=localhost"
    return f"{options} {extra}".strip()


def backend_env(device_uri: str, printer: str, content_type: str) -> dict[str, str]:
    """The environment cupsd gives a backend (the parts our two backends read)."""
    return {
        "PATH": "/usr/lib/cups/filter:/usr/bin:/usr/sbin:/bin:/sbin",
        "LANG": "C",
        "DEVICE_URI": device_uri,
        "PRINTER": printer,
        "CONTENT_TYPE": content_type,
        "FINAL_CONTENT_TYPE": content_type,
        "CUPS_SERVERROOT": "/etc/cups",
        "CUPS_DATADIR": "/usr/share/cups",
        "CUPS_SERVERBIN": "/usr/lib/cups",
        "TMPDIR": tempfile.gettempdir(),
    }


def backend_argv(
    backend: Path, job_id: int, file: Path, *, user: str = "bench", title: str = "bench.pdf"
) -> list[str]:
    return [str(backend), str(job_id), user, title, "1", job_options(), str(file)]


# --- IPP probes of a printer (blocking) -----------------------------------------------------


def printer_state(uri: str, timeout: float = 5.0) -> int:
    """``printer-state`` of an ipp:// printer (3 idle, 4 processing, 5 stopped)."""
    parts = urlsplit(uri)
    message = codec.request(
        Operation.GET_PRINTER_ATTRIBUTES,
        1,
        uri,
        [
            Attribute.name_("requesting-user-name", "bench"),
            Attribute.keyword("requested-attributes", "printer-state"),
        ],
    )
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 631, timeout=timeout
    )
    try:
        conn.request(
            "POST",
            parts.path or "/",
            body=message.encode(),
            headers={"Content-Type": "application/ipp"},
        )
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    group = codec.decode(body).group(GroupTag.PRINTER)
    state = group.first("printer-state") if group is not None else None
    if not isinstance(state, int):
        raise RuntimeError(f"no printer-state from {uri}")
    return state


def wait_until(
    check: Callable[[], bool], what: str, timeout: float, interval: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


# --- an event loop in a thread (for an in-process ServiceStack) -------------------------


class LoopThread:
    """Run coroutines on an event loop in a daemon thread; the caller blocks freely."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="bench-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 300.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


# --- the service as its own process ----------------------------------------------------


class ServiceProcess:
    """``proxyprint serve --config FILE`` on SQLite in ``root``, as an admin runs it."""

    def __init__(
        self, root: Path, *, cups_server: str | None = None, tracker_interval: float = 2.0
    ) -> None:
        self.root = root
        self.db_url = f"sqlite+aiosqlite:///{root / 'proxyprint.db'}"
        self.spool_dir = root / "spool"
        self.intake_socket = root / "intake.sock"
        self.listen = f"127.0.0.1:{free_port()}"
        self.cups_server = cups_server or str(root / "no-cupsd.sock")
        self.tracker_interval = tracker_interval
        self.config_path = root / "proxyprint.toml"
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    "[database]",
                    f'url = "{self.db_url}"',
                    "[spool]",
                    f'dir = "{self.spool_dir}"',
                    "[intake]",
                    f'socket = "{self.intake_socket}"',
                    "[http]",
                    f'listen = "{self.listen}"',
                    "[cups]",
                    f'server = "{self.cups_server}"',
                    "[tracker]",
                    f"interval_secs = {self.tracker_interval}",
                    "",
                ]
            )
        )

    def _env(self) -> dict[str, str]:
        return {
            key: value for key, value in os.environ.items() if not key.startswith("PROXYPRINT_")
        }

    def migrate(self) -> None:
        self.write_config()
        result = subprocess.run(
            [str(PROXYPRINT), "--config", str(self.config_path), "db", "upgrade"],
            capture_output=True,
            env=self._env(),
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"proxyprint db upgrade failed: {result.stderr.decode()[-2000:]}")

    def session_run(self, work: Callable[[Any], Awaitable[None]]) -> None:
        """Run ``work(session)`` in one committed transaction on the service's database."""
        from billing.db import make_engine, make_sessionmaker

        async def go() -> None:
            engine = make_engine(self.db_url)
            try:
                async with make_sessionmaker(engine)() as session, session.begin():
                    await work(session)
            finally:
                await engine.dispose()

        asyncio.run(go())

    def add_printer(
        self, name: str, target: str, *, users: Sequence[str] = (), mode: str = "direct"
    ) -> None:
        """The service's printer record (and users), without a CUPS queue."""
        from billing import accounts
        from proxy import printers

        async def work(session: Any) -> None:
            await printers.add_printer(session, name, target=target, mode=mode)
            for user in users:
                await accounts.create_user(session, user)

        self.session_run(work)

    def start(self, timeout: float = 60.0) -> None:
        log = (self.root / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [str(PROXYPRINT), "--config", str(self.config_path), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=self._env(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"proxyprint serve did not start:\n{self.log[-3000:]}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        if not self.intake_socket.exists():
            return False
        host, _, port = self.listen.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the service is not running")
        return self.process.pid

    @property
    def log(self) -> str:
        try:
            return (self.root / "serve.log").read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def add_print_outs(
    session: AsyncSession,
    printer: Printer,
    items: Sequence[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    """One 1-page print-in of user ``bench`` and its direct print-out per item,
    written straight into the database; an item is (print-in values, print-out values)."""
    print_ins = [
        PrintIn(
            printer_id=printer.id,
            delegate="bench",
            content_type="application/pdf",
            sha256="0" * 64,
            pages=1,
            **print_in,
        )
        for print_in, _ in items
    ]
    session.add_all(print_ins)
    await session.flush()
    session.add_all(
        PrintOut(
            print_in_id=print_in.id,
            printer_id=printer.id,
            mode="direct",
            target=printer.target,
            status=int(PrintStatus.PENDING),
            delegate="bench",
            title=print_in.title,
            pages=1,
            copies=1,
            currency="EUR",
            **print_out,
        )
        for print_in, (_, print_out) in zip(print_ins, items, strict=True)
    )


@contextlib.contextmanager
def private_stack(
    root: Path, printer_name: str
) -> Iterator[tuple[PrivateCupsd, IppEvePrinter, LoopThread, ServiceStack]]:
    """A private cupsd, an ippeveprinter and the service (``ServiceStack``) on a
    loop thread: ``(cupsd, printer, loop, stack)``; all stopped afterwards."""
    cupsd = PrivateCupsd(log_level="warn")
    printer = IppEvePrinter(name=printer_name)
    loop = LoopThread()
    stack = ServiceStack(cupsd, root / "service")
    started = False
    try:
        cupsd.start()
        printer.start()
        loop.run(stack.__aenter__())
        started = True
        yield cupsd, printer, loop, stack
    finally:
        if started:
            loop.run(stack.__aexit__(None, None, None))
        loop.close()
        printer.stop()
        cupsd.stop()
