"""NFC: card registration (admin) and reader taps (the reader's own token).

``POST /readers/{reader_id}/tap`` is not authenticated with an API token but
with the reader's token (``proxyprint reader add`` prints it): no or a
malformed/unknown token → 401; a valid token of another reader, or for a
reader id that does not exist → 403. The card is read with that reader's
format and byte order. Every tap by an authenticated reader is an event,
including unknown (404) and malformed (400) cards: the event is committed
before the error is answered.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.enums import Role
from billing.models import Reader
from proxy.exceptions import BadRequest, NotFound
from proxy.keys import SESSIONS, TAP_AUTH, WAKE
from proxy.nfc import CardError
from proxy.nfc_admin import (
    TapOutcome,
    add_card,
    authenticate_reader,
    tap_card,
)
from proxy.pipeline.intake_auth import SIGNATURE_HEADER
from proxy.pipeline.release import Released
from proxy.pipeline.wake import DISPATCH

from . import serialize
from .auth import _bearer, require
from .errors import json_body, reject_unknown

PREFIX = "/api/v1"
CARD_FIELDS = frozenset({"user", "card", "format", "byte_order"})


def _required(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} is required and must be a string")
    return value


def _optional(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string")
    return value


def released_json(item: Released) -> serialize.JSON:
    po = item.print_out
    return {
        "id": po.id,
        "printer": item.printer,
        "title": po.title,
        "pages": po.pages,
        "copies": po.copies,
    }


async def register_card(request: web.Request) -> web.Response:
    principal = await require(request, Role.ADMIN)
    body = await json_body(request)
    reject_unknown(body, set(CARD_FIELDS))
    user, raw = _required(body, "user"), _required(body, "card")
    card_format, byte_order = _optional(body, "format"), _optional(body, "byte_order")
    async with request.app[SESSIONS]() as session, session.begin():
        card = await add_card(
            session,
            user,
            raw,
            card_format="hex" if card_format is None else card_format,
            byte_order="msb" if byte_order is None else byte_order,
            actor=principal.describe(),
        )
    return web.json_response({"id": card.id, "user": user, "card": card.number}, status=201)


async def _signed_reader(request: web.Request, session: AsyncSession, reader_id: str) -> Reader:
    """A tap signed with the reader key (SHA-256 of its token, never sent): the
    intake's protocol (``proxy.pipeline.intake_auth``) with META = SHA-256 of the body."""
    reader = await session.scalar(select(Reader).where(Reader.reader_id == reader_id))
    peer = request.remote or "?"
    body_hash = hashlib.sha256(await request.read()).hexdigest()
    request.app[TAP_AUTH].check(
        address=peer,
        method=request.method,
        path_qs=request.raw_path,
        headers=request.headers,
        meta=body_hash,
        secret=reader.token_hash if reader is not None else "",
    )
    assert reader is not None  # an unknown reader has no key: refused above
    return reader


async def reader_tap(request: web.Request) -> web.Response:
    """``Authorization: Bearer <reader token>`` (over HTTPS), or signed with the reader key."""
    signed = SIGNATURE_HEADER in request.headers
    token = "" if signed else _bearer(request)  # 401 before anything else is looked at
    reader_id = request.match_info["reader_id"]
    await request.read()  # buffered now: no client wait while a connection is held

    async def work(session: AsyncSession) -> TapOutcome:
        if signed:
            reader = await _signed_reader(request, session, reader_id)
        else:
            reader = await authenticate_reader(session, reader_id, token)
        body = await json_body(request)
        reject_unknown(body, {"card"})
        return await tap_card(session, reader, _required(body, "card"))

    async with request.app[SESSIONS]() as session, session.begin():
        outcome = await work(session)
    # Committed: the tap's event stays whatever the answer is.
    if outcome.malformed is not None:
        raise CardError(outcome.malformed)
    if outcome.unknown_card:
        raise NotFound("unknown card; nothing released")
    if outcome.released:
        request.app[WAKE].wake(DISPATCH)
    return web.json_response(
        {
            "reader": reader_id,
            "card": outcome.card,
            "released": [released_json(r) for r in outcome.released],
        }
    )


def routes(prefix: str = PREFIX) -> list[web.RouteDef]:
    return [
        web.post(f"{prefix}/cards", register_card),
        web.post(f"{prefix}/readers/{{reader_id}}/tap", reader_tap),
    ]


def setup_nfc_routes(app: web.Application, prefix: str = PREFIX) -> None:
    """Add the NFC routes (the error middleware is installed by ``setup_api``)."""
    app.router.add_routes(routes(prefix))
