"""A user's pages: My jobs (release, cancel, live status), History, a document, Balance.

Every page shows the signed-in user's own data, whatever the role: staff see
everyone's through the staff pages (pages_staff.py). A document opens for its
delegate, for a user one of whose accounts pays a share, and for staff.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import ledger
from billing.enums import AccountType, PrinterMode, PrintStatus, Role, StatusReason
from billing.models import Account, Printer, PrintOut, reader_printers
from proxy.api import queries
from proxy.api.auth import STAFF, allowed
from proxy.api.jobs import held_page, own_print_out
from proxy.api.tickets import OPERATORS
from proxy.exceptions import BadRequest, Conflict, Forbidden, NotFound
from proxy.keys import CONFIG, READ_SESSIONS, SESSIONS, WAKE, WEB_LIVE
from proxy.pipeline import lifecycle
from proxy.pipeline import release as held
from proxy.pipeline.wake import DISPATCH

from . import live
from .auth import WebPrincipal, signed_form, signed_in
from .render import SECURITY_HEADERS, html

PAGE = 25
RECENT = 10
# Who may release or cancel a held job (as POST /jobs/{id}/release and /cancel).
OWNERS = (Role.ADMIN, Role.USER)
MAX_STATUS_IDS = 100


def _me(principal: WebPrincipal) -> str:
    assert principal.user_name is not None  # a web session is always a user's
    return principal.user_name


async def release_choices(session: AsyncSession, printer_id: int) -> list[Printer]:
    """Where a held job may print: its printer and those sharing a card reader with it.

    A reader that releases jobs on several printers stands where they all
    are; tickets are for operators, so no ticket printer is offered.
    """
    readers = select(reader_printers.c.reader_id).where(reader_printers.c.printer_id == printer_id)
    near = select(reader_printers.c.printer_id).where(reader_printers.c.reader_id.in_(readers))
    found = await session.scalars(
        select(Printer)
        .where(
            or_(Printer.id == printer_id, Printer.id.in_(near)),
            Printer.mode != PrinterMode.TICKET.value,
        )
        .order_by(Printer.id != printer_id, Printer.name)
    )
    return list(found)


async def _recent(session: AsyncSession, delegate: str) -> list[tuple[PrintOut, str]]:
    """The user's latest jobs that are not held: in flight (live on the page) or ended."""
    rows = await session.execute(
        select(PrintOut, Printer.name)
        .join(Printer, Printer.id == PrintOut.printer_id)
        .where(PrintOut.delegate == delegate, PrintOut.status != int(PrintStatus.HELD))
        .order_by(PrintOut.created_at.desc(), PrintOut.id.desc())
        .limit(RECENT)
    )
    return [(po, name) for po, name in rows]


async def my_jobs(request: web.Request) -> web.Response:
    principal = signed_in(request)
    me = _me(principal)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        held_rows, _ = await held_page(
            session, mode_is_ticket=False, delegate=me, printer=None, limit=PAGE, after=None
        )
        tickets, _ = await held_page(
            session, mode_is_ticket=True, delegate=me, printer=None, limit=PAGE, after=None
        )
        # One look-up per printer, not per job: a user's held jobs share few printers.
        near = {
            pid: await release_choices(session, pid)
            for pid in {po.printer_id for po, _ in held_rows}
        }
        choices = {po.id: near[po.printer_id] for po, _ in held_rows}
        recent = await _recent(session, me)
        since = await live.newest(session)
    return html(
        request,
        "jobs.html",
        held=held_rows,
        choices=choices,
        tickets=tickets,
        recent=recent,
        since=since,
        done=request.query.get("done", ""),
    )


async def job_events(request: web.Request) -> web.StreamResponse:
    """``GET /jobs/events?ids=1,2&new=mine&since=9``: Server-Sent Events of print-out
    changes (the pages' script).

    First the current status of ``ids`` (those the viewer may see), then every
    change of her own print-outs (staff: everyone's) while the page is open.
    ``new`` (``live.News``) asks to be told of new print-outs too: ``mine``
    (My jobs: her own), ``tickets`` (the ticket queue: operators only);
    ``since`` is the newest print-out id the page knew of.
    """
    principal = signed_in(request)
    raw = request.query.get("ids", "")
    ids = [i for i in (queries.parse_id(p) for p in raw.split(",")[:MAX_STATUS_IDS]) if i]
    news = None
    if wanted := request.query.get("new", ""):
        try:
            news = live.News(wanted)
        except ValueError:
            raise BadRequest(f"new: one of {', '.join(n.value for n in live.News)}") from None
        if news is live.News.TICKETS and not allowed(principal.role, OPERATORS):
            raise Forbidden(f"role {principal.role.value!r} may not follow the ticket queue")
    given = request.query.get("since", "")
    since = 0 if given == "0" else queries.parse_id(given) if given else None
    viewer = live.Viewer(
        principal.user_name,
        principal.role in STAFF,
        session_id=principal.token_id,
        role=principal.role,
        news=news,
    )
    feed = request.app[WEB_LIVE]
    return await live.stream(request, feed, viewer, ids, SECURITY_HEADERS, since=since)


