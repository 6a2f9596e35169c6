"""Cards and readers: registering them, authenticating readers, and one tap.

Domain functions: they take a session and never commit; the CLI, the HTTP
handlers and the TCP listener own the transaction.

``reader add`` for an existing reader id is a Conflict, not a silent re-map:
a second ``reader add`` is far more often a copy-paste slip (or a second
device given the same name) than a wish to rotate, and rotating would cut off
the reader that works. Rotating is its own, explicit step: ``rotate_reader_token``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billing import events
from billing.accounts import user_by_name
from billing.db import utcnow
from billing.enums import ByteOrder, CardFormat, PrinterMode
from billing.models import Card, Printer, Reader, UnknownTap, User, reader_printers

from .exceptions import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from .nfc import CardError, normalize_card, parse_byte_order, parse_card_format
from .pipeline.release import Released, tap
from .tokens import TOKEN_PREFIX, hash_token, new_secret

log = logging.getLogger(__name__)
T = TypeVar("T")

READER_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_TOKEN_CHARS = 200


def validate_reader_id(reader_id: str) -> str:
    if not isinstance(reader_id, str) or not READER_ID_RE.fullmatch(reader_id):
        shown = repr(reader_id)[:70]
        raise BadRequest(f"reader id {shown}: use 1-64 letters, digits, '_', '.' or '-'")
    return reader_id


# --- cards -------------------------------------------------------------------


async def card_by_number(session: AsyncSession, number: str) -> Card | None:
    """The live card with this (normalised) number; a deleted one is no one's card."""
    return await session.scalar(
        select(Card).where(Card.number == number, Card.deleted_at.is_(None))
    )


async def add_card(
    session: AsyncSession,
    user_name: str,
    raw: str,
    *,
    card_format: CardFormat | str = CardFormat.HEX,
    byte_order: ByteOrder | str = ByteOrder.MSB,
    actor: str = "admin",
) -> Card:
    """Register a card for a user; the number is normalised first.

    Unknown user → NotFound. A card that is already registered → Conflict; the
    message names the owner only when it is this same user (so the answer
    does not tell who else holds a given card).
    """
    number = normalize_card(raw, card_format=card_format, byte_order=byte_order)
    user = await user_by_name(session, user_name) if isinstance(user_name, str) else None
    if user is None:
        raise NotFound(f"unknown user {str(user_name)[:255]!r}")
    existing = await card_by_number(session, number)
    if existing is not None:
        if existing.user_id == user.id:
            raise Conflict(f"card {number} is already registered to {user.name!r}")
        raise Conflict(f"card {number} is already registered")
    card = Card(user_id=user.id, number=number)
    session.add(card)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:  # registered concurrently
        raise Conflict(f"card {number} is already registered") from exc
    events.record(
        session,
        subject_type="card",
        subject_id=card.id,
        actor=actor,
        reason="created",
        data={"user": user.name, "card": number},
    )
    return card


async def cards_of(session: AsyncSession, user_name: str) -> list[str]:
    """The user's live card numbers (stored form), oldest first."""
    rows = await session.scalars(
        select(Card.number)
        .join(User, User.id == Card.user_id)
        .where(User.name == user_name, Card.deleted_at.is_(None))
        .order_by(Card.id)
    )
    return list(rows)


# --- readers -----------------------------------------------------------------


async def _hold_printers(session: AsyncSession, names: Sequence[str]) -> list[Printer]:
    wanted = list(dict.fromkeys(names))  # de-duplicated, order kept
    if not wanted:
        raise BadRequest("a reader needs at least one printer (--printer NAME)")
    found = {
        p.name: p for p in await session.scalars(select(Printer).where(Printer.name.in_(wanted)))
    }
    missing = [n for n in wanted if n not in found]
    if missing:
        raise NotFound(f"unknown printer(s): {', '.join(repr(n) for n in missing)}")
    not_hold = [
        n for n in wanted if found[n].mode != PrinterMode.HOLD.value and not found[n].require_tap
    ]
    if not_hold:
        raise BadRequest(
            f"printer(s) {', '.join(repr(n) for n in not_hold)} are not in hold mode;"
            " a reader releases held jobs of hold-mode printers (and of direct printers"
            " with --require-tap) only"
        )
    return [found[n] for n in wanted]


