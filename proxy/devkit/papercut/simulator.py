"""A PaperCut stand-in to develop, test and demo against.

Three parts, one SQLite file (``proxy.devkit.papercut.simdb``):

* an XML-RPC server at ``/rpc/api/xmlrpc`` that answers the Web Services
  methods proxyprint uses, the way PaperCut does: the auth token first,
  user names lower-cased, unknown users and bad tokens as faults,
  adjustments unconditional (balances may go negative), each one a
  ``tbl_account_transaction`` row with its comment;
* the print log (``tbl_printer_usage_log``...), which is what
  ``[papercut] db_url`` points at (``sim.db_url``);
* a CUPS backend for "PaperCut-managed" queues (``proxy.devkit.papercut.simbackend``,
  installed with ``install_papercut_backend``), which logs every job it gets.

Controls, as methods and as HTTP endpoints (JSON; amounts as strings):

====================================  =========================================
``held_jobs()``                       ``GET /sim/held``
``usage_rows()``                      ``GET /sim/jobs[?document_name=]``
``release(name)``                     ``POST /sim/release {"document_name"}``
``cancel(name)``                      ``POST /sim/cancel {"document_name"}``
``deny(name, reason)``                ``POST /sim/deny {"document_name", "reason"}``
``expire(name)``                      ``POST /sim/expire {"document_name"}``
``refund(name)``                      ``POST /sim/refund {"document_name"}``
``set_faults(fail, timeout, seed)``   ``POST /sim/faults {"fail_rate", "timeout_rate",
                                      "seed", "apply_before_timeout"}``
``inject(mode, method=, count=)``     ``POST /sim/inject {"mode", "method", "count"}``
``add_user(name, balance, ...)``      ``POST /sim/users {"name", "balance", "full_name",
                                      "email", "card", "groups"}``
``add_printer(server, name, ...)``    ``POST /sim/printers {"server", "name", "cost_mono",
                                      "cost_color", "unauthenticated", "hold_release",
                                      "charge_account"}``
``add_shared_account(name, ...)``     ``POST /sim/shared-accounts {"name", "balance"}``
``add_group(name, members)``          ``POST /sim/groups {"name", "members"}``
``balance(user)``                     ``GET /sim/users/{name}/balance``
``adjustments()``                     ``GET /sim/adjustments``
``set_directory(groups=|program=)``   (Python only) the user directory source
``set_printer_charge_account(...)``   (Python only) the account a printer charges
====================================  =========================================

Charging, groups and background tasks follow PaperCut: a printed job's
``usage_cost`` is taken from its charged account (``simbackend``);
``addNewGroup`` needs a group the directory source offers, and it and the
user/group syncs run as background tasks (``getTaskStatus``; ``task_seconds``
each) (``simdirectory``).

A control on a document the log does not have answers 404; one on a job that
is no longer held answers 409 (the method returns False). The ``/sim``
endpoints take no token: the simulator listens on 127.0.0.1 by default.

Faults: ``set_faults(fail_rate, timeout_rate, seed)`` answers that share of
XML-RPC calls with HTTP 500 (nothing applied) or with a hang longer than any
client timeout. A timed-out *write* is applied first and then hangs
(``apply_before_timeout=True``, the default): the client sees a timeout for a
call that took effect, which is what exactly-once delivery must survive.
``inject(mode)`` scripts the next matching calls instead (see ``FaultMode``).
A hang ends when ``hang_seconds`` pass or the simulator stops.

The parts: ``simstore`` (the tables), ``simmethods`` (the Web Services
methods' data operations), ``simdirectory`` (the directory source and the
background tasks), ``simdb`` (``SimDatabase``: those plus the test
controls), ``simcontrols`` (the controls over HTTP), ``simrpc`` (the XML-RPC
calls and answers); this module serves them (``PaperCutSimulator``, on
``proxy.devkit.simserver.SimServer``), installs the backend and runs it alone.

Run alone: ``python -m proxy.devkit.papercut.simulator --port 9191 --db sim.db
--token T [--fail-rate 0.2 --timeout-rate 0.05 --seed 1] [--serverbin DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import os
import random
import sys
import tempfile
import xmlrpc.client
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from xml.parsers.expat import ExpatError

from aiohttp import web

from billing.papercut.client import is_write
from proxy.devkit.papercut import simrpc
from proxy.devkit.papercut.simbackend import BACKEND_NAME, DEFAULT_SERVER, device_uri
from proxy.devkit.papercut.simcontrols import SimControls
from proxy.devkit.papercut.simdb import SimDatabase
from proxy.devkit.simserver import SimServer

__all__ = [
    "BACKEND_NAME",
    "DEFAULT_SERVER",
    "FaultMode",
    "PaperCutSimulator",
    "device_uri",
    "install_papercut_backend",
    "main",
]

XMLRPC_PATH = "/rpc/api/xmlrpc"
BACKEND_MODE = 0o700


class FaultMode(enum.StrEnum):
    """What an injected fault does to one XML-RPC call."""

    HTTP_500 = "http-500"  # answered 500 before anything is applied
    HANG = "hang"  # never answered in time; nothing applied
    APPLY_THEN_HANG = "apply-then-hang"  # applied, then never answered in time
    APPLY_THEN_500 = "apply-then-500"  # applied, then answered 500
    MALFORMED = "malformed"  # 200 with a body that is not XML-RPC; nothing applied


class PaperCutSimulator(SimServer[FaultMode], SimControls):
    """``async with PaperCutSimulator(db_path, token="T") as sim: sim.url ...``.

    The database helpers (``add_user``, ``release``, ``balance``...) are
    inherited from ``SimDatabase`` and work before ``start()`` too.
    ``requests`` counts XML-RPC requests per method (faulted ones included),
    ``applied`` the calls that reached the database.
    """

    def __init__(
        self,
        db_path: Path | str,
        *,
        token: str = "token",
        host: str = "127.0.0.1",
        port: int = 0,
        hang_seconds: float = 30.0,
    ) -> None:
        SimControls.__init__(self, db_path)
        SimServer.__init__(self, host=host, port=port, hang_seconds=hang_seconds)
        self.token = token
        self.applied: Counter[str] = Counter()
        self.fail_rate = 0.0
        self.timeout_rate = 0.0
        self.apply_before_timeout = True
        self._rng = random.Random()

    @property
    def url(self) -> str:
        """The XML-RPC endpoint: ``[papercut] url``."""
        return self.base_url + XMLRPC_PATH

    @property
    def db_url(self) -> str:
        """The print log for SQLAlchemy: ``[papercut] db_url``."""
        return f"sqlite+aiosqlite:///{self.path.resolve()}"

    def device_uri(self, printer: str, server: str = DEFAULT_SERVER) -> str:
        """The device URI of a CUPS queue that prints to ``server\\printer`` here."""
        return device_uri(self.path.resolve(), printer, server)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(XMLRPC_PATH, self._xmlrpc)
        self._add_control_routes(app)
        app.router.add_post("/sim/faults", self._h_faults)
        app.router.add_post("/sim/inject", self._h_inject)
        return app

    def _after_stop(self) -> None:
        self.close()

    # --- faults ----------------------------------------------------------------------------

    def set_faults(
        self,
        fail_rate: float = 0.0,
        timeout_rate: float = 0.0,
        seed: int | None = None,
        *,
        apply_before_timeout: bool = True,
    ) -> None:
        """Answer a share of calls with HTTP 500 / a hang; seeded for repeatable runs."""
        if fail_rate < 0 or timeout_rate < 0 or fail_rate + timeout_rate > 1:
            raise ValueError("fail_rate and timeout_rate are shares that add up to at most 1")
        self.fail_rate, self.timeout_rate = fail_rate, timeout_rate
        self.apply_before_timeout = apply_before_timeout
        self._rng = random.Random(seed)

    def inject(self, mode: FaultMode, *, method: str | None = None, count: int = 1) -> None:
        """The next ``count`` calls (of ``method``, or any) get ``mode``; before random faults."""
        self._script(FaultMode(mode), method, count)

    def _fault_for(self, method: str) -> FaultMode | None:
        mode = self._next_scripted(lambda only: only is None or only == method)
        if mode is not None:
            return mode
        return self._random_fault(
            self._rng,
            (self.fail_rate, lambda: FaultMode.HTTP_500),
            (self.timeout_rate, lambda: self._timeout_mode(method)),
        )

    def _timeout_mode(self, method: str) -> FaultMode:
        """A write is applied before it hangs unless ``apply_before_timeout`` is off."""
        write = is_write(method)
        return FaultMode.APPLY_THEN_HANG if write and self.apply_before_timeout else FaultMode.HANG

    # --- XML-RPC ---------------------------------------------------------------------------------

    async def _xmlrpc(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            params, method = xmlrpc.client.loads(body, use_builtin_types=True)
        except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError) as exc:
            return self._xml(simrpc.fault(simrpc.FAULT_PARSE, f"Parse error: {exc}"))
        name = method or ""
        self.requests[name] += 1
        mode = self._fault_for(name)
        if mode is FaultMode.HTTP_500:
            return web.Response(status=500, text="simulated server error")
        if mode is FaultMode.MALFORMED:
            return web.Response(status=200, text="<html>not xml-rpc", content_type="text/xml")
        if mode is FaultMode.HANG:
            return await self._hang(web.Response(status=504, text="hung"))
        answer = self._dispatch(name, params)
        if mode is FaultMode.APPLY_THEN_HANG:
            return await self._hang(web.Response(status=504, text="hung"))
        if mode is FaultMode.APPLY_THEN_500:
            return web.Response(status=500, text="simulated server error after applying")
        return self._xml(answer)

    @staticmethod
    def _xml(body: bytes) -> web.Response:
        return web.Response(body=body, content_type="text/xml", charset="utf-8")

    def _dispatch(self, method: str, params: tuple[object, ...]) -> bytes:
        refused = simrpc.refusal(method, params, self.token)
        if refused is not None:
            return refused
        self.applied[method] += 1
        return simrpc.apply(self, method, params[1:])

    # --- the fault controls --------------------------------------------------------------------

    async def _h_faults(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        try:
            self.set_faults(
                float(data.get("fail_rate", 0)),
                float(data.get("timeout_rate", 0)),
                data.get("seed"),
                apply_before_timeout=bool(data.get("apply_before_timeout", True)),
            )
        except (TypeError, ValueError) as exc:
            return self._error(400, "bad-request", str(exc))
        return web.json_response({"fail_rate": self.fail_rate, "timeout_rate": self.timeout_rate})

    async def _h_inject(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        try:
            self.inject(
                FaultMode(str(data.get("mode"))),
                method=data.get("method"),
                count=int(data.get("count", 1)),
            )
        except (TypeError, ValueError) as exc:
            return self._error(400, "bad-request", str(exc))
        return web.json_response({"scripted": len(self._scripted)})

    def _banner(self) -> Sequence[str]:
        return (
            f"PaperCut simulator: {self.url}",
            f"print log: {self.db_url}",
            f"controls: {self.base_url}/sim/...",
        )


# --- the CUPS backend ---------------------------------------------------------------------


def backend_script(interpreter: str | None = None) -> str:
    """``simbackend.py`` behind a ``#!python -IS`` line (stdlib only, no site-packages)."""
    source = resources.files("proxy.devkit.papercut").joinpath("simbackend.py").read_text("utf-8")
    shebang = f"#!{interpreter or sys.executable} -IS\n"
    notice = "# PaperCut simulator backend, installed by proxyprint's test kit.\n"
    return shebang + notice + source


