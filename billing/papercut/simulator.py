"""A PaperCut stand-in to develop, test and demo against.

Three parts, one SQLite file (``billing.papercut.simdb``):

* an XML-RPC server at ``/rpc/api/xmlrpc`` that answers the Web Services
  methods proxyprint uses, the way PaperCut does: the auth token first,
  user names lower-cased, unknown users and bad tokens as faults,
  adjustments unconditional (balances may go negative), each one a
  ``tbl_account_transaction`` row with its comment;
* the print log (``tbl_printer_usage_log``...), which is what
  ``[papercut] db_url`` points at (``sim.db_url``);
* a CUPS backend for "PaperCut-managed" queues (``billing.papercut.simbackend``,
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
                                      "cost_color", "unauthenticated", "hold_release"}``
``add_shared_account(name, ...)``     ``POST /sim/shared-accounts {"name", "balance"}``
``add_group(name, members)``          ``POST /sim/groups {"name", "members"}``
``balance(user)``                     ``GET /sim/users/{name}/balance``
``adjustments()``                     ``GET /sim/adjustments``
====================================  =========================================

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

Run alone: ``python -m billing.papercut.simulator --port 9191 --db sim.db
--token T [--fail-rate 0.2 --timeout-rate 0.05 --seed 1] [--serverbin DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import json
import os
import random
import signal
import sys
import tempfile
import xmlrpc.client
from collections import Counter, deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from xml.parsers.expat import ExpatError

from aiohttp import web

from billing.exceptions import InvalidAmount
from billing.money import parse_amount
from billing.papercut.client import is_write
from billing.papercut.simbackend import BACKEND_NAME, DEFAULT_SERVER, device_uri
from billing.papercut.simdb import SimDatabase, SimFault, SimNotFound

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
FAULT_PARSE = -32700
FAULT_NO_METHOD = -32601
FAULT_PARAMS = -32602


class FaultMode(enum.StrEnum):
    """What an injected fault does to one XML-RPC call."""

    HTTP_500 = "http-500"  # answered 500 before anything is applied
    HANG = "hang"  # never answered in time; nothing applied
    APPLY_THEN_HANG = "apply-then-hang"  # applied, then never answered in time
    APPLY_THEN_500 = "apply-then-500"  # applied, then answered 500
    MALFORMED = "malformed"  # 200 with a body that is not XML-RPC; nothing applied


class _Number:
    """Marker for an XML-RPC int or double argument."""


NUMBER = _Number()
Spec = tuple[str, tuple[object, ...], int]  # (SimDatabase method, argument types, required)

# The Web Services methods the simulator answers, with PaperCut's argument orders
# (after the auth token).
METHODS: dict[str, Spec] = {
    "api.isUserExists": ("is_user_exists", (str,), 1),
    "api.getUserAccountBalance": ("get_user_account_balance", (str, str), 1),
    "api.adjustUserAccountBalance": ("adjust_user_account_balance", (str, NUMBER, str, str), 3),
    "api.getUserProperty": ("get_user_property", (str, str), 2),
    "api.getUserProperties": ("get_user_properties", (str, list), 2),
    "api.setUserProperty": ("set_user_property", (str, str, str), 3),
    "api.setUserProperties": ("set_user_properties", (str, list), 2),
    "api.listUserAccounts": ("list_user_accounts", (int, int), 2),
    "api.addNewInternalUser": ("add_new_internal_user", (str, str, str, str, str, str), 2),
    "api.deleteExistingUser": ("delete_existing_user", (str, bool), 1),
    "api.lookUpUserNameByCardNo": ("look_up_user_name_by_card_no", (str,), 1),
    "api.isGroupExists": ("is_group_exists", (str,), 1),
    "api.addNewGroup": ("add_new_group", (str,), 1),
    "api.listUserGroups": ("list_user_groups", (int, int), 2),
    "api.getGroupMembers": ("get_group_members", (str, int, int), 3),
    "api.getUserGroups": ("get_user_groups", (str,), 1),
    "api.addUserToGroup": ("add_user_to_group", (str, str), 2),
    "api.removeUserFromGroup": ("remove_user_from_group", (str, str), 2),
    "api.isSharedAccountExists": ("is_shared_account_exists", (str,), 1),
    "api.addNewSharedAccount": ("add_new_shared_account", (str,), 1),
    "api.adjustSharedAccountAccountBalance": (
        "adjust_shared_account_account_balance",
        (str, NUMBER, str),
        3,
    ),
    "api.listPrinters": ("list_printers", (int, int), 2),
    "api.getPrinterProperty": ("get_printer_property", (str, str, str), 3),
    "api.setPrinterProperty": ("set_printer_property", (str, str, str, str), 4),
    "api.getPrinterCostSimple": ("get_printer_cost_simple", (str, str), 2),
    "api.setPrinterCostSimple": ("set_printer_cost_simple", (str, str, NUMBER), 3),
}


def _matches(value: object, kind: object) -> bool:
    if kind is NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    assert isinstance(kind, type)
    return isinstance(value, kind)


def _fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()


def _jsonable(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class PaperCutSimulator(SimDatabase):
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
        super().__init__(db_path)
        self.token = token
        self.host = host
        self.port = port
        self.hang_seconds = hang_seconds
        self.requests: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        self.fail_rate = 0.0
        self.timeout_rate = 0.0
        self.apply_before_timeout = True
        self._rng = random.Random()
        self._scripted: deque[tuple[FaultMode, str | None]] = deque()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    # --- addresses -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

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

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        self.close()

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(XMLRPC_PATH, self._xmlrpc)
        self._add_control_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        self._closing.set()  # ends every hang
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

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
        self._scripted.extend([(FaultMode(mode), method)] * count)

    def clear_faults(self) -> None:
        self._scripted.clear()
        self.set_faults()

    def _fault_for(self, method: str) -> FaultMode | None:
        for i, (mode, only) in enumerate(self._scripted):
            if only is None or only == method:
                del self._scripted[i]
                return mode
        if not (self.fail_rate or self.timeout_rate):
            return None
        draw = self._rng.random()
        if draw < self.fail_rate:
            return FaultMode.HTTP_500
        if draw < self.fail_rate + self.timeout_rate:
            write = is_write(method)
            return (
                FaultMode.APPLY_THEN_HANG if write and self.apply_before_timeout else FaultMode.HANG
            )
        return None

    async def _hang(self) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
        return web.Response(status=504, text="hung")

    # --- XML-RPC ---------------------------------------------------------------------------------

    async def _xmlrpc(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            params, method = xmlrpc.client.loads(body, use_builtin_types=True)
        except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError) as exc:
            return self._xml(_fault(FAULT_PARSE, f"Parse error: {exc}"))
        name = method or ""
        self.requests[name] += 1
        mode = self._fault_for(name)
        if mode is FaultMode.HTTP_500:
            return web.Response(status=500, text="simulated server error")
        if mode is FaultMode.MALFORMED:
            return web.Response(status=200, text="<html>not xml-rpc", content_type="text/xml")
        if mode is FaultMode.HANG:
            return await self._hang()
        answer = self._dispatch(name, params)
        if mode is FaultMode.APPLY_THEN_HANG:
            return await self._hang()
        if mode is FaultMode.APPLY_THEN_500:
            return web.Response(status=500, text="simulated server error after applying")
        return self._xml(answer)

    @staticmethod
    def _xml(body: bytes) -> web.Response:
        return web.Response(body=body, content_type="text/xml", charset="utf-8")

    def _dispatch(self, method: str, params: tuple[object, ...]) -> bytes:
        spec = METHODS.get(method)
        if spec is None:
            return _fault(FAULT_NO_METHOD, f"No such handler: {method}")
        if not params or params[0] != self.token:
            return _fault(1, "Invalid authentication token")
        attr, kinds, required = spec
        args = params[1:]
        if not required <= len(args) <= len(kinds) or not all(
            _matches(v, k) for v, k in zip(args, kinds, strict=False)
        ):
            return _fault(FAULT_PARAMS, f"No method matching arguments for {method}")
        self.applied[method] += 1
        handler: Callable[..., Any] = getattr(self, attr)
        try:
            result = handler(*args)
        except SimFault as fault:
            return _fault(fault.code, fault.message)
        return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=False).encode()

    # --- HTTP controls ---------------------------------------------------------------------------

    def _add_control_routes(self, app: web.Application) -> None:
        routes = app.router
        routes.add_get("/sim/held", self._h_held)
        routes.add_get("/sim/jobs", self._h_jobs)
        routes.add_get("/sim/adjustments", self._h_adjustments)
        routes.add_get("/sim/users/{name}/balance", self._h_balance)
        for action in ("release", "cancel", "deny", "expire", "refund"):
            routes.add_post(f"/sim/{action}", self._h_control)
        routes.add_post("/sim/faults", self._h_faults)
        routes.add_post("/sim/inject", self._h_inject)
        routes.add_post("/sim/users", self._h_add_user)
        routes.add_post("/sim/printers", self._h_add_printer)
        routes.add_post("/sim/shared-accounts", self._h_add_shared)
        routes.add_post("/sim/groups", self._h_add_group)

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except json.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"bad JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="expected a JSON object")
        return data

    @staticmethod
    def _amount(data: dict[str, Any], key: str) -> Decimal:
        value = data.get(key, "0")
        try:
            return parse_amount(str(value), field=key, allow_negative=True)
        except InvalidAmount as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc

    async def _h_held(self, request: web.Request) -> web.Response:
        return web.json_response(_jsonable(self.held_jobs()))

    async def _h_jobs(self, request: web.Request) -> web.Response:
        rows = self.usage_rows(request.query.get("document_name"))
        return web.json_response(_jsonable(rows))

    async def _h_adjustments(self, request: web.Request) -> web.Response:
        return web.json_response(_jsonable(self.adjustments()))

    async def _h_balance(self, request: web.Request) -> web.Response:
        try:
            balance = self.balance(request.match_info["name"])
        except SimFault as exc:
            return self._error(404, "not-found", exc.message)
        return web.json_response({"balance": f"{balance:f}"})

    async def _h_control(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        action = request.path.rsplit("/", 1)[1]
        name = data.get("document_name")
        if not isinstance(name, str) or not name:
            return self._error(400, "bad-request", "document_name is required")
        try:
            if action == "deny":
                reason = data.get("reason")
                if not isinstance(reason, str) or not reason:
                    return self._error(400, "bad-request", "reason is required")
                done = self.deny(name, reason)
            else:
                done = getattr(self, action)(name)
        except SimNotFound as exc:
            return self._error(404, "not-found", str(exc))
        if not done:
            return self._error(409, "not-possible", f"cannot {action} {name!r} in its state")
        return web.json_response({"document_name": name, "done": action})

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

    async def _h_add_user(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        try:
            self.add_user(
                str(data["name"]),
                self._amount(data, "balance"),
                full_name=str(data.get("full_name", "")),
                email=str(data.get("email", "")),
                card=str(data.get("card", "")),
                groups=[str(g) for g in data.get("groups", [])],
            )
        except KeyError:
            return self._error(400, "bad-request", "name is required")
        except SimFault as exc:
            return self._error(409, "conflict", exc.message)
        return web.json_response({"name": str(data["name"]).lower()}, status=201)

    async def _h_add_printer(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        if not data.get("name"):
            return self._error(400, "bad-request", "name is required")
        color = data.get("cost_color")
        self.add_printer(
            str(data.get("server", DEFAULT_SERVER)),
            str(data["name"]),
            cost_mono=self._amount(data, "cost_mono"),
            cost_color=None if color is None else self._amount(data, "cost_color"),
            unauthenticated=bool(data.get("unauthenticated", True)),
            hold_release=bool(data.get("hold_release", False)),
        )
        return web.json_response({"name": data["name"]}, status=201)

    async def _h_add_shared(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        if not data.get("name"):
            return self._error(400, "bad-request", "name is required")
        try:
            self.add_shared_account(str(data["name"]), self._amount(data, "balance"))
        except SimFault as exc:
            return self._error(400, "bad-request", exc.message)
        return web.json_response({"name": data["name"]}, status=201)

    async def _h_add_group(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        if not data.get("name"):
            return self._error(400, "bad-request", "name is required")
        try:
            self.add_group(str(data["name"]), [str(m) for m in data.get("members", [])])
        except SimFault as exc:
            return self._error(400, "bad-request", exc.message)
        return web.json_response({"name": data["name"]}, status=201)


# --- the CUPS backend ---------------------------------------------------------------------


def backend_script(interpreter: str | None = None) -> str:
    """``simbackend.py`` behind a ``#!python -IS`` line (stdlib only, no site-packages)."""
    source = resources.files("billing.papercut").joinpath("simbackend.py").read_text("utf-8")
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
        prog="python -m billing.papercut.simulator", description="A PaperCut simulator."
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
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with sim:
        print(f"PaperCut simulator: {sim.url}", flush=True)
        print(f"print log: {sim.db_url}", flush=True)
        print(f"controls: {sim.base_url}/sim/...", flush=True)
        await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
