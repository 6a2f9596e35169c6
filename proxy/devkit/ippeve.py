"""A real IPP Everywhere printer for the tests and ``proxyprint demo``: ``ippeveprinter``.

What was checked on Debian 12 (CUPS 2.4.2):

* ippeveprinter will not start without DNS-SD, even with ``-r off`` ("Unable
  to initialize DNS-SD"): the system D-Bus and avahi-daemon must run.
  ``ensure_dnssd()`` starts them when they are not running and leaves them
  running (they are system-wide; other printers may use them).
* It binds its IPv4 and IPv6 listeners to the addresses of its ``-n`` name
  and fails without both: ``-n 127.0.0.1`` exits with "Unable to create IPv6
  listener"; ``-n localhost`` listens on 127.0.0.1 and ::1 only (the machine
  needs IPv6 loopback).  ``-r off`` keeps it out of mDNS.  It prints
  ``printer-uri-supported=...`` once both listeners exist.
* ``-d DIR`` must exist; with ``-k`` every document stays there as
  ``<job-id>-<job-name>.<ext>`` (the name reduced to ``[A-Za-z0-9_]``) and the
  command's stdout as ``<...>.prn``.
* ``-c COMMAND`` runs ``COMMAND <document>`` once per document with the job
  attributes as environment variables: ``IPP_COPIES`` (only when the client
  sent ``copies``), ``IPP_JOB_NAME``, ``IPP_JOB_ORIGINATING_USER_NAME``,
  ``IPP_JOB_ID``, ``IPP_JOB_UUID``, ``IPP_MEDIA``, ``IPP_SIDES``,
  ``IPP_PRINT_COLOR_MODE``, ``IPP_JOB_ORIGINATING_HOST_NAME``,
  ``IPP_DOCUMENT_FORMAT_SUPPLIED``, ``IPP_JOB_URI``, ``IPP_JOB_PRINTER_URI``,
  plus ``CONTENT_TYPE`` and every printer default as ``IPP_<NAME>_DEFAULT``.
  The command inherits ippeveprinter's environment too, so the printer is
  started with a minimal one.
* A command that exits non-zero aborts the job (``job-state`` aborted,
  ``aborted-by-system``; an ``ERROR:`` line on its stderr becomes the
  ``job-state-message``).
* One job at a time, no queue: while a job's command runs, Print-Job is
  refused with ``server-error-busy`` ("Currently printing another job."); the
  CUPS ipp backend keeps its job processing and retries until it gets in.
* Cancel-Job of a job whose command runs does not kill the command: the job
  stays processing (``processing-to-stop-point``) until the command ends,
  then is canceled.

The command installed here records each document's attributes in
``<document>.json`` (written atomically), holds every job while the ``hold``
knob is on (``held()``), and aborts the next N jobs with ``abort_next(N)``.
"""

import atexit
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from proxy.devkit.cupsd import free_port
from proxy.exceptions import TargetError
from proxy.targets.base import IppJobState

DBUS_SOCKET = Path("/run/dbus/system_bus_socket")
DBUS_PID = Path("/run/dbus/pid")
AVAHI_PID = Path("/run/avahi-daemon/pid")
DEFAULT_FORMATS = (
    "application/pdf",
    "application/postscript",
    "image/pwg-raster",
    "image/urf",
    "image/jpeg",
    "text/plain",
    "application/octet-stream",
)
START_ATTEMPTS = 3
DOCUMENT_SUFFIXES_IGNORED = (".json", ".tmp", ".prn")

# The -c command.  Job attributes arrive as IPP_* variables (see the module doc).
COMMAND = r"""
import json, os, sys, time

here = os.path.dirname(os.path.abspath(__file__))
document = sys.argv[1]


def record(status):
    data = {
        "document": os.path.basename(document),
        "status": status,
        "at": time.time(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("IPP_") or k == "CONTENT_TYPE"},
    }
    tmp = document + ".json.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, document + ".json")


def take_abort():
    path = os.path.join(here, "abort")
    try:
        with open(path, encoding="ascii") as fh:
            count = int(fh.read().strip() or "0")
    except (OSError, ValueError):
        return False
    if count <= 1:
        os.unlink(path)
    else:
        with open(path, "w", encoding="ascii") as fh:
            fh.write(str(count - 1))
    return count > 0


record("processing")
deadline = time.monotonic() + 600
while os.path.exists(os.path.join(here, "hold")) and time.monotonic() < deadline:
    time.sleep(0.05)
if take_abort():
    record("aborted")
    print("ERROR: simulated printer fault (proxyprint devkit abort_next)", file=sys.stderr)
    sys.exit(1)
record("completed")
"""

