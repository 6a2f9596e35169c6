"""The lifecycle the devkit's private daemons share (``PrivateCupsd``, ``IppEvePrinter``).

``ManagedProcess.start()`` checks the program is installed, makes a temporary
root directory, lets the subclass lay it out, then starts the program on a
free 127.0.0.1 port and waits until it is ready; when someone took the port
meanwhile it tries another (``START_ATTEMPTS`` in all).  ``stop()`` (also at
exit, and on leaving ``with``) terminates the program and removes the root.
"""

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from proxy.exceptions import ProxyPrintError

START_ATTEMPTS = 3


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out; callers retry if someone takes it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def read_log(path: Path) -> str:
    """A log file's text; "" before it exists (or after ``stop()`` removed it)."""
    try:
        return path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""


def system_path() -> str:
    """PATH for a daemon started with a minimal environment."""
    return os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")


class ManagedProcess(ABC):
    """A daemon in its own temporary ``root``: ``with`` it, or start()/stop()."""

    program: ClassVar[str]  # the executable, as shutil.which finds it
    package: ClassVar[str]  # the Debian package that installs it
    error: ClassVar[type[ProxyPrintError]]  # what start() raises
    root_prefix: ClassVar[str]  # of the temporary root directory's name
    stderr_name: ClassVar[str]  # the program's stderr, relative to root
    exited: ClassVar[str]  # message when it exits at start-up; {output}
    timed_out: ClassVar[str]  # message when it is not ready in time; {timeout}, {output}

    def __init__(self, *, start_timeout: float) -> None:
        self.start_timeout = start_timeout
        self.root = Path()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # --- what a subclass says --------------------------------------------

    def _check(self) -> None:
        """Before anything is made: raise ``error`` if the program cannot run here."""
        if shutil.which(self.program) is None:
            raise self.error(f"{self.program} is not installed (Debian package {self.package})")

    @abstractmethod
    def _prepare(self) -> None:
        """Lay out ``root`` (it exists, empty)."""

    @abstractmethod
    def _args(self) -> list[str]:
        """The command line, for ``port``."""

    @abstractmethod
    def _process_env(self) -> dict[str, str]:
        """The program's whole environment."""

    def _cwd(self) -> Path | None:
        return None  # the caller's

    @abstractmethod
    def _ready(self) -> bool:
        """It serves (polled while it starts); may raise."""

    def _port_taken(self, exc: BaseException) -> bool:
        """``exc``, raised while it started, says someone else had ``port``."""
        return False

    def _start_output(self) -> str:
        """What the program said, for the start-up errors."""
        return read_log(self._stderr_path)

    # --- lifecycle -------------------------------------------------------

    @property
    def _stderr_path(self) -> Path:
        return self.root / self.stderr_name

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

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
        """Lay out the directory, start the program and wait until it is ready."""
        if self._process is not None:
            return  # already started (start() then "with")
        self._check()
        self.root = Path(tempfile.mkdtemp(prefix=self.root_prefix))
        try:
            self._prepare()
            self._start_listening()
            atexit.register(self.stop)  # no orphan if the caller forgets stop()
        except BaseException:
            self.stop()
            raise

    def _start_listening(self) -> None:
        """Start on a free port; on another one if that one was taken meanwhile."""
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            self._spawn()
            try:
                self._wait_ready()
            except BaseException as exc:
                self._terminate()
                if attempt == START_ATTEMPTS or not self._port_taken(exc):
                    raise
            else:
                return

    def _spawn(self) -> None:
        with self._stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(
                self._args(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self._process_env(),
                cwd=self._cwd(),
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise self.error(self.exited.format(output=self._start_output()))
            if self._ready():
                return
            time.sleep(0.05)
        output = self._start_output()
        raise self.error(self.timed_out.format(timeout=self.start_timeout, output=output))

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
        """Stop the program and remove the directory."""
        atexit.unregister(self.stop)
        self._terminate()
        if self.root != Path() and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