async def add_reader(
    session: AsyncSession,
    reader_id: str,
    printer_names: Sequence[str],
    *,
    card_format: CardFormat | str = CardFormat.HEX,
    byte_order: ByteOrder | str = ByteOrder.MSB,
    actor: str = "admin",
) -> str:
    """Create a reader mapped to hold-mode printers; returns its token (shown once).

    Only ``hash_token(secret)`` is stored. Existing reader id → Conflict (see
    the module docstring); unknown printer → NotFound; a printer not in hold
    mode → BadRequest (a tap would never release anything there).
    """
    validate_reader_id(reader_id)
    fmt = parse_card_format(card_format)
    order = parse_byte_order(byte_order)
    if await session.scalar(select(Reader.id).where(Reader.reader_id == reader_id)) is not None:
        raise Conflict(f"reader {reader_id!r} already exists")
    printers = await _hold_printers(session, printer_names)
    secret = new_secret()
    reader = Reader(
        reader_id=reader_id,
        token_hash=hash_token(secret),
        card_format=fmt.value,
        byte_order=order.value,
    )
    session.add(reader)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:  # created concurrently
        raise Conflict(f"reader {reader_id!r} already exists") from exc
    for printer in printers:
        await session.execute(
            reader_printers.insert().values(reader_id=reader.id, printer_id=printer.id)
        )
    events.record(
        session,
        subject_type="reader",
        subject_id=reader_id,
        actor=actor,
        reason="created",
        data={
            "printers": [p.name for p in printers],
            "card_format": fmt.value,
            "byte_order": order.value,
        },
    )
    return secret


async def rotate_reader_token(
    session: AsyncSession, reader_id: str, *, actor: str = "admin"
) -> str:
    """A new token for the reader; the old one stops working (TCP readers too)."""
    reader = await session.scalar(select(Reader).where(Reader.reader_id == reader_id))
    if reader is None:
        raise NotFound(f"unknown reader {reader_id[:64]!r}")
    secret = new_secret()
    reader.token_hash = hash_token(secret)
    await session.flush()
    events.record(
        session, subject_type="reader", subject_id=reader_id, actor=actor, reason="token-rotated"
    )
    return secret


async def get_reader(session: AsyncSession, reader_id: str) -> Reader:
    reader = await session.scalar(select(Reader).where(Reader.reader_id == reader_id))
    if reader is None:
        raise NotFound(f"unknown reader {str(reader_id)[:64]!r}")
    return reader


@dataclass(frozen=True)
class ReaderInfo:
    reader_id: str
    printers: list[str]
    card_format: str
    byte_order: str
    enabled: bool


async def list_readers(session: AsyncSession, reader_id: str | None = None) -> list[ReaderInfo]:
    """Readers with their printers (never their tokens), by reader id."""
    stmt = select(Reader).order_by(Reader.reader_id)
    if reader_id is not None:
        stmt = stmt.where(Reader.reader_id == reader_id)
    readers = list((await session.scalars(stmt)).all())
    names: dict[int, list[str]] = {r.id: [] for r in readers}
    if readers:
        rows = await session.execute(
            select(reader_printers.c.reader_id, Printer.name)
            .join(Printer, Printer.id == reader_printers.c.printer_id)
            .where(reader_printers.c.reader_id.in_(list(names)))
            .order_by(Printer.name)
        )
        for rid, name in rows:
            names[rid].append(name)
    return [
        ReaderInfo(r.reader_id, names[r.id], r.card_format, r.byte_order, r.enabled)
        for r in readers
    ]


async def edit_reader(
    session: AsyncSession,
    reader_id: str,
    *,
    printers: Sequence[str] | None = None,
    card_format: str | None = None,
    byte_order: str | None = None,
    actor: str = "admin",
) -> Reader:
    """Re-map a reader's printers and/or change how it reads cards; one event."""
    reader = await get_reader(session, reader_id)
    changes: dict[str, list[object]] = {}
    if card_format is not None:
        fmt = parse_card_format(card_format).value
        if fmt != reader.card_format:
            changes["card_format"] = [reader.card_format, fmt]
            reader.card_format = fmt
    if byte_order is not None:
        order = parse_byte_order(byte_order).value
        if order != reader.byte_order:
            changes["byte_order"] = [reader.byte_order, order]
            reader.byte_order = order
    if printers is not None:
        (before,) = await list_readers(session, reader_id)
        found = await _hold_printers(session, printers)
        if [p.name for p in found] != before.printers:
            await session.execute(
                reader_printers.delete().where(reader_printers.c.reader_id == reader.id)
            )
            for printer in found:
                await session.execute(
                    reader_printers.insert().values(reader_id=reader.id, printer_id=printer.id)
                )
            changes["printers"] = [before.printers, sorted(p.name for p in found)]
    await session.flush()
    if changes:
        events.record(
            session,
            subject_type="reader",
            subject_id=reader_id,
            actor=actor,
            reason="updated",
            data=changes,
        )
    return reader


async def set_reader_enabled(
    session: AsyncSession, reader_id: str, enabled: bool, *, actor: str = "admin"
) -> Reader:
    """A disabled reader's token answers 401 (HTTP and TCP) until it is enabled again."""
    reader = await get_reader(session, reader_id)
    if reader.enabled != enabled:
        reader.enabled = enabled
        await session.flush()
        events.record(
            session,
            subject_type="reader",
            subject_id=reader_id,
            actor=actor,
            reason="enabled" if enabled else "disabled",
        )
    return reader