def install_papercut_backend(
    serverbin: Path, sim_db_path: Path | None = None, *, interpreter: str | None = None
) -> Path:
    """Write ``serverbin/backend/papercut-sim`` (mode 0700: cupsd runs it as root).

    With ``sim_db_path`` the simulator's schema is created there too, so
    queues pointing at it (``device_uri``) can log jobs before the simulator
    first starts. Idempotent; the file is renamed into place.
    """
    if sim_db_path is not None:
        SimDatabase(sim_db_path).close()
    backend_dir = serverbin / "backend"
    backend_dir.mkdir(parents=True, exist_ok=True)
    target = backend_dir / BACKEND_NAME
    fd, tmp_name = tempfile.mkstemp(prefix=f".{BACKEND_NAME}.", dir=backend_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(backend_script(interpreter).encode("utf-8"))
        os.chmod(tmp_name, BACKEND_MODE)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


# --- running alone -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.devkit.papercut.simulator", description="A PaperCut simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9191)
    parser.add_argument("--db", type=Path, required=True, help="the SQLite file (print log)")
    parser.add_argument("--token", required=True, help="the web services auth token")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--serverbin", type=Path, help="also install the CUPS backend there")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    if args.serverbin is not None:
        path = install_papercut_backend(args.serverbin, args.db)
        print(f"backend installed: {path}", flush=True)
    sim = PaperCutSimulator(
        args.db, token=args.token, host=args.host, port=args.port, hang_seconds=args.hang_seconds
    )
    sim.set_faults(args.fail_rate, args.timeout_rate, args.seed)
    await sim.serve_until_signalled()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
