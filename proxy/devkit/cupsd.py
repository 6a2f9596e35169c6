"""A private cupsd for the tests and ``proxyprint demo``.

``PrivateCupsd`` runs ``cupsd -f`` on its own configuration in a temporary
directory: a Unix socket there plus a free 127.0.0.1 port, no browsing, no
authentication for local clients, every path absolute, and a private
ServerBin.  The ServerBin symlinks the system's ``filter``, ``daemon``,
``driver``... directories and holds ``backend/`` with symlinks to the system
backends plus ours, installed by ``proxy.cupsadmin.install_backend``.  The
system cupsd, its queues and its files are never touched.

It must run as root (cupsd drops to user ``lp`` for filters and backends;
the backends symlinked from the system run as ``lp``, ours as root).  pycups
is blocking: async callers use ``asyncio.to_thread``.
"""

import os
import re
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from proxy import cupsadmin
from proxy.devkit.process import ManagedProcess, free_port, port_open, read_log, system_path
from proxy.exceptions import CupsError
from proxy.targets.base import IppJobState

SYSTEM_SERVERBIN = Path("/usr/lib/cups")
SERVERBIN_LINKS = ("filter", "daemon", "cgi-bin", "driver", "monitor", "notifier", "command")
REQUEST_ID = re.compile(r"request id is (?P<queue>\S+)-(?P<job>\d+)")


class _PortTaken(CupsError):
    """Someone bound the free port between free_port() and cupsd's listen."""


TERMINAL_STATES = frozenset({IppJobState.CANCELED, IppJobState.ABORTED, IppJobState.COMPLETED})


def cupsd_conf(
    *, port: int, socket_path: Path, retry_interval: int, kill_delay: int, log_level: str
) -> str:
    """cupsd.conf: local clients may do everything without authentication."""
    return f"""\
LogLevel {log_level}
MaxLogSize 0
Listen 127.0.0.1:{port}
Listen {socket_path}
Browsing No
BrowseLocalProtocols none
DefaultShared No
WebInterface No
# proxy queues retry forever: JobRetryLimit 0 means no limit
JobRetryInterval {retry_interval}
JobRetryLimit 0
JobKillDelay {kill_delay}
MaxJobs 0
MaxJobsPerPrinter 0
MaxJobsPerUser 0
PreserveJobHistory Yes
PreserveJobFiles Yes
DefaultAuthType Basic
<Location />
  Order allow,deny
  Allow from all
</Location>
<Policy default>
  JobPrivateAccess all
  JobPrivateValues none
  SubscriptionPrivateAccess all
  SubscriptionPrivateValues none
  <Limit All>
    Order deny,allow
  </Limit>
</Policy>
"""


def cups_files_conf(root: Path, env: Mapping[str, str]) -> str:
    """cups-files.conf: every file and directory inside ``root``."""
    lines = [
        f"ServerRoot {root / 'etc'}",
        f"ServerBin {root / 'serverbin'}",
        f"RequestRoot {root / 'spool'}",
        f"TempDir {root / 'spool' / 'tmp'}",
        f"CacheDir {root / 'cache'}",
        f"StateDir {root / 'state'}",
        f"AccessLog {root / 'log' / 'access_log'}",
        f"ErrorLog {root / 'log' / 'error_log'}",
        f"PageLog {root / 'log' / 'page_log'}",
        f"Printcap {root / 'state' / 'printcap'}",
        f"ServerKeychain {root / 'etc' / 'ssl'}",
        "CreateSelfSignedCerts no",
        "FileDevice Yes",
        "User lp",
        "Group lp",
        "SystemGroup root",
        "LogFileGroup root",
    ]
    lines += [f"SetEnv {name} {value}" for name, value in env.items()]
    return "\n".join(lines) + "\n"


