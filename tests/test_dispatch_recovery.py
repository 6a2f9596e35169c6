"""Never twice at the printer: a dispatch that dies after the target accepted the
job, before our commit, is found at the target by its job-uuid on the next
attempt and recorded, not sent again (real cupsd queue and real ippeveprinter)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select, update

from billing.db import utcnow
from billing.enums import PrintStatus
from billing.models import Event, PrintIn, PrintOut
from proxy.app import create_app
from proxy.config import build_config
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.keys import INSTANCE, SESSIONS, TARGETS
from proxy.pipeline.dispatch import claim_due, dispatch_one
from proxy.targets.base import PrintRequest, SubmittedJob
from tests import factories
from tests.fixtures_cups import queue_job_uuids, unique

pytestmark = pytest.mark.cups


class Killed(BaseException):
    """The process dying between the target's answer and our commit."""


@pytest.fixture(scope="module")
def queue(private_cupsd: PrivateCupsd) -> str:
    name = unique("recover").replace("-", "_")
    private_cupsd.add_queue(name, "file:///dev/null")
    return name


@pytest.fixture
async def app(
    db_url: str, tmp_path: Path, private_cupsd: PrivateCupsd
) -> AsyncIterator[web.Application]:
    config = build_config(
        {
            "database": {"url": db_url},
            "spool": {"dir": str(tmp_path / "spool")},
            "cups": {"server": private_cupsd.server},
        }
    )
    application = create_app(config, workers=False, intake=False)
    runner = web.AppRunner(application)
    await runner.setup()
    try:
        yield application
    finally:
        await runner.cleanup()


async def pending(app: web.Application, target: str, title: str, pdf: Path) -> int:
    async with app[SESSIONS]() as s, s.begin():
        await factories.user(s, "carol")
        printer = await factories.printer(s, unique("pp"), target=target)
        po = await factories.print_out(s, printer, "carol", title=title, pages=1)
        pin = await s.get(PrintIn, po.print_in_id)
        assert pin is not None
        pin.spool_path, pin.content_type = str(pdf), "application/pdf"
        po.next_action_at = utcnow()
        return po.id


async def dispatch(app: web.Application, po_id: int) -> None:
    """One dispatch attempt as the worker makes it: claim, then send."""
    async with app[SESSIONS]() as s, s.begin():
        await s.execute(
            update(PrintOut)
            .where(PrintOut.id == po_id)
            .values(next_action_at=utcnow(), claimed_by=None, claim_until=None)
        )
        assert po_id in await claim_due(s, app[INSTANCE].name)
    await dispatch_one(app, po_id)


async def load(app: web.Application, po_id: int) -> PrintOut:
    async with app[SESSIONS]() as s:
        po = await s.get(PrintOut, po_id)
        assert po is not None
        return po


async def die_after_submit(app: web.Application, uri: str, po_id: int) -> SubmittedJob:
    """First attempt: the target creates the job, then the process dies."""
    target = app[TARGETS].get(uri)
    accepted: list[SubmittedJob] = []
    real = target.submit

    async def submit_then_die(req: PrintRequest) -> SubmittedJob:
        accepted.append(await real(req))
        raise Killed

    target.submit = submit_then_die  # type: ignore[method-assign]
    try:
        for _ in range(150):
            try:
                await dispatch(app, po_id)
            except Killed:
                break
            await asyncio.sleep(0.2)  # a busy printer: the attempt recorded a retry
        else:
            raise AssertionError("the target never accepted the job")
    finally:
        del target.submit  # back to the class's method
    (job,) = accepted
    po = await load(app, po_id)
    assert po.dispatch_uuid is not None and po.dispatched_at is None
    assert po.status == int(PrintStatus.PENDING)
    return job