async def delete_reader(session: AsyncSession, reader_id: str, *, actor: str = "admin") -> None:
    """Remove a reader (its taps stay as events under its reader id)."""
    reader = await get_reader(session, reader_id)
    await session.delete(reader)
    await session.flush()
    events.record(
        session, subject_type="reader", subject_id=reader_id, actor=actor, reason="deleted"
    )


@dataclass(frozen=True)
class CardInfo:
    id: int
    number: str
    user: str
    deleted_at: dt.datetime | None = None


async def list_cards(
    session: AsyncSession, user_name: str | None = None, *, deleted: bool = False
) -> list[CardInfo]:
    """Live cards; ``deleted``: the deleted ones too (marked by ``deleted_at``)."""
    stmt = select(Card.id, Card.number, User.name, Card.deleted_at).join(
        User, User.id == Card.user_id
    )
    if user_name is not None:
        stmt = stmt.where(User.name == user_name)
    if not deleted:
        stmt = stmt.where(Card.deleted_at.is_(None))
    rows = await session.execute(stmt.order_by(User.name, Card.id))
    return [CardInfo(i, n, u, d) for i, n, u, d in rows]


async def delete_card(
    session: AsyncSession,
    raw: str,
    *,
    card_format: CardFormat | str = CardFormat.HEX,
    byte_order: ByteOrder | str = ByteOrder.MSB,
    actor: str = "admin",
) -> CardInfo:
    """Soft delete a card (by any form of its number): the row and its events stay, it
    releases nothing from now on, and the number is free to be registered again."""
    number = normalize_card(raw, card_format=card_format, byte_order=byte_order)
    card = await card_by_number(session, number)
    if card is None:
        raise NotFound(f"unknown card {number}")
    owner = await session.scalar(select(User.name).where(User.id == card.user_id))
    card.deleted_at = utcnow()
    await session.flush()
    info = CardInfo(card.id, card.number, owner or "?", card.deleted_at)
    events.record(
        session,
        subject_type="card",
        subject_id=info.id,
        actor=actor,
        reason="deleted",
        data={"user": info.user, "card": number},
    )
    return info


async def reader_by_token(session: AsyncSession, token: str) -> Reader | None:
    """The reader whose token this is, or None (malformed or unknown token, or the
    reader is disabled)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        return None
    return await session.scalar(
        select(Reader).where(Reader.token_hash == hash_token(token), Reader.enabled.is_(True))
    )


async def authenticate_reader(session: AsyncSession, reader_id: str, token: str) -> Reader:
    """The reader ``reader_id`` if ``token`` is its token.

    An unknown or malformed token → Unauthorized. A valid token of another
    reader, or for a reader id that does not exist → Forbidden (the token is
    fine, the reader id is not its own; unknown and foreign ids answer alike).
    """
    reader = await reader_by_token(session, token)
    if reader is None:
        raise Unauthorized("invalid reader token")
    if reader.reader_id != reader_id:
        raise Forbidden(f"this token does not belong to reader {reader_id[:64]!r}")
    return reader


# --- one tap -----------------------------------------------------------------


CLAIM_MINUTES = 5
"""How long an unknown card's tap is offered for self-association (proxy/nfc_claim.py)."""


async def remember_unknown(session: AsyncSession, reader: Reader, number: str) -> None:
    """Keep an unknown card's tap for ``CLAIM_MINUTES``; older ones go now."""
    now = utcnow()
    await session.execute(
        delete(UnknownTap).where(UnknownTap.tapped_at < now - timedelta(minutes=CLAIM_MINUTES))
    )
    session.add(UnknownTap(reader_id=reader.id, number=number, tapped_at=now))


@dataclass(frozen=True)
class TapOutcome:
    """What one tap did. The caller commits (events are written in every case)."""

    card: str | None  # the stored form; None when the input was malformed
    released: list[Released] = field(default_factory=list)
    unknown_card: bool = False
    malformed: str | None = None  # why the input is not a card number


async def tap_card(session: AsyncSession, reader: Reader, raw: str) -> TapOutcome:
    """Normalise ``raw`` with the reader's format and byte order, then ``tap``.

    Never raises for the card itself: a malformed or unknown card is an
    outcome with an event, so that the boundary can commit the event and then
    answer 400/404 (HTTP) or an ``ERR`` line (TCP).
    """
    try:
        number = normalize_card(raw, card_format=reader.card_format, byte_order=reader.byte_order)
    except CardError as exc:
        events.record(
            session,
            subject_type="reader",
            subject_id=reader.reader_id,
            actor=reader.reader_id,
            reason="tap-malformed-card",
            message=str(exc),
        )
        return TapOutcome(card=None, malformed=str(exc))
    try:
        released = await tap(session, reader, number)
    except NotFound:  # tap() recorded the event
        await remember_unknown(session, reader, number)
        return TapOutcome(card=number, unknown_card=True)
    return TapOutcome(card=number, released=released)
