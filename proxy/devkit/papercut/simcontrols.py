"""The PaperCut simulator's ``/sim`` endpoints for its database: JSON over the test controls.

``SimControls`` adds to ``SimDatabase`` the HTTP form of its helpers, for a
simulator run alone (``python -m proxy.devkit.papercut.simulator``): read the
held jobs, the print log, the adjustments and a balance; release, cancel,
deny, expire or refund a job; add users, printers, shared accounts and
groups. Amounts travel as strings. The fault controls (``/sim/faults``,
``/sim/inject``) are the server's, in ``proxy.devkit.papercut.simulator``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from billing.exceptions import InvalidAmount
from billing.money import parse_amount
from proxy.devkit.papercut.simbackend import DEFAULT_SERVER
from proxy.devkit.papercut.simdb import SimDatabase, SimFault, SimNotFound

__all__ = ["SimControls"]


def _jsonable(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class SimControls(SimDatabase):
    """The database helpers as ``/sim`` HTTP endpoints (``_add_control_routes``)."""

    def _add_control_routes(self, app: web.Application) -> None:
        routes = app.router
        routes.add_get("/sim/held", self._h_held)
        routes.add_get("/sim/jobs", self._h_jobs)
        routes.add_get("/sim/adjustments", self._h_adjustments)
        routes.add_get("/sim/users/{name}/balance", self._h_balance)
        for action in ("release", "cancel", "deny", "expire", "refund"):
            routes.add_post(f"/sim/{action}", self._h_control)
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

    async def _add_named(
        self, request: web.Request, add: Callable[[dict[str, Any]], None]
    ) -> web.Response:
        """A ``POST`` that adds a thing with a required ``name``; a ``SimFault`` answers 400."""
        data = await self._body(request)
        if not data.get("name"):
            return self._error(400, "bad-request", "name is required")
        try:
            add(data)
        except SimFault as exc:
            return self._error(400, "bad-request", exc.message)
        return web.json_response({"name": data["name"]}, status=201)

    async def _h_add_printer(self, request: web.Request) -> web.Response:
        def add(data: dict[str, Any]) -> None:
            color = data.get("cost_color")
            self.add_printer(
                str(data.get("server", DEFAULT_SERVER)),
                str(data["name"]),
                cost_mono=self._amount(data, "cost_mono"),
                cost_color=None if color is None else self._amount(data, "cost_color"),
                unauthenticated=bool(data.get("unauthenticated", True)),
                hold_release=bool(data.get("hold_release", False)),
                charge_account=(
                    None if data.get("charge_account") is None else str(data["charge_account"])
                ),
            )

        return await self._add_named(request, add)

    async def _h_add_shared(self, request: web.Request) -> web.Response:
        return await self._add_named(
            request,
            lambda data: self.add_shared_account(str(data["name"]), self._amount(data, "balance")),
        )

    async def _h_add_group(self, request: web.Request) -> web.Response:
        return await self._add_named(
            request,
            lambda data: self.add_group(
                str(data["name"]), [str(m) for m in data.get("members", [])]
            ),
        )
