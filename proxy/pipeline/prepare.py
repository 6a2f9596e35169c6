"""Before a Print-Job leaves: the plan for this target, the conversion, the charge basis.

:func:`prepared` reads the target's capabilities, plans (``plan.plan``),
converts when the plan says so and yields the :class:`PrintRequest`; the
converted file is removed afterwards. It records on the print-out what the
plan changed (options dropped, applied by conversion) and sets what is
charged to what will be printed: impressions per copy after page ranges and
number-up, duplex only when ``sides`` reaches the printer, mono when the job
prints in grey. A document no plan can print, or a conversion that fails,
raises :class:`NotPrintable`; dispatch then holds the job with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from billing import events
from billing.enums import StatusReason
from billing.models import PrintIn, PrintOut

from ..keys import CONFIG, SESSIONS, SPOOL
from ..pages import detect_type
from ..pages.limits import SNIFF_BYTES
from ..targets.base import PrintRequest, Target
from . import convert
from .delegation import DelegationError, parse_cups_options
from .options import JobOptions, job_options
from .plan import Plan, Unsupported, describe, plan


class NotPrintable(Exception):
    """This document cannot be printed on this target as things stand."""

    def __init__(self, reason: StatusReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def options_of(print_in: PrintIn, copies: int) -> JobOptions:
    """A print-in's job options; ``copies`` is the print-out's (the copies rule)."""
    try:
        parsed = parse_cups_options(print_in.options or "")
    except DelegationError:
        parsed = {}
    return dataclasses.replace(job_options(parsed), copies=copies)


def document_format(print_in: PrintIn) -> str:
    """The spooled document's format, from its bytes (CUPS's type is only a hint)."""
    assert print_in.spool_path is not None
    with open(print_in.spool_path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    return detect_type(head, print_in.content_type)[0]


@contextlib.asynccontextmanager
async def prepared(
    app: web.Application,
    target: Target,
    print_out: PrintOut,
    print_in: PrintIn,
    base: PrintRequest,
) -> AsyncIterator[tuple[PrintRequest, Plan]]:
    caps = await target.capabilities(refresh=print_out.attempts > 0)
    fmt = await asyncio.to_thread(document_format, print_in)
    options = options_of(print_in, print_out.copies)
    try:
        chosen = plan(fmt, options, caps)
        inner = max(1, print_in.document_copies or 1)
        if chosen.converts and inner > 1:
            # Converting drops the copies a PostScript (or PJL) document asks for
            # itself; they are charged, so they are made by us or the printer.
            options = dataclasses.replace(options, copies=options.copies * inner)
            chosen = plan(fmt, options, caps)
    except Unsupported as exc:
        raise NotPrintable(StatusReason.FORMAT_UNSUPPORTED, str(exc)) from None
    await _record(app, print_out, print_in, chosen, fmt=fmt, asked=options)
    workdir = Path(app[SPOOL].root) / "convert" / str(print_out.id)
    try:
        path = Path(base.path)
        if chosen.converts:
            timeout = app[CONFIG].dispatch.convert_timeout_secs
            try:
                path = await convert.run(chosen.steps, path, workdir, timeout=timeout)
            except convert.ConversionError as exc:
                raise NotPrintable(
                    StatusReason.CONVERSION_FAILED,
                    f"{describe(fmt)} to {describe(chosen.document_format)}: {exc}",
                ) from None
        request = PrintRequest(
            path=path,
            document_format=chosen.document_format,
            job_name=base.job_name,
            requesting_user=base.requesting_user,
            copies=chosen.copies,
            job_attributes=chosen.attributes,
            job_uuid=base.job_uuid,
        )
        yield request, chosen
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


async def _record(
    app: web.Application,
    print_out: PrintOut,
    print_in: PrintIn,
    chosen: Plan,
    *,
    fmt: str,
    asked: JobOptions,
) -> None:
    """The charge basis as printed, and an event for each change the plan made."""
    printed = chosen.options
    pages = printed.impressions(print_in.pages)
    async with app[SESSIONS]() as session, session.begin():
        po = await session.get(PrintOut, print_out.id)
        pin = await session.get(PrintIn, print_in.id)
        assert po is not None and pin is not None
        po.pages = pages
        pin.duplex = printed.duplex
        if printed.mono:
            pin.color = False
        print_out.pages = pages
        if chosen.converts:
            events.record(
                session,
                subject_type="print_out",
                subject_id=po.id,
                actor="dispatch",
                reason=StatusReason.CONVERTED,
                message=f"{describe(fmt)} converted to {describe(chosen.document_format)}"
                + (
                    f"; applied by conversion: {', '.join(chosen.applied)}"
                    if chosen.applied
                    else ""
                ),
                data={"steps": [s.label for s in chosen.steps], "printed": printed.summary()},
            )
        notes = list(chosen.dropped)
        if printed.unknown:
            names = ", ".join(printed.unknown)[:300]
            notes.append(f"not printer options, kept with the job: {names}")
        if notes:
            message = "; ".join(notes)
            events.record(
                session,
                subject_type="print_out",
                subject_id=po.id,
                actor="dispatch",
                reason=StatusReason.OPTION_DROPPED,
                message=message[:1000],
                data={"asked": asked.summary(), "unknown": list(printed.unknown)},
            )