class PrivateCupsd(ManagedProcess):
    """A private cupsd; ``with PrivateCupsd() as cupsd: ...`` or start()/stop().

    stop() stops cupsd (it stops its jobs' processes) and removes the directory.
    """

    program = "cupsd"
    package = "cups-daemon"
    error = CupsError
    root_prefix = "proxyprint-cupsd-"
    stderr_name = "log/cupsd.stderr"
    exited = "cupsd exited at start-up:\n{output}"
    timed_out = "cupsd did not answer within {timeout} s:\n{output}"

    def __init__(
        self,
        *,
        retry_interval: int = 2,
        kill_delay: int = 5,
        log_level: str = "debug",
        env: Mapping[str, str] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        super().__init__(start_timeout=start_timeout)
        self.retry_interval = retry_interval
        self.kill_delay = kill_delay
        self.log_level = log_level
        self.backend_env = dict(env or {})

    # --- paths -----------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.root / "cups.sock"

    @property
    def serverbin(self) -> Path:
        return self.root / "serverbin"

    @property
    def error_log_path(self) -> Path:
        return self.root / "log" / "error_log"

    @property
    def error_log(self) -> str:
        """The whole error_log (LogLevel debug): what cupsd and each backend said."""
        return read_log(self.error_log_path)

    @property
    def server(self) -> str:
        """The value for CUPS_SERVER (and ``cups_server=`` of proxy.cupsadmin)."""
        return str(self.socket_path)

    def env(self) -> dict[str, str]:
        """os.environ plus CUPS_SERVER for the command-line tools (lp, lpstat...)."""
        return {**os.environ, "CUPS_SERVER": self.server}

    # --- lifecycle (ManagedProcess) --------------------------------------

    def _check(self) -> None:
        super()._check()
        if os.geteuid() != 0:
            raise CupsError("a private cupsd must run as root")

    def _prepare(self) -> None:
        # Backends run as lp and must traverse to ServerBin and the spool.
        self.root.chmod(0o755)
        for sub in ("etc", "etc/ppd", "etc/ssl", "spool/tmp", "cache", "state", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
        backend_dir = self.serverbin / "backend"
        backend_dir.mkdir(parents=True, mode=0o755)
        for name in SERVERBIN_LINKS:
            if (SYSTEM_SERVERBIN / name).is_dir():
                (self.serverbin / name).symlink_to(SYSTEM_SERVERBIN / name)
        for backend in (SYSTEM_SERVERBIN / "backend").iterdir():
            (backend_dir / backend.name).symlink_to(backend)
        (backend_dir / cupsadmin.BACKEND_NAME).unlink(missing_ok=True)
        cupsadmin.install_backend(self.serverbin)
        (self.root / "etc" / "cups-files.conf").write_text(
            cups_files_conf(self.root, self.backend_env)
        )

    def _spawn(self) -> None:
        text = cupsd_conf(
            port=self.port,
            socket_path=self.socket_path,
            retry_interval=self.retry_interval,
            kill_delay=self.kill_delay,
            log_level=self.log_level,
        )
        (self.root / "etc" / "cupsd.conf").write_text(text)
        super()._spawn()

    def _args(self) -> list[str]:
        etc = self.root / "etc"
        return ["cupsd", "-f", "-c", str(etc / "cupsd.conf"), "-s", str(etc / "cups-files.conf")]

    def _process_env(self) -> dict[str, str]:
        return {"PATH": system_path(), "LANG": "C"}

    def _ready(self) -> bool:
        """cupsd serves its socket and listens on our port (it starts without it).

        cupsd opens every listener before it serves any, and logs a failed one
        at level error, so once the socket answers the log tells whether the
        port was taken meanwhile (LogLevel must be error or more verbose).
        """
        try:
            cupsadmin.printers(cups_server=self.server)
        except CupsError:
            return False
        if f"Unable to open listen socket for address 127.0.0.1:{self.port} " in self.error_log:
            raise _PortTaken(f"port {self.port} was taken before cupsd could listen")
        return port_open(self.port)

    def _port_taken(self, exc: BaseException) -> bool:
        return isinstance(exc, _PortTaken)

    def _start_output(self) -> str:
        stderr = self._stderr_path.read_text("utf-8", "replace")
        lines = [ln for ln in self.error_log.splitlines() if ln[:2] in ("E ", "C ", "A ", "X ")]
        return (stderr + "\n".join(lines[-20:])).strip()

    # --- queues and jobs -------------------------------------------------

    def add_queue(self, name: str, device_uri: str, *, info: str = "") -> None:
        """A raw queue (no PPD: the backend gets the document as sent)."""
        cupsadmin.create_queue(name, device_uri, cups_server=self.server, info=info)

    def lp(
        self,
        queue: str,
        file: Path | None,
        *,
        user: str,
        options: Mapping[str, str] | Iterable[str] = (),
        title: str | bytes | None = None,
        copies: int | None = None,
        stdin: bytes | None = None,
    ) -> int:
        """Print like a user with ``lp``; returns the CUPS job id.

        ``options`` is ``{"delegators": "alice,bob:2"}`` or ``["delegators=alice"]``;
        without ``file`` the document is ``stdin``.  A bytes title is passed
        as is (to test titles that are not UTF-8).
        """
        args: list[str | bytes] = ["lp", "-U", user, "-d", queue]
        pairs = (
            [f"{k}={v}" for k, v in options.items()] if isinstance(options, Mapping) else options
        )
        for option in pairs:
            args += ["-o", option]
        if title is not None:
            args += ["-t", title]
        if copies is not None:
            args += ["-n", str(copies)]
        args.append(str(file) if file is not None else "-")
        result = subprocess.run(
            args, input=stdin, capture_output=True, env=self.env(), timeout=30, check=False
        )
        out = result.stdout.decode("utf-8", "replace")
        match = REQUEST_ID.search(out)
        if result.returncode != 0 or match is None:
            err = result.stderr.decode("utf-8", "replace")
            raise CupsError(f"lp failed ({result.returncode}): {out}{err}".strip())
        return int(match["job"])

    def job_attributes(self, job_id: int) -> dict[str, object]:
        return cupsadmin.job_attributes(job_id, cups_server=self.server)

    def job_state(self, job_id: int) -> IppJobState:
        state = self.job_attributes(job_id)["job-state"]
        return IppJobState(int(str(state)))

    def wait_job(
        self, job_id: int, states: Collection[IppJobState], timeout: float = 20.0
    ) -> IppJobState:
        """Poll until the job is in one of ``states``; CupsError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state in states:
                return state
            if time.monotonic() >= deadline:
                wanted = ", ".join(s.name for s in states)
                raise CupsError(f"job {job_id} is {state.name}, not {wanted}, after {timeout} s")
            time.sleep(0.05)

    def cancel(self, job_id: int) -> None:
        """Cancel a job like an operator does, with the ``cancel`` command."""
        result = subprocess.run(
            ["cancel", str(job_id)], capture_output=True, env=self.env(), timeout=30, check=False
        )
        if result.returncode != 0:
            raise CupsError(f"cancel {job_id} failed: {result.stderr.decode(errors='replace')}")

    def lpinfo_devices(self) -> list[str]:
        """``lpinfo -v``: the device lines the backends report."""
        result = subprocess.run(
            ["lpinfo", "-v"], capture_output=True, env=self.env(), timeout=60, check=False
        )
        if result.returncode != 0:
            raise CupsError(f"lpinfo -v failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode("utf-8", "replace").splitlines()


# free_port moved to proxy.devkit.process; the tests and benchmarks import it from here.
__all__ = ["TERMINAL_STATES", "PrivateCupsd", "cups_files_conf", "cupsd_conf", "free_port"]