async def release(request: web.Request) -> web.Response:
    principal, form = await signed_form(request, *OWNERS)
    async with request.app[SESSIONS]() as session, session.begin():
        po = await own_print_out(session, principal, request.match_info["id"])
        if po.mode == PrinterMode.TICKET.value:
            raise Conflict("job tickets are released by a ticket operator")
        printer = None
        wanted = form.get("printer", "")
        if wanted:
            choices = await release_choices(session, po.printer_id)
            printer = next((p for p in choices if p.name == wanted), None)
            if printer is None:
                raise Forbidden(f"this job cannot be released to {wanted[:127]!r}")
        done = await held.release(
            session,
            po,
            actor=principal.describe(),
            reason=StatusReason.WEB_RELEASE,
            printer=printer,
            currency=request.app[CONFIG].money,  # the site's decimals (ticket prices, limits)
        )
        if not done:
            raise Conflict(f"job {po.id} is {PrintStatus(po.status).label}, not held")
    request.app[WAKE].wake(DISPATCH)
    raise web.HTTPSeeOther(f"/jobs?done=released-{po.id}")


async def cancel(request: web.Request) -> web.Response:
    principal, _ = await signed_form(request)
    async with lifecycle.ending(request.app) as ends:
        po = await own_print_out(ends.session, principal, request.match_info["id"])
        is_ticket = po.mode == PrinterMode.TICKET.value
        roles = (Role.TICKET_OPERATOR, Role.USER) if is_ticket else OWNERS
        if not allowed(principal.role, roles):
            raise Forbidden(f"role {principal.role.value!r} may not cancel this job")
        reason = StatusReason.TICKET_CANCELED if is_ticket else StatusReason.CANCELED_WHILE_HELD
        await held.cancel_held(ends, po, actor=principal.describe(), reason=reason)
    raise web.HTTPSeeOther(f"/jobs?done=canceled-{po.id}")


async def _personal_account(session: AsyncSession, user_id: int | None) -> Account | None:
    return await session.scalar(
        select(Account).where(Account.type == AccountType.USER.value, Account.user_id == user_id)
    )


async def history(request: web.Request) -> web.Response:
    principal = signed_in(request)
    params = queries.query_params(request.query, frozenset({"view", "cursor"}))
    view = params.get("view", "printed")
    if view not in ("printed", "paid"):
        raise NotFound(f"no history view {view[:20]!r}")
    cursor = params.get("cursor")
    after = queries.print_out_position(cursor) if cursor else None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        account = await _personal_account(session, principal.user_id)
        if view == "printed":
            flt = queries.PrintOutFilter(delegate=_me(principal))
        else:
            flt = queries.PrintOutFilter(account_id=account.id if account else -1)
        rows, next_cursor = await queries.print_out_page(session, flt, limit=PAGE, after=after)
    mine = account.id if account else None
    return html(request, "history.html", view=view, rows=rows, next_cursor=next_cursor, mine=mine)


def may_see(principal: WebPrincipal, row: queries.PrintOutRow) -> bool:
    if principal.role in STAFF:
        return True
    if row.print_out.delegate == principal.user_name:
        return True
    return any(
        a.type == AccountType.USER.value and a.user_id == principal.user_id
        for _, a in row.transactions
    )


async def document(request: web.Request) -> web.Response:
    principal = signed_in(request)
    raw = request.match_info["id"]
    po_id = queries.parse_id(raw)
    async with request.app[READ_SESSIONS]() as session, session.begin():
        found = None if po_id is None else await queries.print_out_detail(session, po_id)
    if found is None or not may_see(principal, found[0]):
        raise NotFound(f"print-out {raw[:40]!r} not found")
    row, events = found
    may_reverse = (
        allowed(principal.role, (Role.ACCOUNTS_EDITOR,))
        and row.print_out.charged_at is not None
        and len(row.reversed) < len(row.transactions)  # a share is left (partial reversals)
    )
    return html(request, "document.html", row=row, events=events, may_reverse=may_reverse)


async def balance(request: web.Request) -> web.Response:
    principal = signed_in(request)
    params = queries.query_params(request.query, frozenset({"cursor"}))
    cursor = params.get("cursor")
    before = queries.decode_cursor(queries.LEDGER_CURSOR, cursor, 1)[0] if cursor else None
    async with request.app[READ_SESSIONS]() as session, session.begin():
        account = await _personal_account(session, principal.user_id)
        if account is None:
            raise NotFound("you have no personal account")
        amount, pages = await ledger.totals(session, account.id)
        entries, next_cursor = await queries.ledger_page(
            session, account.id, limit=PAGE, before_id=before
        )
    return html(
        request,
        "balance.html",
        account=account,
        balance=amount,
        pages=pages,
        entries=entries,
        next_cursor=next_cursor,
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/jobs", my_jobs, name="web.jobs"),
        web.get("/jobs/events", job_events, name="web.job-events"),
        web.post("/jobs/{id}/release", release, name="web.job-release"),
        web.post("/jobs/{id}/cancel", cancel, name="web.job-cancel"),
        web.get("/history", history, name="web.history"),
        web.get("/documents/{id}", document, name="web.document"),
        web.get("/balance", balance, name="web.balance"),
    ]
