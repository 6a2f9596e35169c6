"""Administration over HTTP (``admin``): users, groups, printers, cards, readers,
tokens, and the audit view: list, show, edit, disable (PATCH), delete, as the CLI.

Thin handlers over the domain functions the CLI uses (billing.directory,
proxy.printers, proxy.tokens); every change is an event with the caller as
its actor. Users and printers are addressed by name, tokens by id.
``GET /events?actor=&subject=`` lists those events newest first: ``subject``
is ``TYPE`` or ``TYPE:ID`` (``user:alice``, ``printer:pp-hold``, ``print_out:12``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import directory, rights
from billing.enums import Role
from billing.models import Event, Printer, User
from proxy import nfc_admin, printers, tokens
from proxy.exceptions import NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS

from . import queries, serialize
from .auth import require
from .errors import InvalidParameter, json_body, reject_unknown

EVENT_PARAMS = frozenset({"actor", "subject", "limit", "cursor"})
EVENT_CURSOR = "ev"
USER_PATCH = frozenset({"email", "full_name", "active", "delegate"})
PRINTER_PATCH = (printers.EDITABLE - {"media_costs"}) | {"enabled"}


def _flags(body: dict[str, Any], *names: str) -> None:
    for name in names:
        if name in body and not isinstance(body[name], bool):
            raise InvalidParameter(f"{name}: must be true or false")


def event_json(ev: Event) -> serialize.JSON:
    return {
        "id": ev.id,
        "subject_type": ev.subject_type,
        "subject_id": ev.subject_id,
        "data": ev.data,
        **serialize.event(ev),
    }


async def list_events(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    params = queries.query_params(request.query, EVENT_PARAMS)
    limit = queries.parse_limit(params.get("limit"))
    stmt = select(Event)
    if "actor" in params:
        stmt = stmt.where(Event.actor == params["actor"])
    if "subject" in params:
        kind, sep, subject_id = params["subject"].partition(":")
        stmt = stmt.where(Event.subject_type == kind)
        if sep:
            stmt = stmt.where(Event.subject_id == subject_id)
    if "cursor" in params:
        (before,) = queries.decode_cursor(EVENT_CURSOR, params["cursor"], 1)
        stmt = stmt.where(Event.id < before)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = list(await session.scalars(stmt.order_by(Event.id.desc()).limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    cursor = queries.encode_cursor(EVENT_CURSOR, found[-1].id) if more else None
    return web.json_response(serialize.page([event_json(e) for e in found], cursor))


# --- tokens -------------------------------------------------------------------------


def token_json(t: tokens.TokenInfo) -> serialize.JSON:
    return {
        "id": t.id,
        "role": t.role,
        "user": t.user,
        "label": t.label,
        "state": t.state,
        "created_at": serialize.iso(t.created_at),
        "expires_at": serialize.iso(t.expires_at),
        "revoked_at": serialize.iso(t.revoked_at),
    }


async def list_tokens(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    queries.query_params(request.query, frozenset())
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = await tokens.list_api_tokens(session)
    return web.json_response(serialize.page([token_json(t) for t in found], None))


async def revoke_token(request: web.Request) -> web.Response:
    """Revoke (401 from the next request on); revoking twice is a no-op."""
    principal = await require(request, Role.ADMIN)
    token_id = queries.parse_id(request.match_info["id"])
    if token_id is None:
        raise NotFound(f"token {request.match_info['id'][:40]!r} not found")
    async with request.app[SESSIONS]() as session, session.begin():
        await tokens.revoke_api_token(session, str(token_id), actor=principal.describe())
        (found,) = [t for t in await tokens.list_api_tokens(session) if t.id == token_id]
    return web.json_response(token_json(found))


# --- users --------------------------------------------------------------------------


async def _user_json(session: AsyncSession, user: User) -> serialize.JSON:
    groups = (await directory.groups_of_users(session, [user.id]))[user.id]
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "full_name": user.full_name,
        "external_id": user.external_id,
        "active": user.active,
        "delegate": user.can_delegate,
        "groups": groups,
        "created_at": serialize.iso(user.created_at),
        "deleted_at": serialize.iso(user.deleted_at),
    }


async def list_users(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    queries.query_params(request.query, frozenset())
    async with request.app[READ_SESSIONS]() as session, session.begin():
        users = await directory.list_users(session, deleted=True)
        items = [await _user_json(session, u) for u in users]
    return web.json_response(serialize.page(items, None))


async def get_user(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        user = await directory.get_user(session, request.match_info["name"], deleted=True)
        body = await _user_json(session, user)
    return web.json_response(body)


async def patch_user(request: web.Request) -> web.Response:
    """``{"email", "full_name", "active", "delegate"}``: disabling stops her tokens and
    cards at once; ``delegate`` grants or withdraws the delegate right."""
    principal = await require(request, Role.ADMIN)
    body = await json_body(request)
    reject_unknown(body, set(USER_PATCH))
    _flags(body, "active", "delegate")
    actor = principal.describe()
    name = request.match_info["name"]
    async with request.app[SESSIONS]() as session, session.begin():
        user = await directory.get_user(session, name)
        fields: dict[str, Any] = {k: body[k] for k in ("email", "full_name") if k in body}
        if fields:
            await directory.edit_user(session, user.name, fields, actor=actor)
        if "active" in body:
            await directory.set_user_active(session, user.name, body["active"], actor=actor)
        if "delegate" in body:
            await rights.set_user_delegate(session, user.name, body["delegate"], actor=actor)
        out = await _user_json(session, user)
    return web.json_response(out)


async def delete_user(request: web.Request) -> web.Response:
    principal = await require(request, Role.ADMIN)
    async with request.app[SESSIONS]() as session, session.begin():
        user = await directory.delete_user(
            session, request.match_info["name"], actor=principal.describe()
        )
        out = await _user_json(session, user)
    return web.json_response(out)


# --- printers -----------------------------------------------------------------------


def printer_json(p: Printer, request: web.Request) -> serialize.JSON:
    currency = request.app[CONFIG].money
    return {
        "id": p.id,
        "name": p.name,
        "mode": p.mode,
        "target": p.target,
        "cost_mono": serialize.money(p.cost_mono, currency),
        "cost_color": serialize.money(p.cost_color, currency),
        "duplex_discount": serialize.money(p.duplex_discount, currency),
        "media_costs": p.media_costs or {},
        "papercut": p.papercut,
        "hold_expiry_mins": p.hold_expiry_mins,
        "enabled": p.enabled,
        "deleted_at": serialize.iso(p.deleted_at),
    }


async def list_printers(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    queries.query_params(request.query, frozenset())
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = await printers.list_printers(session, deleted=True)
    return web.json_response(serialize.page([printer_json(p, request) for p in found], None))


async def get_printer(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = await printers.get_printer(session, request.match_info["name"], deleted=True)
    return web.json_response(printer_json(found, request))


async def delete_printer(request: web.Request) -> web.Response:
    """Soft delete: its history stays, the intake refuses its jobs (404) from now on.

    The CUPS queue stays (remove it with ``lpadmin -x NAME``), as with the CLI.
    """
    principal = await require(request, Role.ADMIN)
    async with request.app[SESSIONS]() as session, session.begin():
        found = await printers.delete_printer(
            session, request.match_info["name"], actor=principal.describe()
        )
        out = printer_json(found, request)
    return web.json_response(out)


async def patch_printer(request: web.Request) -> web.Response:
    """Prices, mode, target, hold expiry, PaperCut flag, enabled: for jobs received afterwards."""
    principal = await require(request, Role.ADMIN)
    body: dict[str, Any] = await json_body(request)
    reject_unknown(body, set(PRINTER_PATCH))
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise InvalidParameter("enabled: must be true or false")
    name = request.match_info["name"]
    actor = principal.describe()
    async with request.app[SESSIONS]() as session, session.begin():
        fields = {k: v for k, v in body.items() if k != "enabled"}
        await printers.edit_printer(session, name, fields, actor=actor)
        if "enabled" in body:
            await printers.set_printer_enabled(session, name, body["enabled"], actor=actor)
        printer = await printers.get_printer(session, name)
        out = printer_json(printer, request)
    return web.json_response(out)


# --- groups, cards, readers ---------------------------------------------------------

GROUP_PATCH = frozenset({"add_members", "remove_members", "active", "delegate"})


def _names(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"{key}: a list of user names")
    if len(value) > 1000:
        raise InvalidParameter(f"{key}: at most 1000 names")
    return value


async def _group_json(session: AsyncSession, group: Any) -> serialize.JSON:
    return {
        "id": group.id,
        "name": group.name,
        "external_id": group.external_id,
        "active": group.active,
        "delegate": group.can_delegate,
        "members": await directory.group_member_names(session, group.id),
        "deleted_at": serialize.iso(group.deleted_at),
    }


async def list_groups(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    queries.query_params(request.query, frozenset())
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = await directory.list_groups(session, deleted=True)
        items = [await _group_json(session, g) for g in found]
    return web.json_response(serialize.page(items, None))


async def patch_group(request: web.Request) -> web.Response:
    """``{"add_members": [...], "remove_members": [...], "active": bool, "delegate": bool}``
    (``delegate``: the delegate right of every member)."""
    principal = await require(request, Role.ADMIN)
    body = await json_body(request)
    reject_unknown(body, set(GROUP_PATCH))
    add, remove = _names(body, "add_members"), _names(body, "remove_members")
    _flags(body, "active", "delegate")
    actor = principal.describe()
    name = request.match_info["name"]
    async with request.app[SESSIONS]() as session, session.begin():
        group = await directory.edit_group_members(
            session, name, add=add, remove=remove, actor=actor
        )
        if "active" in body:
            await directory.set_group_active(session, name, body["active"], actor=actor)
        if "delegate" in body:
            await rights.set_group_delegate(session, name, body["delegate"], actor=actor)
        out = await _group_json(session, group)
    return web.json_response(out)


async def get_group(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        group = await directory.get_group(session, request.match_info["name"], deleted=True)
        out = await _group_json(session, group)
    return web.json_response(out)


async def delete_group(request: web.Request) -> web.Response:
    """Soft delete: its account and history stay, its members are released."""
    principal = await require(request, Role.ADMIN)
    async with request.app[SESSIONS]() as session, session.begin():
        group = await directory.delete_group(
            session, request.match_info["name"], actor=principal.describe()
        )
        out = await _group_json(session, group)
    return web.json_response(out)


async def list_cards(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    params = queries.query_params(request.query, frozenset({"user", "deleted"}))
    deleted = queries.parse_flag("deleted", params.get("deleted"))
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = await nfc_admin.list_cards(session, params.get("user"), deleted=deleted)
    return web.json_response(serialize.page([card_json(c) for c in found], None))


def card_json(c: nfc_admin.CardInfo) -> serialize.JSON:
    return {"id": c.id, "card": c.number, "user": c.user, "deleted_at": serialize.iso(c.deleted_at)}


CARD_PARAMS = frozenset({"format", "byte_order"})


async def delete_card(request: web.Request) -> web.Response:
    """Soft delete a card (any form of its number; ``?format=dec``, ``?byte_order=lsb``).

    Its row and events stay (who registered it, every tap); the card releases nothing
    from now on and may be registered again (or claimed at a reader).
    """
    principal = await require(request, Role.ADMIN)
    params = queries.query_params(request.query, CARD_PARAMS)
    async with request.app[SESSIONS]() as session, session.begin():
        info = await nfc_admin.delete_card(
            session,
            request.match_info["card"],
            card_format=params.get("format", "hex"),
            byte_order=params.get("byte_order", "msb"),
            actor=principal.describe(),
        )
    return web.json_response(card_json(info))


def reader_json(r: nfc_admin.ReaderInfo) -> serialize.JSON:
    return {
        "reader_id": r.reader_id,
        "printers": r.printers,
        "card_format": r.card_format,
        "byte_order": r.byte_order,
        "enabled": r.enabled,
    }


async def list_readers(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    queries.query_params(request.query, frozenset())
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = await nfc_admin.list_readers(session)
    return web.json_response(serialize.page([reader_json(r) for r in found], None))


READER_PATCH = frozenset({"printers", "card_format", "byte_order", "enabled"})


async def _reader_info(session: AsyncSession, reader_id: str) -> nfc_admin.ReaderInfo:
    found = await nfc_admin.list_readers(session, reader_id)
    if not found:
        raise NotFound(f"unknown reader {reader_id[:64]!r}")
    return found[0]


async def get_reader(request: web.Request) -> web.Response:
    await require(request, Role.ADMIN)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        info = await _reader_info(session, request.match_info["reader_id"])
    return web.json_response(reader_json(info))


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidParameter(f"{key}: a string")
    return value


async def patch_reader(request: web.Request) -> web.Response:
    """``{"printers": [...], "card_format", "byte_order", "enabled"}``; one event per change."""
    principal = await require(request, Role.ADMIN)
    body = await json_body(request)
    reject_unknown(body, set(READER_PATCH))
    _flags(body, "enabled")
    printer_names = _names(body, "printers") if "printers" in body else None
    reader_id = request.match_info["reader_id"]
    actor = principal.describe()
    async with request.app[SESSIONS]() as session, session.begin():
        await nfc_admin.edit_reader(
            session,
            reader_id,
            printers=printer_names,
            card_format=_text(body, "card_format"),
            byte_order=_text(body, "byte_order"),
            actor=actor,
        )
        if "enabled" in body:
            await nfc_admin.set_reader_enabled(session, reader_id, body["enabled"], actor=actor)
        out = reader_json(await _reader_info(session, reader_id))
    return web.json_response(out)


async def delete_reader(request: web.Request) -> web.Response:
    """Remove a reader: its token answers 401 at once; its taps stay as events."""
    principal = await require(request, Role.ADMIN)
    reader_id = request.match_info["reader_id"]
    async with request.app[SESSIONS]() as session, session.begin():
        info = await _reader_info(session, reader_id)
        await nfc_admin.delete_reader(session, reader_id, actor=principal.describe())
    return web.json_response(reader_json(info))


async def rotate_reader(request: web.Request) -> web.Response:
    """A new token for the reader (shown once); the old one answers 401 from now on."""
    principal = await require(request, Role.ADMIN)
    reject_unknown(await json_body(request, optional=True), set())
    reader_id = request.match_info["reader_id"]
    async with request.app[SESSIONS]() as session, session.begin():
        secret = await nfc_admin.rotate_reader_token(session, reader_id, actor=principal.describe())
    return web.json_response({"reader_id": reader_id, "token": secret})


def routes(prefix: str) -> list[web.RouteDef]:
    return [
        web.get(f"{prefix}/events", list_events),
        web.get(f"{prefix}/tokens", list_tokens),
        web.delete(f"{prefix}/tokens/{{id}}", revoke_token),
        web.get(f"{prefix}/users", list_users),
        web.get(f"{prefix}/users/{{name}}", get_user),
        web.patch(f"{prefix}/users/{{name}}", patch_user),
        web.delete(f"{prefix}/users/{{name}}", delete_user),
        web.get(f"{prefix}/printers", list_printers),
        web.get(f"{prefix}/printers/{{name}}", get_printer),
        web.patch(f"{prefix}/printers/{{name}}", patch_printer),
        web.delete(f"{prefix}/printers/{{name}}", delete_printer),
        web.get(f"{prefix}/groups", list_groups),
        web.get(f"{prefix}/groups/{{name}}", get_group),
        web.patch(f"{prefix}/groups/{{name}}", patch_group),
        web.delete(f"{prefix}/groups/{{name}}", delete_group),
        web.get(f"{prefix}/cards", list_cards),
        web.delete(f"{prefix}/cards/{{card}}", delete_card),
        web.get(f"{prefix}/readers", list_readers),
        web.get(f"{prefix}/readers/{{reader_id}}", get_reader),
        web.patch(f"{prefix}/readers/{{reader_id}}", patch_reader),
        web.delete(f"{prefix}/readers/{{reader_id}}", delete_reader),
        web.post(f"{prefix}/readers/{{reader_id}}/rotate", rotate_reader),
    ]
