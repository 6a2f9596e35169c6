"""The intake: the HTTP endpoint the CUPS backend streams jobs to.

Protocol (see cups_backend/proxyprint.py): ``POST /intake/v1/jobs`` with the
document as a chunked body and ``X-Proxyprint-Meta`` = base64 of a JSON object
(printer, job_id, job_uuid, user, title, copies, options, content_type, host).
The answer is sent only after the job is spooled and committed: 201 new
(or a reprint: a job-uuid whose print-out has ended, sent again by CUPS),
200 duplicate (same job-uuid, its print-out not ended: a retried hand-off),
404 unknown printer and other 4xx (backend: this job fails alone), 507 spool
full and other 5xx (backend: RETRY). A direct job's answer says ``follow``:
the backend then follows the print-out to its end (``intake_status``).
On the Unix socket a raw queue's document comes by descriptor instead of as
a body (``intake_passed``) and is copied into the spool in the kernel.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.charging import color_priced
from billing.enums import PrinterMode, PrintStatus, StatusReason
from billing.models import Printer, PrintIn, PrintOut, User

from ..exceptions import BadRequest, ProxyPrintError
from ..keys import INTAKE, IntakeResources
from ..pages import PageCount, count_pages, limits, refine
from ..spool import CHUNK, Incomplete, SpooledFile
from . import control, intake_status
from . import intake_passed as passed
from .delegation import DelegationError, parse_cups_options
from .jobs import IntakeJob, latest_print_out, record_job, record_reprint
from .options import job_options
from .wake import DISPATCH

log = logging.getLogger(__name__)

META_HEADER = "X-Proxyprint-Meta"
MAX_META = 1024 * 1024
MAX_FIELD = 10_000
MAX_NAME = 255  # user, printer, content type, host: IPP name(MAX), the columns' size
MAX_MEDIA = 127  # print_ins.media


def _has_surrogates(value: str) -> bool:
    """Lone surrogates, as JSON's ``\\udXXX`` escapes decode (not storable text)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _only_byte_escapes(value: str) -> bool:
    """Lone surrogates are the backend's escapes of argv bytes (U+DC80..U+DCFF) only."""
    return all(0xDC80 <= ord(c) <= 0xDCFF for c in value if 0xD800 <= ord(c) <= 0xDFFF)


def _str(
    meta: dict[str, Any],
    key: str,
    *,
    required: bool = False,
    limit: int = MAX_FIELD,
    utf8: bool = True,
) -> str | None:
    """A string field; ``utf8`` refuses lone surrogates (no database stores them).

    Without ``utf8``, the backend's escapes of non-UTF-8 argv bytes are let through
    (the caller keeps the job and says why), any other lone surrogate is refused.
    NUL is refused everywhere: no argv string holds one, and PostgreSQL text cannot.
    """
    value = meta.get(key)
    if value is None:
        if required:
            raise BadRequest(f"job metadata lacks {key!r}")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"job metadata {key!r} must be a string")
    if len(value) > limit:
        raise BadRequest(f"job metadata {key!r} is longer than {limit} characters")
    if "\0" in value:
        raise BadRequest(f"job metadata {key!r} contains a NUL character")
    if _has_surrogates(value) and (utf8 or not _only_byte_escapes(value)):
        raise BadRequest(f"job metadata {key!r} is not valid UTF-8")
    return value


def _storable(text: str) -> str:
    """``text`` with the backend's ``\\udcNN`` (argv byte NN, not UTF-8) stored as ``\\xNN``."""
    if not _has_surrogates(text):
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def _int(meta: dict[str, Any], key: str, default: int | None) -> int | None:
    value = meta.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise BadRequest(f"job metadata {key!r} must be a non-negative integer")
    return value