async def test_cups_queue_job_accepted_before_a_crash_is_found_not_resent(
    app: web.Application, private_cupsd: PrivateCupsd, queue: str, tmp_path: Path
) -> None:
    pdf = make_pdf(tmp_path / "r.pdf", 1)
    po_id = await pending(app, f"cups://{queue}", "budget.pdf", pdf)
    job = await die_after_submit(app, f"cups://{queue}", po_id)
    before = len(await queue_job_uuids(private_cupsd, queue))

    await dispatch(app, po_id)

    po = await load(app, po_id)
    assert po.dispatched_at is not None and po.target_job_id == job.job_id
    assert len(await queue_job_uuids(private_cupsd, queue)) == before  # none new
    async with app[SESSIONS]() as s:
        (event,) = (
            await s.scalars(
                select(Event).where(
                    Event.subject_type == "print_out",
                    Event.subject_id == str(po_id),
                    Event.reason == "dispatched",
                )
            )
        ).all()
    assert "not sent again" in (event.message or "")


async def test_ippeve_job_accepted_before_a_crash_prints_once(
    app: web.Application, ippeve_printer: IppEvePrinter, tmp_path: Path
) -> None:
    pdf = make_pdf(tmp_path / "r.pdf", 1)
    title = unique("once")
    po_id = await pending(app, ippeve_printer.uri, title, pdf)
    job = await die_after_submit(app, ippeve_printer.uri, po_id)
    await dispatch(app, po_id)
    po = await load(app, po_id)
    assert po.target_job_id == job.job_id
    docs = await asyncio.to_thread(
        ippeve_printer.wait_for_documents, 1, 20.0, where=lambda d: d.title == title
    )
    await asyncio.sleep(0.5)
    assert len([d for d in ippeve_printer.documents() if d.title == title]) == 1
    assert docs[0].job_id == job.job_id


async def test_a_refused_print_job_clears_the_uuid_so_the_next_attempt_just_sends(
    app: web.Application, private_cupsd: PrivateCupsd, tmp_path: Path
) -> None:
    name = unique("refuse").replace("-", "_")
    await asyncio.to_thread(private_cupsd.add_queue, name, "file:///dev/null")
    env = private_cupsd.env()
    await asyncio.to_thread(subprocess.run, ["cupsreject", name], env=env, check=True)
    pdf = make_pdf(tmp_path / "r.pdf", 1)
    po_id = await pending(app, f"cups://{name}", "x.pdf", pdf)
    await dispatch(app, po_id)
    po = await load(app, po_id)
    assert po.dispatched_at is None and po.status_message is not None
    assert po.dispatch_uuid is None  # cupsd answered: no job exists, nothing to look for
    await asyncio.to_thread(subprocess.run, ["cupsaccept", name], env=env, check=True)
    await dispatch(app, po_id)
    po = await load(app, po_id)
    assert po.dispatched_at is not None and po.dispatch_uuid is not None
    assert len(await queue_job_uuids(private_cupsd, name)) == 1


async def test_a_claim_another_instance_took_over_is_left_to_it(
    app: web.Application, private_cupsd: PrivateCupsd, queue: str, tmp_path: Path
) -> None:
    pdf = make_pdf(tmp_path / "r.pdf", 1)
    po_id = await pending(app, f"cups://{queue}", "taken.pdf", pdf)
    async with app[SESSIONS]() as s, s.begin():
        assert po_id in await claim_due(s, app[INSTANCE].name)
        # Ours expired while earlier jobs of the batch were sent; another took it.
        await s.execute(
            update(PrintOut)
            .where(PrintOut.id == po_id)
            .values(claimed_by="other-instance", claim_until=utcnow() + timedelta(minutes=1))
        )
    before = len(await queue_job_uuids(private_cupsd, queue))
    await dispatch_one(app, po_id)
    po = await load(app, po_id)
    assert po.dispatched_at is None and po.dispatch_uuid is None
    assert po.claimed_by == "other-instance"
    assert len(await queue_job_uuids(private_cupsd, queue)) == before