GET_JOB_TEST = """{
  OPERATION Get-Job-Attributes
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR integer job-id $job_id
  ATTR name requesting-user-name proxyprint-devkit
  ATTR keyword requested-attributes job-state
  STATUS successful-ok
  DISPLAY job-state
}
"""


@dataclass(frozen=True)
class ReceivedDocument:
    """One document as ippeveprinter received it, with its job attributes."""

    path: Path
    job_id: int
    job_name: str
    copies: int
    document_format: str
    user: str
    status: str  # "processing" (running or held), "completed" or "aborted"
    attributes: dict[str, str] = field(repr=False)

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    @property
    def title(self) -> str:
        """The job-name without the `` (pp-…)`` marker dispatch adds for ``find``."""
        return _MARKER.sub("", self.job_name)

    @property
    def marker(self) -> str | None:
        """The 12 hex digits of the dispatch uuid in the job-name, if any."""
        match = _MARKER.search(self.job_name)
        return match[1] if match else None


_MARKER = re.compile(r" \(pp-([0-9a-f]{12})\)$")


def _dbus_running() -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(DBUS_SOCKET))
        except OSError:
            return False
    return True


def _avahi_running() -> bool:
    result = subprocess.run(["avahi-daemon", "--check"], capture_output=True, check=False)
    return result.returncode == 0