def parse_meta(header: str | None) -> IntakeJob:
    if not header:
        raise BadRequest(f"missing {META_HEADER} header")
    if len(header) > MAX_META:
        raise BadRequest(f"{META_HEADER} is too large")
    try:
        meta = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:  # RecursionError: nesting
        raise BadRequest(f"{META_HEADER} is not base64 JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise BadRequest(f"{META_HEADER} must hold a JSON object")
    job_uuid = _str(meta, "job_uuid")
    if job_uuid is not None and (len(job_uuid) > 64 or not job_uuid.isprintable()):
        raise BadRequest("job_uuid is malformed")
    copies = _int(meta, "copies", 1)
    return IntakeJob(
        printer=_str(meta, "printer", required=True, limit=MAX_NAME) or "",
        job_id=_int(meta, "job_id", None),
        job_uuid=job_uuid,
        user=_str(meta, "user", required=True, limit=MAX_NAME) or "",
        # A title that is not UTF-8 is kept, held with a reason (jobs.clean_title).
        title=_str(meta, "title", utf8=False) or "",
        copies=max(1, copies or 1),
        # Long options are not refused here: the job is kept, held, with the reason.
        options=_str(meta, "options", limit=MAX_META, utf8=False) or "",
        content_type=_str(meta, "content_type", limit=MAX_NAME),
        host=_str(meta, "host", limit=MAX_NAME),
        time_at_creation=_int(meta, "time_at_creation", None),
        resent=_bool(meta, "resent"),
    )


def _bool(meta: dict[str, Any], key: str) -> bool:
    value = meta.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"job metadata {key!r} must be true or false")
    return value


def origin_key(job: IntakeJob, sender: str) -> str:
    """The key that records a job without a job-uuid once (``print_ins.origin_key``).

    sha256 of (sending host, printer, the sender's job id, its time-at-creation
    when sent). The same request sent twice has the same key and is answered as a
    duplicate, never printed twice; a job without a job id cannot be told from its
    repetition and is refused (the sender fails this job alone). A sender that
    reuses job ids must send ``time_at_creation`` (or a ``job_uuid``).
    """
    if job.job_id is None:
        raise BadRequest(
            "a job without job_uuid must carry job_id (and time_at_creation if the sender"
            " has it): without them a repeated request cannot be told from a new job"
        )
    created = "" if job.time_at_creation is None else str(job.time_at_creation)
    parts = (sender, job.printer, str(job.job_id), created)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _sender(request: web.Request) -> str:
    """The sending host: the TCP peer's address; ``local`` on the Unix socket."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "local"


async def _known(session: AsyncSession, job: IntakeJob) -> int | None:
    """The print-in this job was recorded as already (by job-uuid, else origin key)."""
    if job.job_uuid is not None:
        return await session.scalar(select(PrintIn.id).where(PrintIn.job_uuid == job.job_uuid))
    if job.origin_key is not None:
        return await session.scalar(select(PrintIn.id).where(PrintIn.origin_key == job.origin_key))
    return None


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The document as it arrives; a cut-off or stalled upload raises Incomplete."""
    idle = request.app[INTAKE].config.limits.body_timeout_secs
    try:
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await request.content.read(CHUNK)
            except TimeoutError:
                raise Incomplete(f"the upload stalled: no data for {idle:g} s") from None
            if not chunk:
                break
            yield chunk
    except (
        ConnectionResetError,
        asyncio.IncompleteReadError,
        ClientPayloadError,
        HttpProcessingError,
    ) as exc:
        raise Incomplete(f"the upload was cut off: {exc}") from exc
    if request.content.exception() is not None:
        raise Incomplete("the upload was cut off")


async def _drain(request: web.Request) -> None:
    """Read and drop the body; the answer is decided, so a cut-off upload just ends it."""
    try:
        async for _ in request.content.iter_chunked(CHUNK):
            pass
    except (
        ConnectionResetError,
        asyncio.IncompleteReadError,
        ClientPayloadError,
        HttpProcessingError,
    ):
        pass


