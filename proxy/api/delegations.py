"""Delegations registered ahead of a job, for clients that cannot send options.

``POST /delegations`` stores who pays for the delegate's NEXT job on a named
proxy printer within a validity window; the intake consumes it once, for a
job that carries no delegation options of its own.
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.db import utcnow
from billing.enums import Role
from billing.models import Delegation, Printer
from proxy.config import DelegationConfig
from proxy.exceptions import Forbidden, NotFound
from proxy.keys import CONFIG, SESSIONS
from proxy.pipeline.delegation import DelegationKind, DelegationRequest, delegation_from_json
from proxy.pipeline.resolve import resolve

from . import serialize
from .auth import require
from .errors import InvalidParameter, json_body, reject_unknown

MAX_VALID_MINUTES = 7 * 24 * 60
MAX_DELEGATE = 255
_OPTION_KEYS = {kind.value for kind in DelegationKind}


async def register(
    session: AsyncSession,
    *,
    delegate: str,
    printer_name: str,
    request: DelegationRequest,
    minutes: int,
    policy: DelegationConfig,
) -> Delegation:
    """Store the delegation for ``delegate``'s next job on the printer (the API's and the
    web form's one path). Unknown printer → NotFound; unknown names (400) and a delegation
    the delegate may not make (403, the rights of SPEC §3) are refused now, not when the
    job arrives."""
    printer = await session.scalar(select(Printer).where(Printer.name == printer_name))
    if printer is None:
        raise NotFound(f"unknown printer {printer_name!r}")
    await resolve(session, request, delegate, policy=policy)
    now = utcnow()
    row = Delegation(
        delegate=delegate,
        printer_id=printer.id,
        options=request.to_options(),
        valid_from=now,
        valid_until=now + timedelta(minutes=minutes),
    )
    session.add(row)
    await session.flush()
    return row


async def create_delegation(request: web.Request) -> web.Response:
    principal = await require(request, Role.ADMIN, Role.USER)
    body = await json_body(request)
    reject_unknown(body, _OPTION_KEYS | {"printer", "delegate", "valid_minutes"})
    delegate = body.get("delegate")
    if principal.own_data_only or delegate is None:
        if delegate is not None and delegate != principal.user_name:
            raise Forbidden("delegate: a user token registers its own delegations")
        delegate = principal.user_name
    if not isinstance(delegate, str) or not delegate:
        raise InvalidParameter("delegate: required for a token not bound to a user")
    if len(delegate) > MAX_DELEGATE:  # the column's size (a CUPS user name is shorter)
        raise InvalidParameter(f"delegate: longer than {MAX_DELEGATE} characters")
    printer_name = body.get("printer")
    if not isinstance(printer_name, str) or not printer_name:
        raise InvalidParameter("printer: the proxy printer name is required")
    minutes = body.get("valid_minutes", 60)
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int)
        or not 1 <= minutes <= MAX_VALID_MINUTES
    ):
        raise InvalidParameter(f"valid_minutes: an integer 1..{MAX_VALID_MINUTES}")
    request_ = delegation_from_json({k: v for k, v in body.items() if k in _OPTION_KEYS})
    async with request.app[SESSIONS]() as session, session.begin():
        row = await register(
            session,
            delegate=delegate,
            printer_name=printer_name,
            request=request_,
            minutes=minutes,
            policy=request.app[CONFIG].delegation,
        )
    return web.json_response(
        {
            "id": row.id,
            "delegate": delegate,
            "printer": printer_name,
            "options": row.options,
            "valid_from": serialize.iso(row.valid_from),
            "valid_until": serialize.iso(row.valid_until),
        },
        status=201,
    )


def routes(prefix: str) -> list[web.RouteDef]:
    return [web.post(f"{prefix}/delegations", create_delegation)]
