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

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from proxy.devkit.process import ManagedProcess, port_open, read_log, system_path
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
    # "N" or "N<TAB>title": the next N jobs (whose title contains title)
    path = os.path.join(here, "abort")
    try:
        with open(path, encoding="utf-8") as fh:
            count_text, _, title = fh.read().strip().partition("\t")
        count = int(count_text or "0")
    except (OSError, ValueError):
        return False
    if title and title not in os.environ.get("IPP_JOB_NAME", ""):
        return False
    if count <= 1:
        os.unlink(path)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"{count - 1}\t{title}" if title else str(count - 1))
    return count > 0


record("processing")
deadline = time.monotonic() + 600
while os.path.exists(os.path.join(here, "hold")) and time.monotonic() < deadline:
    time.sleep(0.05)
if take_abort():
    record("aborted")
    print("ERROR: simulated printer fault (proxyprint devkit abort_next)", file=sys.stderr)
    sys.exit(1)
try:  # report_impressions(N): what the printer says it printed, as ATTR: lines tell it
    with open(os.path.join(here, "impressions"), encoding="ascii") as fh:
        print(f"ATTR: job-impressions-completed={int(fh.read().strip())}", file=sys.stderr)
except (OSError, ValueError):
    pass
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
        return job_title(self.job_name)

    @property
    def marker(self) -> str | None:
        """The 12 hex digits of the dispatch uuid in the job-name, if any."""
        match = _MARKER.search(self.job_name)
        return match[1] if match else None


_MARKER = re.compile(r" \(pp-([0-9a-f]{12})\)$")


def job_title(job_name: str) -> str:
    """A job-name as the printer got it, without dispatch's `` (pp-…)`` marker."""
    return _MARKER.sub("", job_name)


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


class IppEvePrinter(ManagedProcess):
    """``with IppEvePrinter() as printer: ... printer.uri ... printer.documents()``."""

    program = "ippeveprinter"
    package = "cups-ipp-utils"
    error = TargetError
    root_prefix = "proxyprint-ippeve-"
    stderr_name = "ippeveprinter.log"
    exited = "ippeveprinter exited at start-up: {output}"
    timed_out = "ippeveprinter did not listen within {timeout} s"

    def __init__(
        self,
        *,
        name: str | None = None,
        formats: tuple[str, ...] = DEFAULT_FORMATS,
        duplex: bool = True,
        color: bool = True,
        start_timeout: float = 20.0,
    ) -> None:
        super().__init__(start_timeout=start_timeout)
        self.name = name
        self.formats = formats
        self.duplex = duplex
        self.color = color

    @property
    def uri(self) -> str:
        return f"ipp://127.0.0.1:{self.port}/ipp/print"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def log(self) -> str:
        """ippeveprinter's own output (-v): requests, jobs, command results."""
        return read_log(self._stderr_path)

    # --- lifecycle (ManagedProcess) --------------------------------------

    def _check(self) -> None:
        super()._check()
        ensure_dnssd()

    def _prepare(self) -> None:
        self.spool.mkdir()
        command = self.root / "command.py"
        command.write_text(f"#!{sys.executable} -IS\n{COMMAND}")
        command.chmod(0o755)
        (self.root / "get-job.test").write_text(GET_JOB_TEST)

    def _args(self) -> list[str]:
        args = ["ippeveprinter", "-v", "-p", str(self.port), "-n", "localhost", "-r", "off"]
        args += ["-d", str(self.spool), "-k", "-c", str(self.root / "command.py")]
        args += ["-f", ",".join(self.formats), "-s", "20,10" if self.color else "20,0"]
        if self.duplex:
            args.append("-2")
        args.append(self.name or f"proxyprint-ippeve-{self.port}")
        return args

    def _process_env(self) -> dict[str, str]:
        root = str(self.root)
        return {"PATH": system_path(), "LANG": "C.UTF-8", "HOME": root, "TMPDIR": root}

    def _cwd(self) -> Path:
        return self.root

    def _ready(self) -> bool:
        listening = f'printer-uri-supported="ipp://localhost:{self.port}/' in self.log
        return listening and port_open(self.port)

    def _port_taken(self, exc: BaseException) -> bool:
        return isinstance(exc, TargetError) and "Unable to" in self.log

    def _start_output(self) -> str:
        return self.log.strip()[-2000:]

    def crash_and_restart(self) -> None:
        """SIGKILL the printer and start it again on the same port: it forgets
        every job and counts its job ids from 1 again (a printer power cycle)."""
        if self._process is None:
            raise TargetError("the ippeveprinter is not running")
        self._process.kill()
        self._process.wait()
        self._spawn()
        self._wait_ready()

    def stop(self) -> None:
        """Stop the printer and delete its documents."""
        self.release()
        super().stop()

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

    def abort_next(self, count: int = 1, *, title: str | None = None) -> None:
        """The next ``count`` jobs fail: their command exits 1, the job is aborted.

        ``title``: only jobs whose name contains it (so that a late job of an
        earlier test on this shared printer does not take the fault).
        """
        text = f"{count}\t{title}" if title else str(count)
        self._knob("abort").write_text(text, encoding="utf-8")

    def report_impressions(self, count: int | None) -> None:
        """Every job from now on reports ``count`` job-impressions-completed (None: stop)."""
        if count is None:
            (self.root / "impressions").unlink(missing_ok=True)
        else:
            self._knob("impressions").write_text(str(count))

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
