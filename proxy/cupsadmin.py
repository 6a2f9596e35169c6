"""CUPS administration for the CLI and the devkit: install the backend, manage queues.

pycups is blocking and a ``cups.Connection`` must not be shared between
threads: every function opens its own connection, and async callers run them
with ``asyncio.to_thread``.  The server is passed to ``cups.Connection``
(``host``/``port``) instead of the process-wide ``cups.setServer``, so
threads that talk to different cupsd instances do not race.
"""

import os
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import cups

from proxy.exceptions import CupsError

BACKEND_NAME = "proxyprint"
BACKEND_MODE = 0o700
DEFAULT_PORT = 631


def backend_script(interpreter: str | None = None) -> str:
    """The installed backend: our module's source behind a ``#!`` line.

    The interpreter runs with ``-I`` (ignore PYTHON* variables and the user's
    site, no current directory on ``sys.path``) and ``-S`` (no site-packages:
    the backend needs only the standard library, and skipping ``site`` halves
    the interpreter's start-up).
    """
    source = resources.files("cups_backend").joinpath("proxyprint.py").read_text("utf-8")
    lines = source.splitlines(keepends=True)
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    shebang = f"#!{interpreter or sys.executable} -IS\n"
    notice = "# Installed by `proxyprint cups install-backend`; edits are overwritten.\n"
    return shebang + notice + "".join(lines)


def install_backend(serverbin: Path, *, interpreter: str | None = None) -> Path:
    """Write ``serverbin/backend/proxyprint`` (mode 0700, owned by root); idempotent.

    A copy, not a wrapper: the module is stdlib-only, so the copy starts
    without importing the project or its dependencies and keeps working when
    the checkout moves; ``install-backend`` again updates it.

    Mode 0700 makes cupsd run it as root (cupsd runs a backend as root when
    it grants no group/other execute permission): root can read the
    root-only TCP secret file and reach an intake socket of any mode, and it
    can execute an interpreter that user ``lp`` cannot (a venv under /root).
    A 0755 backend would run as ``lp``, which needs both the interpreter and
    the intake socket to be reachable by ``lp``.

    The file is written next to its final place and renamed over it, so a job
    starting meanwhile never runs half a script.
    """
    backend_dir = serverbin / "backend"
    backend_dir.mkdir(parents=True, exist_ok=True)
    target = backend_dir / BACKEND_NAME
    content = backend_script(interpreter).encode("utf-8")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{BACKEND_NAME}.", dir=backend_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.chmod(tmp_name, BACKEND_MODE)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def split_server(cups_server: str) -> tuple[str, int]:
    """``/path/cups.sock`` -> (path, 0); ``HOST[:PORT]``, ``[v6]:PORT`` -> (host, port)."""
    if cups_server.startswith("/"):
        return cups_server, 0
    if cups_server.startswith("["):
        host, _, rest = cups_server[1:].partition("]")
        port = rest.removeprefix(":")
    elif cups_server.count(":") == 1:
        host, _, port = cups_server.partition(":")
    else:
        host, port = cups_server, ""
    return host, int(port) if port else DEFAULT_PORT


def _connection(cups_server: str | None) -> Any:
    """A new pycups connection to ``cups_server`` (as CUPS_SERVER; None: the default)."""
    try:
        if cups_server is None:
            return cups.Connection()
        host, port = split_server(cups_server)
        return cups.Connection(host=host, port=port) if port else cups.Connection(host=host)
    except (RuntimeError, ValueError, cups.IPPError, cups.HTTPError) as exc:
        raise CupsError(f"cannot connect to CUPS at {cups_server or 'default'}: {exc}") from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cups.IPPError) and len(exc.args) == 2:
        status, message = exc.args
        return f"{message} (IPP status 0x{status:04x})"
    return str(exc)


def create_queue(
    name: str,
    device_uri: str,
    *,
    cups_server: str | None,
    info: str = "",
    location: str = "",
    error_policy: str | None = None,
) -> None:
    """Create (or update) a raw queue: enabled, accepting jobs, shared.

    Proxy queues use ``error_policy="abort-job"``: the backend's FAILED (a
    print-out aborted at its printer) aborts that job alone; its RETRY (the
    service cannot be reached) keeps the job whatever the policy (with
    ``JobRetryLimit 0`` in cupsd.conf, forever).
    """
    conn = _connection(cups_server)
    try:
        conn.addPrinter(name, device=device_uri, info=info or name, location=location)
        if error_policy is not None:
            conn.setPrinterErrorPolicy(name, error_policy)
        conn.enablePrinter(name)
        conn.acceptJobs(name)
        conn.setPrinterShared(name, True)
    except (cups.IPPError, cups.HTTPError, RuntimeError) as exc:
        raise CupsError(f"cannot create the CUPS queue {name!r}: {_describe(exc)}") from exc


def delete_queue(name: str, *, cups_server: str | None) -> None:
    conn = _connection(cups_server)
    try:
        conn.deletePrinter(name)
    except (cups.IPPError, cups.HTTPError, RuntimeError) as exc:
        raise CupsError(f"cannot delete the CUPS queue {name!r}: {_describe(exc)}") from exc


def cancel_job(job_id: int, *, cups_server: str | None, purge: bool = False) -> None:
    """Cancel a CUPS job (``purge`` also forgets it, like ``cancel -x``)."""
    conn = _connection(cups_server)
    try:
        conn.cancelJob(job_id, purge_job=purge)
    except (cups.IPPError, cups.HTTPError, RuntimeError) as exc:
        raise CupsError(f"cannot cancel CUPS job {job_id}: {_describe(exc)}") from exc


def job_attributes(job_id: int, *, cups_server: str | None) -> dict[str, Any]:
    """All attributes of one job (``job-state``, ``job-printer-state-message``...)."""
    conn = _connection(cups_server)
    try:
        attrs: dict[str, Any] = conn.getJobAttributes(job_id)
    except (cups.IPPError, cups.HTTPError, RuntimeError) as exc:
        raise CupsError(f"cannot read CUPS job {job_id}: {_describe(exc)}") from exc
    return attrs


def printers(*, cups_server: str | None) -> dict[str, dict[str, Any]]:
    """The queues and their attributes (``device-uri``, ``printer-state``...)."""
    conn = _connection(cups_server)
    try:
        result: dict[str, dict[str, Any]] = conn.getPrinters()
    except (cups.IPPError, cups.HTTPError, RuntimeError) as exc:
        raise CupsError(f"cannot list the CUPS queues: {_describe(exc)}") from exc
    return result


def printer_attributes(name: str, *, cups_server: str | None) -> dict[str, Any]:
    """Every IPP attribute of one queue (``printer-is-accepting-jobs``...)."""
    conn = _connection(cups_server)
    try:
        attrs: dict[str, Any] = conn.getPrinterAttributes(name)
    except (cups.IPPError, cups.HTTPError, RuntimeError) as exc:
        raise CupsError(f"cannot read the CUPS queue {name!r}: {_describe(exc)}") from exc
    return attrs
