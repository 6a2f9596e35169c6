"""Card self-association: a user claims a card that was just tapped and is no one's.

An unknown card's tap is remembered for ``CLAIM_MINUTES``
(``nfc_admin.remember_unknown``, in the database so that every instance
sees it). The signed-in user's "My cards" page offers those taps; claiming
one registers the card to her (``nfc_admin.add_card``, its ``created``
event) and is an event of its own (``self-associated``, with the reader).
The next tap of the card releases her held jobs like any registered card's.

Anyone signed in during those minutes could claim the card: the page shows
only the last digits, the reader and the time, so that the person at the
reader recognises her own tap; an admin removes a wrong claim.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import events
from billing.db import utcnow
from billing.models import Card, Reader, UnknownTap

from .exceptions import NotFound
from .nfc_admin import CLAIM_MINUTES, add_card

SHOWN_DIGITS = 4
MAX_OFFERS = 20


@dataclass(frozen=True, slots=True)
class Offer:
    """An unknown card's latest tap, as the page shows it (the number cut short)."""

    tap_id: int
    reader: str
    ending: str
    tapped_at: dt.datetime


def _window_start() -> dt.datetime:
    return utcnow() - timedelta(minutes=CLAIM_MINUTES)


async def offers(session: AsyncSession) -> list[Offer]:
    """Unknown cards tapped in the last ``CLAIM_MINUTES``, newest first, one per card."""
    rows = await session.execute(
        select(UnknownTap.id, Reader.reader_id, UnknownTap.number, UnknownTap.tapped_at)
        .join(Reader, Reader.id == UnknownTap.reader_id)
        # A deleted card is no one's: offered like any unknown card.
        .outerjoin(Card, (Card.number == UnknownTap.number) & Card.deleted_at.is_(None))
        .where(UnknownTap.tapped_at >= _window_start(), Card.id.is_(None))
        .order_by(UnknownTap.tapped_at.desc(), UnknownTap.id.desc())
        .limit(MAX_OFFERS * 5)
    )
    seen: set[str] = set()
    found: list[Offer] = []
    for tap_id, reader, number, at in rows:
        if number not in seen and len(found) < MAX_OFFERS:
            seen.add(number)
            found.append(Offer(tap_id, reader, number[-SHOWN_DIGITS:], at))
    return found


async def claim(session: AsyncSession, tap_id: int, user_name: str, *, actor: str) -> Card:
    """Register the card of a recent unknown tap to ``user_name``.

    A tap no longer offered (too old, or claimed already) → NotFound; a card
    registered meanwhile → Conflict (``add_card``).
    """
    row = (
        await session.execute(
            select(UnknownTap.number, Reader.reader_id)
            .join(Reader, Reader.id == UnknownTap.reader_id)
            .where(UnknownTap.id == tap_id, UnknownTap.tapped_at >= _window_start())
        )
    ).first()
    if row is None:
        raise NotFound(
            f"that tap is no longer offered (taps are kept {CLAIM_MINUTES} minutes): tap again"
        )
    number, reader = row
    card = await add_card(session, user_name, number, actor=actor)  # stored form: hex, MSB
    await session.execute(delete(UnknownTap).where(UnknownTap.number == number))
    events.record(
        session,
        subject_type="card",
        subject_id=card.id,
        actor=actor,
        reason="self-associated",
        data={"user": user_name, "card": number, "reader": reader},
    )
    return card
