"""What the CUPS backend asks after the hand-off: how is my print-out doing; cancel it.

``GET /intake/v1/status?job_uuid=&print_out=&since=&wait=`` is a long poll:
it answers as soon as the print-out's status differs from ``since`` (a status
label), or after ``wait`` seconds (at most ``MAX_WAIT``) with the status as
it is. ``print_out`` names the print-out the intake's answer gave; without it
the newest print-out of the job-uuid's print-in is meant (a backend that
lost the answer, after a service restart). Both given: they must match.

``POST /intake/v1/cancel?job_uuid=&print_out=``: cupsd canceled the CUPS job
(SIGTERM to the backend): the print-out is canceled, at its target too, with
reason ``canceled-in-cups`` (``control.cancel``).

Answers carry ``text``: one sentence a person reads in ``lpstat`` or a
print dialog (the backend writes it as an ``INFO:`` line).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy import select

from billing.enums import PrintStatus, StatusReason
from billing.models import PrintIn, PrintOut

from ..exceptions import BadRequest, NotFound
from ..keys import INTAKE
from . import control
from .jobs import latest_print_out
from .wake import sleep_or_wake

MAX_WAIT = 60.0
# A change this instance commits wakes the waiter at once (``Waker.status_changed``);
# one made elsewhere (another instance, a transition outside the lifecycle) is
# found by looking again this often.
POLL_EVERY = 0.25


def describe(po: PrintOut) -> str:
    """The print-out's state in one sentence for the person who printed."""
    st = PrintStatus(po.status)
    detail = f": {po.status_message}" if po.status_message else ""
    why = f" ({po.status_reason})" if po.status_reason else ""
    if st == PrintStatus.PENDING:
        if po.dispatched_at is not None:
            return f"Sent to {po.target}, waiting for the printer"
        return f"Waiting to be sent to {po.target}{detail}"
    if st == PrintStatus.PROCESSING:
        return f"Printing on {po.target}{detail}"
    if st == PrintStatus.STOPPED:
        return f"The printer {po.target} stopped{detail}"
    if st == PrintStatus.PENDING_EXTERNAL:
        return f"Sent to {po.target}; waiting for PaperCut to release it"
    if st == PrintStatus.HELD:
        if po.ticket_number:
            return f"Job ticket {po.ticket_number} waiting for an operator"
        if po.status_reason == StatusReason.HOLD:
            return "Held until released at a card reader"
        if po.status_reason == StatusReason.AWAITING_TAP:
            text = po.status_message or "tap your card at a card reader"
            return text[:1].upper() + text[1:]
        return f"Held{why}{detail}"
    if st == PrintStatus.COMPLETED:
        return f"Printed on {po.target}"
    if st == PrintStatus.CANCELED:
        return f"Canceled{why}{detail}"
    return f"Not printed{why}{detail}"  # aborted


def status_json(po: PrintOut) -> dict[str, Any]:
    st = PrintStatus(po.status)
    return {
        "print_in": po.print_in_id,
        "print_out": po.id,
        "status": st.label,
        "final": st.is_final,
        "reason": po.status_reason,
        "message": po.status_message,
        "mode": po.mode,
        "ticket": po.ticket_number,
        "text": describe(po),
    }


def _params(request: web.Request) -> tuple[str | None, int | None]:
    job_uuid = request.query.get("job_uuid") or None
    raw = request.query.get("print_out")
    print_out: int | None = None
    if raw is not None:
        if not raw.isdigit() or len(raw) > 12:
            raise BadRequest("print_out must be a print-out id")
        print_out = int(raw)
    if job_uuid is None and print_out is None:
        raise BadRequest("give job_uuid or print_out")
    return job_uuid, print_out


async def _find(request: web.Request, job_uuid: str | None, print_out: int | None) -> PrintOut:
    async with request.app[INTAKE].sessions() as session:
        po: PrintOut | None = None
        if print_out is not None:
            row = (
                await session.execute(
                    select(PrintOut, PrintIn.job_uuid)
                    .join(PrintIn, PrintIn.id == PrintOut.print_in_id)
                    .where(PrintOut.id == print_out)
                )
            ).first()
            if row is not None and (job_uuid is None or row[1] == job_uuid):
                po = row[0]
        else:
            known = await session.scalar(select(PrintIn.id).where(PrintIn.job_uuid == job_uuid))
            po = None if known is None else await latest_print_out(session, known)
    if po is None:
        raise NotFound("no such print-out for this job")
    return po


async def job_status(request: web.Request) -> web.Response:
    job_uuid, print_out = _params(request)
    since = request.query.get("since")
    try:
        wait = min(MAX_WAIT, max(0.0, float(request.query.get("wait", "0"))))
    except ValueError:
        raise BadRequest("wait must be a number of seconds") from None
    deadline = time.monotonic() + wait
    po = await _find(request, job_uuid, print_out)
    if PrintStatus(po.status).label != since or wait <= 0:
        return web.json_response(status_json(po))
    with request.app[INTAKE].waker.watching(po.id) as changed:
        po = await _find(request, job_uuid, po.id)  # a change just before watching
        while PrintStatus(po.status).label == since and time.monotonic() < deadline:
            await sleep_or_wake(changed, min(POLL_EVERY, max(0.0, deadline - time.monotonic())))
            po = await _find(request, job_uuid, po.id)
    return web.json_response(status_json(po))


async def cancel_job(request: web.Request) -> web.Response:
    job_uuid, print_out = _params(request)
    po = await _find(request, job_uuid, print_out)
    done = await control.cancel(
        request.app,
        po.id,
        actor="cups",
        reason=control.REASON_CANCELED_IN_CUPS,
        message="the job was canceled in CUPS",
    )
    return web.json_response(status_json(done))


def add_routes(app: web.Application, *, check_secret: Callable[[web.Request], None]) -> None:
    def guarded(handler: Any) -> Any:
        async def run(request: web.Request) -> web.StreamResponse:
            check_secret(request)
            return await handler(request)  # type: ignore[no-any-return]

        return run

    app.router.add_get("/intake/v1/status", guarded(job_status))
    app.router.add_post("/intake/v1/cancel", guarded(cancel_job))