def _check_secret(request: web.Request) -> None:
    """Over TCP every request is signed (``intake_auth``); the Unix socket is root's (0600)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport else None
    if isinstance(peer, tuple):
        request.app[INTAKE].auth.check(
            address=str(peer[0]),
            method=request.method,
            path_qs=request.raw_path,
            headers=request.headers,
            meta=request.headers.get(META_HEADER, ""),
        )


# The job, its printer, and the print-in it reprints (None: a new job).
_Checked = tuple[IntakeJob, Printer, int | None] | web.Response
# expect_continue's verdict, for receive_job
PRECHECK = web.RequestKey("precheck", object)
# Where an intake's time goes (ms, in the answer's Server-Timing header): the
# decision before the body, spooling, page count, the database transaction.
TIMING = web.RequestKey("timing", dict)


async def _precheck(request: web.Request) -> _Checked:
    """Who sends what for which printer; an answer when the job must not be read.

    Unknown printer → 404 (the backend fails this job alone); a job-uuid whose
    print-out has not ended → 200 duplicate (a retried hand-off after a lost
    answer: nothing new, the backend follows that print-out); one whose
    print-out ended → a reprint (CUPS restarted the job), unless the backend
    says it ``resent`` the job (its last attempt got no answer: the service
    may have recorded it and printed it since, so it is a duplicate, never a
    second print). A job without a job-uuid is keyed by ``origin_key`` and,
    known, is always a duplicate: such a sender has no way to ask for a
    reprint, and a retry must not print again.
    """
    _check_secret(request)
    passed.announced(request)  # a descriptor only where one can be passed
    job = parse_meta(request.headers.get(META_HEADER))
    if job.job_uuid is None:
        job = dataclasses.replace(job, origin_key=origin_key(job, _sender(request)))
    async with request.app[INTAKE].sessions() as session:
        printer = await session.scalar(select(Printer).where(Printer.name == job.printer))
        active: bool | None = None
        known = await _known(session, job)
        latest = None if known is None else await latest_print_out(session, known)
        refuse = request.app[INTAKE].config.delegation.unknown_user == "refuse"
        if refuse and known is None:
            active = await session.scalar(select(User.active).where(User.name == job.user))
    if printer is None or printer.deleted_at is not None:
        message = f"proxyprint does not know printer {job.printer!r}"
        return _answer(404, {"error": {"code": "unknown-printer", "message": message}})
    if not printer.enabled:  # 5xx: the backend retries, the job waits in CUPS
        message = f"printer {job.printer!r} is disabled; the job waits in CUPS"
        return _answer(503, {"error": {"code": "printer-disabled", "message": message}})
    if refuse and known is None and not active:
        # [delegation] unknown_user = "refuse": CUPS fails this job alone (a 4xx).
        message = f"{job.user[:40]!a} is not a known, active proxyprint user"
        code = StatusReason.USER_UNKNOWN.value
        return _answer(422, {"error": {"code": code, "message": message}})
    ended = latest is not None and PrintStatus(latest.status).is_final
    if known is not None and (job.job_uuid is None or job.resent or not ended):
        return _duplicate(request, known, latest)
    return job, printer, known


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: decide before a single document byte is sent.

    The verdict is kept on the request for ``receive_job``: a refusal is then
    answered by the handler instead of ``100 Continue`` (so it passes the
    middlewares: request id, intake histogram, error format), and an accepted
    job is not looked up twice.
    """
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {request.headers['Expect']}")
    started = time.perf_counter()
    try:
        checked: _Checked | ProxyPrintError = await _precheck(request)
    except ProxyPrintError as exc:
        checked = exc
    request[PRECHECK] = checked
    request[TIMING] = {"precheck": time.perf_counter() - started}
    if isinstance(checked, tuple):
        if passed.announced(request):
            # The descriptor comes next, with the body's one byte: this handler
            # reads it, so the transport must not (it would drop the descriptor).
            passed.hold_reading(request)
            await request.writer.write(passed.CONTINUE)
        else:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def receive_job(request: web.Request) -> web.Response:
    checked = request.get(PRECHECK)
    if isinstance(checked, ProxyPrintError):
        raise checked  # answered instead of 100 Continue: no body follows
    if isinstance(checked, web.Response):
        return checked
    if checked is None:  # the client did not ask for 100-continue
        checked = await _precheck(request)
        if isinstance(checked, web.Response):
            await _drain(request)
            return checked
    job, printer, reprint_of = checked
    config = request.app[INTAKE].config
    spool = request.app[INTAKE].spool
    started = time.perf_counter()
    counted: PageCount | None = None
    if passed.announced(request):
        if not passed.held(request):  # no 100-continue: nothing can carry a descriptor
            raise BadRequest("a document by descriptor needs Expect: 100-continue")
        idle = config.limits.body_timeout_secs
        with await passed.receive(request, timeout=idle) as document:
            # The cheap page count reads cupsd's file while the kernel copies it
            # and another thread hashes it: one pass at the same time, not after.
            counting = (
                asyncio.ensure_future(_count_passed(document.fileno(), job.content_type))
                if reprint_of is None
                else None
            )
            try:
                spooled = await spool.copy_in(
                    document.fileno(),
                    max_bytes=config.spool.max_job_bytes,
                    alive=lambda: passed.connected(request),
                )
            except BaseException:
                if counting is not None:
                    counting.cancel()
                raise
            if counting is not None:
                with contextlib.suppress(OSError):  # counted again from the spool copy
                    counted = await counting
    else:
        spooled = await spool.receive(_body(request), max_bytes=config.spool.max_job_bytes)
    _timed(request, "spool", started)
    try:
        if reprint_of is not None:
            answer = await _reprint(request, printer, reprint_of, spooled)
        else:
            answer = await _record(request, printer, job, spooled, counted)
    except BaseException:
        spool.remove(spooled.path)
        raise
    answer.headers["Server-Timing"] = ", ".join(
        f"{phase};dur={seconds * 1000:.2f}" for phase, seconds in request[TIMING].items()
    )
    return answer