def _wait_until(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TargetError(f"{what} did not start within {timeout} s")
        time.sleep(0.05)


def ensure_dnssd(timeout: float = 10.0) -> None:
    """Start the system D-Bus and avahi-daemon unless they already run (needs root)."""
    for tool in ("dbus-daemon", "avahi-daemon"):
        if shutil.which(tool) is None:
            raise TargetError(f"{tool} is not installed (ippeveprinter needs DNS-SD)")
    if not _dbus_running():
        DBUS_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        # Nothing answers, so a left-over pid file or socket is stale.
        DBUS_PID.unlink(missing_ok=True)
        DBUS_SOCKET.unlink(missing_ok=True)
        _run(["dbus-daemon", "--system", "--fork"], "dbus-daemon")
        _wait_until(_dbus_running, "dbus-daemon", timeout)
    if not _avahi_running():
        AVAHI_PID.unlink(missing_ok=True)
        _run(["avahi-daemon", "--no-drop-root", "--no-chroot", "-D"], "avahi-daemon")
        _wait_until(_avahi_running, "avahi-daemon", timeout)


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(args, capture_output=True, check=False, timeout=30)
    if result.returncode != 0:
        err = result.stderr.decode("utf-8", "replace").strip()
        raise TargetError(f"{what} failed to start ({result.returncode}): {err}")


class IppEvePrinter:
    """``with IppEvePrinter() as printer: ... printer.uri ... printer.documents()``."""

    def __init__(
        self,
        *,
        name: str | None = None,
        formats: tuple[str, ...] = DEFAULT_FORMATS,
        duplex: bool = True,
        color: bool = True,
        start_timeout: float = 20.0,
    ) -> None:
        self.name = name
        self.formats = formats
        self.duplex = duplex
        self.color = color
        self.start_timeout = start_timeout
        self.root = Path()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"ipp://127.0.0.1:{self.port}/ipp/print"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def log(self) -> str:
        """ippeveprinter's own output (-v): requests, jobs, command results."""
        try:
            return (self.root / "ippeveprinter.log").read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # --- lifecycle -------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._process is not None:
            return  # already started (start() then "with")
        if shutil.which("ippeveprinter") is None:
            raise TargetError("ippeveprinter is not installed (Debian package cups-ipp-utils)")
        ensure_dnssd()
        self.root = Path(tempfile.mkdtemp(prefix="proxyprint-ippeve-"))
        try:
            self.spool.mkdir()
            command = self.root / "command.py"
            command.write_text(f"#!{sys.executable} -IS\n{COMMAND}")
            command.chmod(0o755)
            (self.root / "get-job.test").write_text(GET_JOB_TEST)
            self._start_listening()
            atexit.register(self.stop)  # no orphan if the caller forgets stop()
        except BaseException:
            self.stop()
            raise

    def _start_listening(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            self._spawn()
            try:
                self._wait_ready()
            except TargetError:
                self._terminate()
                if attempt == START_ATTEMPTS or "Unable to" not in self.log:
                    raise
            else:
                return

    def _args(self) -> list[str]:
        args = ["ippeveprinter", "-v", "-p", str(self.port), "-n", "localhost", "-r", "off"]
        args += ["-d", str(self.spool), "-k", "-c", str(self.root / "command.py")]
        args += ["-f", ",".join(self.formats), "-s", "20,10" if self.color else "20,0"]
        if self.duplex:
            args.append("-2")
        args.append(self.name or f"proxyprint-ippeve-{self.port}")
        return args

    def _spawn(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.root),
            "TMPDIR": str(self.root),
        }
        with (self.root / "ippeveprinter.log").open("wb") as log:
            self._process = subprocess.Popen(
                self._args(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                cwd=self.root,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise TargetError(f"ippeveprinter exited at start-up: {self.log.strip()[-2000:]}")
            listening = f'printer-uri-supported="ipp://localhost:{self.port}/' in self.log
            if listening and self._connectable():
                return
            time.sleep(0.05)
        raise TargetError(f"ippeveprinter did not listen within {self.start_timeout} s")

    def _connectable(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the printer and delete its documents."""
        self.release()
        atexit.unregister(self.stop)
        self._terminate()
        if self.root != Path() and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    # --- documents -------------------------------------------------------

    def documents(self) -> list[ReceivedDocument]:
        """Every document received so far (its command has started), by job id."""
        found = []
        for record in self.spool.glob("*.json"):
            document = self._load(record)
            if document is not None:
                found.append(document)
        return sorted(found, key=lambda d: d.job_id)

    def _load(self, record: Path) -> ReceivedDocument | None:
        try:
            data = json.loads(record.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        env: dict[str, str] = data["env"]
        return ReceivedDocument(
            path=record.with_suffix(""),
            job_id=int(env.get("IPP_JOB_ID", "0")),
            job_name=env.get("IPP_JOB_NAME", ""),
            copies=int(env.get("IPP_COPIES", "1")),
            document_format=env.get("CONTENT_TYPE", ""),
            user=env.get("IPP_JOB_ORIGINATING_USER_NAME", ""),
            status=str(data["status"]),
            attributes=env,
        )

    def wait_for_documents(
        self,
        count: int,
        timeout: float = 20.0,
        *,
        where: Callable[[ReceivedDocument], bool] | None = None,
    ) -> list[ReceivedDocument]:
        """Wait until ``count`` documents (matching ``where``) arrived; TargetError if not."""
        deadline = time.monotonic() + timeout
        while True:
            docs = [d for d in self.documents() if where is None or where(d)]
            if len(docs) >= count:
                return docs
            if time.monotonic() > deadline:
                raise TargetError(f"{len(docs)} of {count} documents after {timeout} s")
            time.sleep(0.05)

    # --- knobs -----------------------------------------------------------

    def _knob(self, name: str) -> Path:
        if self._process is None:
            raise TargetError("the ippeveprinter is not running")
        return self.root / name

    def hold(self) -> None:
        """Keep every job "printing" (processing) until release()."""
        self._knob("hold").touch()

    def release(self) -> None:
        if self.root != Path():
            (self.root / "hold").unlink(missing_ok=True)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.release()

    def abort_next(self, count: int = 1) -> None:
        """The next ``count`` jobs fail: their command exits 1, the job is aborted."""
        self._knob("abort").write_text(str(count))

    # --- IPP -------------------------------------------------------------

    def job_state(self, job_id: int) -> IppJobState:
        """The printer's ``job-state`` for one of its jobs (via ipptool)."""
        test = str(self.root / "get-job.test")
        result = subprocess.run(
            ["ipptool", "-T", "5", "-c", "-d", f"job_id={job_id}", self.uri, test],
            capture_output=True,
            check=False,
            timeout=30,
        )
        lines = result.stdout.decode("utf-8", "replace").split()
        if result.returncode != 0 or len(lines) < 2:
            err = (result.stdout + result.stderr).decode("utf-8", "replace").strip()
            raise TargetError(f"Get-Job-Attributes {job_id} failed: {err}")
        keyword = lines[1].split(",")[0].strip('"')
        return IppJobState[keyword.upper()]
