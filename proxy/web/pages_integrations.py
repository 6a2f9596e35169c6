"""Admin: Integrations. PaperCut's server checks with Fix; the OfficeRnD sync with its
live progress and the summaries of the last runs.

The checks are ``billing.papercut.checks`` with the settings ``proxyprint papercut
check|fix`` uses (the clearing account, the PaperCut-managed queues); Sync is
``proxy.pipeline.officernd.sync_now``, a run recorded like the scheduled ones.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy import select

from billing.enums import Role
from billing.models import Printer, ScheduledRun
from billing.money import parse_amount
from billing.officernd.mirror import SYNC_JOB
from billing.papercut import checks
from billing.papercut.exceptions import PaperCutFault, PaperCutUnavailable
from proxy.exceptions import Conflict
from proxy.keys import CONFIG, OFFICERND, PAPERCUT, READ_SESSIONS, WEB_SYNC
from proxy.pipeline.officernd import sync_now

from .auth import signed_form, signed_in
from .render import html

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECS = 15.0
RUNS_SHOWN = 10
# The summary fields a person reads first (SyncSummary.as_dict has them all).
SUMMARY_FIELDS = ("members", "wanted", "created", "recreated", "updated", "moved", "removed",
                  "unlinked", "groups_created", "errors")  # fmt: skip


async def _managed_queues(request: web.Request) -> set[str]:
    """As ``proxyprint papercut check``: the queues PaperCut-managed printers send to."""
    async with request.app[READ_SESSIONS]() as session, session.begin():
        targets = await session.scalars(select(Printer.target).where(Printer.papercut.is_(True)))
        return {t.removeprefix("cups://").strip("/") for t in targets if t.startswith("cups://")}


async def _check_args(request: web.Request) -> dict[str, Any]:
    return {
        "clearing_account": request.app[CONFIG].papercut.clearing_account or None,
        "managed": await _managed_queues(request),
    }


async def _papercut_problems(request: web.Request) -> tuple[list[checks.Problem] | None, str]:
    if PAPERCUT not in request.app:
        return None, "PaperCut is not set up ([papercut] url)."
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECS):
            found = await checks.check(request.app[PAPERCUT], **await _check_args(request))
    except (PaperCutUnavailable, PaperCutFault, TimeoutError) as exc:
        return None, f"PaperCut could not be checked: {exc or 'no answer in time'}"
    return found, ""


def summary_text(summary: dict[str, Any] | None) -> str:
    """A run's summary as a person reads it (a failed run's error)."""
    if not summary:
        return ""
    if "error" in summary:
        return str(summary["error"])
    return ", ".join(f"{k.replace('_', ' ')} {summary[k]}" for k in SUMMARY_FIELDS if k in summary)


async def _runs(request: web.Request) -> list[tuple[ScheduledRun, str]]:
    async with request.app[READ_SESSIONS]() as session, session.begin():
        rows = await session.scalars(
            select(ScheduledRun)
            .where(ScheduledRun.job == SYNC_JOB, ScheduledRun.period != "initial")
            .order_by(ScheduledRun.started_at.desc(), ScheduledRun.id.desc())
            .limit(RUNS_SHOWN)
        )
        return [(run, summary_text(run.summary)) for run in rows]


async def integrations(request: web.Request) -> web.Response:
    signed_in(request, Role.ADMIN)
    problems, papercut_note = await _papercut_problems(request)
    query = request.query
    return html(
        request,
        "integrations.html",
        problems=problems,
        papercut_note=papercut_note,
        fixable=any(p.fixable or p.kind is checks.ProblemKind.NO_COST for p in problems or ()),
        fix_report={k: query.get(k, "") for k in ("fixed", "failed", "person")},
        officernd_on=OFFICERND in request.app,
        sync=request.app[WEB_SYNC],
        runs=await _runs(request),
    )


async def papercut_fix(request: web.Request) -> web.Response:
    _, form = await signed_form(request, Role.ADMIN)
    if PAPERCUT not in request.app:
        raise Conflict("PaperCut is not set up ([papercut] url)")
    raw_cost = form.get("default_cost", "").strip()
    cost: Decimal | None = parse_amount(raw_cost, field="default page cost") if raw_cost else None
    report = await checks.fix(
        request.app[PAPERCUT], default_cost=cost, **await _check_args(request)
    )
    raise web.HTTPSeeOther(
        f"/admin/integrations?fixed={len(report.fixed)}&failed={len(report.failed)}"
        f"&person={len(report.needs_person)}#papercut"
    )


async def _run_sync(app: web.Application) -> None:
    progress = app[WEB_SYNC]
    try:
        progress.period = period = await sync_now(app, progress)
        async with app[READ_SESSIONS]() as session, session.begin():
            row = await session.scalar(
                select(ScheduledRun).where(
                    ScheduledRun.job == SYNC_JOB, ScheduledRun.period == period
                )
            )
        progress.state = "done" if row is not None and row.state == "done" else "failed"
        progress.line = summary_text(row.summary if row is not None else None)
    except Exception as exc:  # the run's own failures are recorded by sync_now
        log.exception("officernd sync from the web page failed")
        progress.state, progress.line = "failed", str(exc)[:500]


async def officernd_sync(request: web.Request) -> web.Response:
    await signed_form(request, Role.ADMIN)
    if OFFICERND not in request.app:
        raise Conflict("OfficeRnD is not set up ([officernd] api_url, with [papercut])")
    progress = request.app[WEB_SYNC]
    if progress.running:
        raise Conflict("a sync started here is still running")
    progress.start()
    progress.task = asyncio.create_task(_run_sync(request.app), name="web-officernd-sync")
    raise web.HTTPSeeOther("/admin/integrations#officernd")


async def sync_status(request: web.Request) -> web.Response:
    signed_in(request, Role.ADMIN)
    return web.json_response(request.app[WEB_SYNC].as_json(), headers={"Cache-Control": "no-store"})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/integrations", integrations, name="web.integrations"),
        web.post("/admin/integrations/papercut/fix", papercut_fix, name="web.papercut-fix"),
        web.post("/admin/integrations/sync", officernd_sync, name="web.officernd-sync"),
        web.get("/admin/integrations/sync/status", sync_status, name="web.sync-status"),
    ]