def _timed(request: web.Request, phase: str, started: float) -> float:
    """Record ``phase`` as lasting from ``started`` until now; returns now."""
    now = time.perf_counter()
    request.setdefault(TIMING, {})[phase] = now - started
    return now


async def _record(
    request: web.Request,
    printer: Printer,
    job: IntakeJob,
    spooled: SpooledFile,
    counted: PageCount | None = None,
) -> web.Response:
    config = request.app[INTAKE].config
    options: dict[str, str] = {}
    options_problem: str | None = None
    try:
        options = parse_cups_options(job.options)
    except DelegationError as exc:
        options_problem = str(exc)
    # Parsed as sent (a delegator name that is not UTF-8 holds the job with a
    # reason); stored with such bytes escaped. A media name no printer has is dropped.
    job = dataclasses.replace(job, options=_storable(job.options))
    for key in ("media", "pagesize"):  # where the media size can come from
        media = options.get(key)
        if media is not None and (len(media) > MAX_MEDIA or not media.isprintable()):
            del options[key]
    started = time.perf_counter()
    pages = await _count(Path(spooled.path), job.content_type, printer, options, counted)
    started = _timed(request, "count", started)
    try:
        async with request.app[INTAKE].sessions() as session, session.begin():
            print_out = await record_job(
                session,
                printer,
                job,
                options=options,
                spooled=spooled,
                pages=pages,
                currency=config.money,
                options_problem=options_problem,
                delegation=config.delegation,
            )
            answer = _summary(request, print_out)
            pending = print_out.status == int(PrintStatus.PENDING)
        _timed(request, "commit", started)
    except IntegrityError:
        # The same job-uuid (or origin key) raced in through another connection:
        # record it once.
        request.app[INTAKE].spool.remove(spooled.path)
        async with request.app[INTAKE].sessions() as session:
            known = await _known(session, job)
            latest = None if known is None else await latest_print_out(session, known)
        if known is None:
            raise
        return _duplicate(request, known, latest)
    if pending:  # held jobs and tickets wait for a release
        request.app[INTAKE].waker.wake(DISPATCH)
    return _answer(201, answer)


async def _count(
    path: Path,
    content_type: str | None,
    printer: Printer,
    options: dict[str, str],
    counted: PageCount | None = None,
) -> PageCount:
    """The cheap count (``counted``: already had), then Ghostscript where it
    knows better (``pages.refine``).

    Colour per page is measured only when it changes the cost: the printer
    prices colour apart and the job did not ask for monochrome. Both run in a
    worker thread; Ghostscript is a subprocess bounded by ``limits.GS_TIMEOUT``.
    """
    pages = await asyncio.to_thread(count_pages, path, content_type) if counted is None else counted
    color_matters = color_priced(printer) and not job_options(options).mono
    return await asyncio.to_thread(
        refine, path, pages, color_matters=color_matters, timeout=limits.GS_TIMEOUT
    )


