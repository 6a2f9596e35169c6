"""The service SIGKILLed and restarted while 20 direct jobs are followed (issue #13).

Twenty proxy queues (cupsd runs one job per queue at a time, so twenty
backends follow at once), a held ippeveprinter (jobs stay processing or wait
their turn), ``proxyprint serve`` as its own process. Once every backend is
following, the service is killed and started again; then the printer is
released. Every backend reconnects, every CUPS job ends as its print-out did
(completed), and every document was printed once."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing.db import make_engine, make_sessionmaker
from billing.enums import PrintStatus
from billing.models import PrintOut
from proxy.devkit.cupsd import TERMINAL_STATES, PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.targets.base import IppJobState
from tests.serve_process import ServeProcess, proxyprint_cli

pytestmark = pytest.mark.cups
JOBS = 20


async def test_backends_follow_their_jobs_through_a_service_restart(
    private_cupsd: PrivateCupsd, short_tmp: Path
) -> None:
    root = short_tmp
    db = root / "pp.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
    env.update(
        PROXYPRINT_CONFIG=str(root / "none.toml"),
        PROXYPRINT_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        PROXYPRINT_SPOOL_DIR=str(root / "spool"),
        PROXYPRINT_INTAKE_SOCKET=str(root / "intake.sock"),
        PROXYPRINT_HTTP_LISTEN="127.0.0.1:0",
        PROXYPRINT_CUPS_SERVER=private_cupsd.server,
        PROXYPRINT_TRACKER_INTERVAL_SECS="0.2",
    )
    (root / "none.toml").write_text("")
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    sessions = make_sessionmaker(engine)
    with IppEvePrinter() as printer:
        await asyncio.to_thread(proxyprint_cli, env, "db", "upgrade")
        await asyncio.to_thread(proxyprint_cli, env, "user", "add", "carol")
        queues = [f"pp-restart-{i}" for i in range(JOBS)]
        for queue in queues:
            await asyncio.to_thread(
                proxyprint_cli, env, "printer", "add", queue, "--target", printer.uri,
                "--mode", "direct", "--cost-mono", "0.10",
            )  # fmt: skip
        service = ServeProcess("restart", env, root)
        await service.start()
        pdf = make_pdf(root / "job.pdf", 1)
        printer.hold()
        try:
            jobs = {
                queue: await asyncio.to_thread(
                    private_cupsd.lp, queue, pdf, user="carol", title=f"restart-{i}"
                )
                for i, queue in enumerate(queues)
            }

            async def recorded() -> int:
                async with sessions() as s:
                    return int(await s.scalar(select(func.count()).select_from(PrintOut)) or 0)

            deadline = time.monotonic() + 60
            while await recorded() < JOBS:  # every backend handed its job over: all follow
                assert time.monotonic() < deadline, f"{await recorded()} of {JOBS} recorded"
                await asyncio.sleep(0.2)
            states = [await asyncio.to_thread(private_cupsd.job_state, j) for j in jobs.values()]
            assert set(states) == {IppJobState.PROCESSING}, states  # following, not completed

            service.kill()
            await asyncio.sleep(1.0)
            await service.start()
            printer.release()

            ended = {
                queue: await asyncio.to_thread(
                    private_cupsd.wait_job, job, TERMINAL_STATES, timeout=120
                )
                for queue, job in jobs.items()
            }
        finally:
            printer.release()
            service.stop()
        async with sessions() as s:
            outs = (await s.scalars(select(PrintOut))).all()
        await engine.dispose()
        printed = Counter(d.title for d in printer.documents() if d.status == "completed")

    assert set(ended.values()) == {IppJobState.COMPLETED}, ended
    assert len(outs) == JOBS and {po.status for po in outs} == {int(PrintStatus.COMPLETED)}
    assert printed == Counter(f"restart-{i}" for i in range(JOBS))  # each printed once
    # The backends saw the service go and come back (their INFO lines, in cupsd's log).
    assert "Waiting for proxyprint to come back" in private_cupsd.error_log
