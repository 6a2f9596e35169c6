"""CUPS administration for the CLI and the devkit: install the backend, manage queues.

pycups is blocking and a ``cups.Connection`` must not be shared between
threads: every function opens its own connection, and async callers run them
with ``asyncio.to_thread``.  The server is passed to ``cups.Connection``
(``host``/``port``) instead of the process-wide ``cups.setServer``, so
threads that talk to different cupsd instances do not race.
"""

import importlib.util
import os
import py_compile
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


MODULE_DIR = "proxyprint"  # in ServerBin, next to backend/ and filter/
MODULE_NAME = "proxyprint_backend"


def backend_script(module_dir: Path, interpreter: str | None = None) -> str:
    """The installed backend: a launcher that imports our module from ``module_dir``.

    The module is imported, not run as a script, so its byte code comes from
    ``__pycache__`` (written at install): a script is compiled at every start,
    about 6 ms of each job's hand-off, the cost of the module's 1,200 lines.
    The interpreter runs with ``-I`` (ignore PYTHON* variables and the user's
    site, no current directory on ``sys.path``) and ``-S`` (no site-packages:
    the backend needs only the standard library, and skipping ``site`` halves
    the interpreter's start-up).
    """
    return (
        f"#!{interpreter or sys.executable} -IS\n"
        "# Installed by `proxyprint cups install-backend`; edits are overwritten.\n"
        "import sys\n"
        f"sys.path.insert(0, {str(module_dir)!r})\n"
        f"from {MODULE_NAME} import main\n"
        "sys.exit(main())\n"
    )


def _replace(target: Path, content: bytes, mode: int) -> None:
    """Write ``target`` next to its place and rename it over: a job starting
    meanwhile sees the old file or the new one, never half of one."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def install_backend(serverbin: Path, *, interpreter: str | None = None) -> Path:
    """Write ``serverbin/backend/proxyprint`` (mode 0700, owned by root) and its
    module ``serverbin/proxyprint/proxyprint_backend.py``, compiled; idempotent.

    A copy, not a wrapper of the project: the module is stdlib-only, so the
    backend starts without importing the project or its dependencies and
    keeps working when the checkout moves; ``install-backend`` again updates
    it. The module directory is 0755 and its files 0644, owned by the
    installer (root): the backend runs as root, so nobody else may write the
    code it imports. Should the byte code not match the interpreter (Python
    upgraded), the import compiles the source as a script would.

    Mode 0700 makes cupsd run it as root (cupsd runs a backend as root when
    it grants no group/other execute permission): root can read the
    root-only TCP secret file and reach an intake socket of any mode, and it
    can execute an interpreter that user ``lp`` cannot (a venv under /root).
    A 0755 backend would run as ``lp``, which needs both the interpreter and
    the intake socket to be reachable by ``lp``.
    """
    module_dir = serverbin / MODULE_DIR
    module_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(module_dir, 0o755)
    source = resources.files("cups_backend").joinpath("proxyprint.py").read_bytes()
    module = module_dir / f"{MODULE_NAME}.py"
    _replace(module, source, 0o644)
    cache = Path(importlib.util.cache_from_source(str(module)))
    cache.parent.mkdir(mode=0o755, exist_ok=True)
    compiled = cache.parent / f".{cache.name}.new"
    py_compile.compile(str(module), cfile=str(compiled), doraise=True)
    os.chmod(compiled, 0o644)
    os.replace(compiled, cache)
    backend_dir = serverbin / "backend"
    backend_dir.mkdir(parents=True, exist_ok=True)
    target = backend_dir / BACKEND_NAME
    _replace(target, backend_script(module_dir, interpreter).encode("utf-8"), BACKEND_MODE)
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