async def _count_passed(fd: int, content_type: str | None) -> PageCount:
    """``count_pages`` of a passed document, through a descriptor of its own
    (duplicated here, closed by the thread), so it stays valid whatever the
    copy does with the original."""
    mine = os.dup(fd)

    def count() -> PageCount:
        try:
            return count_pages(Path(f"/proc/self/fd/{mine}"), content_type)
        finally:
            os.close(mine)

    return await asyncio.to_thread(count)


async def _reprint(
    request: web.Request, printer: Printer, print_in_id: int, spooled: SpooledFile
) -> web.Response:
    """CUPS sent an ended job again (``lp -i N -H restart``): print it again."""
    async with request.app[INTAKE].sessions() as session, session.begin():
        print_in = await session.get(PrintIn, print_in_id, with_for_update=True)
        previous = await latest_print_out(session, print_in_id)
        assert print_in is not None and previous is not None
        if not PrintStatus(previous.status).is_final:  # another connection was first
            request.app[INTAKE].spool.remove(spooled.path)
            return _duplicate(request, print_in_id, previous)
        old_path = print_in.spool_path
        print_out = await record_reprint(
            session,
            printer,
            print_in,
            previous,
            spooled=spooled,
            currency=request.app[INTAKE].config.money,
        )
        answer = _summary(request, print_out)
        answer["reprint_of"] = previous.id
        pending = print_out.status == int(PrintStatus.PENDING)
    request.app[INTAKE].spool.remove(old_path)
    if pending:
        request.app[INTAKE].waker.wake(DISPATCH)
    return _answer(201, answer)


def _follow(request: web.Request, po: PrintOut | None) -> bool:
    """Should the backend stay with this job until its print-out ends?

    Only direct jobs on their way to the printer: a held job (hold mode,
    tickets, an invalid delegation) waits for a person, and a backend that
    waited with it would keep the whole CUPS queue busy.
    """
    if po is not None and po.status_reason == StatusReason.AWAITING_TAP:
        # Authenticated direct print: it prints the moment its owner taps (or is
        # canceled within the window), so the backend stays with it.
        return request.app[INTAKE].config.intake.follow and po.status == PrintStatus.HELD
    return (
        request.app[INTAKE].config.intake.follow
        and po is not None
        and po.mode == PrinterMode.DIRECT.value
        and PrintStatus(po.status) not in (PrintStatus.HELD, *FINAL)
    )


FINAL = (PrintStatus.CANCELED, PrintStatus.ABORTED, PrintStatus.COMPLETED)


def _summary(request: web.Request, po: PrintOut) -> dict[str, Any]:
    return {
        "print_in": po.print_in_id,
        "print_out": po.id,
        "duplicate": False,
        "status": PrintStatus(po.status).label,
        "reason": po.status_reason,
        "message": po.status_message,
        "mode": po.mode,
        "ticket": po.ticket_number,
        "follow": _follow(request, po),
        "text": intake_status.describe(po),
    }


def _duplicate(request: web.Request, print_in_id: int, po: PrintOut | None) -> web.Response:
    body: dict[str, Any] = {"print_in": print_in_id, "duplicate": True, "status": "duplicate"}
    if po is not None:
        body.update(_summary(request, po), duplicate=True)
    return _answer(200, body)


def _answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ProxyPrintError as exc:
        if exc.status == 507:
            log.warning("intake: %s", exc)  # an operator frees space; no traceback
        elif exc.status >= 500:
            log.exception("intake failed")
        return _answer(exc.status, {"error": {"code": exc.code, "message": str(exc)}})
    except OperationalError as exc:
        # SQLite busy or locked, PostgreSQL restarting: the backend retries later.
        log.warning("intake: database unavailable: %s", exc.orig)
        message = "the proxyprint database is busy; the job will be retried"
        return _answer(503, {"error": {"code": "database-busy", "message": message}})


def create_intake_app(resources: IntakeResources) -> web.Application:
    """The intake app, on the main app's config, database, spool and wake-ups."""
    app = web.Application(middlewares=[_errors], client_max_size=0)
    app[INTAKE] = resources
    control.carry_keys(app, resources)  # a CUPS cancel ends the print-out through the lifecycle
    app.router.add_post("/intake/v1/jobs", receive_job, expect_handler=expect_continue)
    intake_status.add_routes(app, check_secret=_check_secret)
    return app
