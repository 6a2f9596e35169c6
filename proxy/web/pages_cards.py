"""My cards: the signed-in user's cards, and card self-association (``proxy.nfc_claim``)."""

from __future__ import annotations

from aiohttp import web

from proxy import nfc_claim
from proxy.api import queries
from proxy.exceptions import NotFound
from proxy.keys import READ_SESSIONS, SESSIONS
from proxy.nfc_admin import CLAIM_MINUTES, list_cards

from .auth import signed_form, signed_in
from .render import html


async def my_cards(request: web.Request) -> web.Response:
    principal = signed_in(request)
    assert principal.user_name is not None  # a web session is always a user's
    async with request.app[READ_SESSIONS]() as session, session.begin():
        cards = await list_cards(session, principal.user_name)
        offers = await nfc_claim.offers(session)
    return html(
        request,
        "cards.html",
        cards=cards,
        offers=offers,
        claim_minutes=CLAIM_MINUTES,
        done=request.query.get("done", "")[:40],
    )


async def claim(request: web.Request) -> web.Response:
    principal, form = await signed_form(request)
    assert principal.user_name is not None
    tap_id = queries.parse_id(form.get("tap", ""))
    if tap_id is None:
        raise NotFound("that tap is no longer offered: tap again")
    async with request.app[SESSIONS]() as session, session.begin():
        card = await nfc_claim.claim(
            session, tap_id, principal.user_name, actor=principal.describe()
        )
    raise web.HTTPSeeOther(f"/cards?done=claimed-{card.number[-nfc_claim.SHOWN_DIGITS :]}")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/cards", my_cards, name="web.cards"),
        web.post("/cards/claim", claim, name="web.cards-claim"),
    ]
