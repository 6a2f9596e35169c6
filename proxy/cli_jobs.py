"""``proxyprint job list|cancel|redirect``: job control from the command line, as the API.

``cancel`` and ``redirect`` do what ``POST /jobs/{id}/cancel|redirect`` do, on
the configured database, with the actor ``cli:<login>``: a dispatched job is
canceled at its printer first (the command talks to the printer itself), a
redirected job is picked up by the running service's dispatcher on its next
tick. ``list`` shows the jobs that have not ended (``--all``: every job),
newest first.
"""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING

from .config import Config

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register"]


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "cli"


async def cmd_job_list(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from billing.enums import FINAL_STATUSES, PrintStatus
    from billing.models import Printer, PrintOut

    from .cli import session_scope
    from .exceptions import BadRequest

    query = (
        select(PrintOut, Printer.name)
        .join(Printer, Printer.id == PrintOut.printer_id)
        .order_by(PrintOut.id.desc())
        .limit(args.limit)
    )
    if args.status:
        try:
            wanted = PrintStatus.from_label(args.status)
        except ValueError as exc:
            raise BadRequest(f"--status: {exc}") from None
        query = query.where(PrintOut.status == int(wanted))
    elif not args.all:
        query = query.where(PrintOut.status.not_in([int(s) for s in FINAL_STATUSES]))
    if args.user:
        query = query.where(PrintOut.delegate == args.user)
    if args.printer:
        query = query.where(Printer.name == args.printer)
    async with session_scope(config) as session:
        rows = (await session.execute(query)).all()
    for po, printer in rows:
        state = PrintStatus(po.status).label
        where = f"job {po.target_job_id} at {po.target}" if po.target_job_id else po.target
        reason = f" ({po.status_reason})" if po.status_reason else ""
        print(
            f"{po.id}\t{state}{reason}\t{printer}\t{po.delegate}\t{po.title}\t"
            f"{po.created_at:%Y-%m-%d %H:%M:%S}\t{where}"
        )
    print(f"{len(rows)} job(s)")
    return 0


async def cmd_job_cancel(config: Config, args: argparse.Namespace) -> int:
    from billing.enums import PrintStatus, StatusReason
    from billing.models import PrintOut

    from .exceptions import NotFound
    from .keys import SESSIONS
    from .pipeline import control

    async with control.control_app(config) as app:
        async with app[SESSIONS]() as session:
            po = await session.get(PrintOut, args.id)
        if po is None:
            raise NotFound(f"job {args.id} not found")
        held = po.status == PrintStatus.HELD
        reason = StatusReason.CANCELED_WHILE_HELD if held else StatusReason.CANCELED_BY_USER
        done = await control.cancel(app, args.id, actor=actor(), reason=reason)
    print(f"job {done.id} canceled ({done.status_reason}); nothing charged")
    return 0


async def cmd_job_redirect(config: Config, args: argparse.Namespace) -> int:
    from billing.enums import PrintStatus
    from billing.models import PrintOut

    from .cli import session_scope
    from .exceptions import NotFound
    from .pipeline import redirect

    async with session_scope(config) as session:
        po = await session.get(PrintOut, args.id)
        if po is None:
            raise NotFound(f"job {args.id} not found")
        printer = await redirect.find_printer(session, args.printer)
        done = await redirect.redirect(session, po, printer, actor=actor(), currency=config.money)
    moved = done.print_out
    how = f"as new print-out {moved.id}" if done.new_print_out else ""
    state = PrintStatus(moved.status).label
    print(f"job {args.id} redirected to {done.printer} ({moved.target}) {how}: {state}".strip())
    return 0


def register(sub: Subparsers) -> None:
    """Add ``job list|cancel|redirect`` to ``proxyprint``."""
    job = sub.add_parser("job", help="job control (as the API's /jobs)").add_subparsers(
        dest="action", required=True
    )
    listing = job.add_parser("list", help="jobs that have not ended, newest first")
    listing.add_argument("--status", help="only this status (pending, held, processing, …)")
    listing.add_argument("--all", action="store_true", help="ended jobs too")
    listing.add_argument("--user", help="only this delegate's jobs")
    listing.add_argument("--printer", help="only this proxy printer's jobs")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=cmd_job_list)
    cancel = job.add_parser("cancel", help="cancel a job that has not ended (at its printer too)")
    cancel.add_argument("id", type=int)
    cancel.set_defaults(handler=cmd_job_cancel)
    redirect = job.add_parser(
        "redirect", help="send a pending, held or not-printed aborted job to another printer"
    )
    redirect.add_argument("id", type=int)
    redirect.add_argument("--printer", required=True, help="the proxy printer to send it to")
    redirect.set_defaults(handler=cmd_job_redirect)
