"""Exactly once under faults: 200 PaperCut jobs, 20 % of PaperCut calls failing or
timing out (some applied before the timeout), and the service killed with SIGKILL
three times. Every adjustment must be applied exactly once and no job lost; the queue
charges the clearing account, as PaperCut does, and every PaperCut account ends exact
to the cent (no double charge)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing.db import make_engine, make_sessionmaker
from billing.enums import OutboxStatus, PrintStatus
from billing.models import OutboxItem, PrintOut
from proxy.devkit.cupsd import PrivateCupsd
from proxy.devkit.documents import make_pdf
from proxy.devkit.papercut.simulator import PaperCutSimulator, install_papercut_backend
from tests.serve_process import ServeProcess, proxyprint_cli

pytestmark = [pytest.mark.cups, pytest.mark.slow]

JOBS = int(os.environ.get("PP_FAULT_JOBS", "200"))
KILLS = 3


async def test_papercut_adjustments_exactly_once_through_faults_and_kills(
    private_cupsd: PrivateCupsd, short_tmp: Path
) -> None:
    root = short_tmp
    db = root / "pp.db"
    sim_db = root / "papercut.db"
    install_papercut_backend(private_cupsd.serverbin, sim_db)
    async with PaperCutSimulator(sim_db, token="tok", hang_seconds=3.0) as sim:
        for user in ("alice", "bob", "carol"):
            sim.add_user(user)
        sim.add_shared_account("proxyprint-clearing")
        sim.add_printer(
            "papercut",
            "pc-fault",
            cost_mono=Decimal("0.07"),
            charge_account="proxyprint-clearing",
        )
        await asyncio.to_thread(
            private_cupsd.add_queue, "pc-fault", sim.device_uri("pc-fault", server="papercut")
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
        env.update(
            PROXYPRINT_CONFIG=str(root / "none.toml"),
            PROXYPRINT_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
            PROXYPRINT_SPOOL_DIR=str(root / "spool"),
            PROXYPRINT_INTAKE_SOCKET=str(root / "intake.sock"),
            PROXYPRINT_HTTP_LISTEN="127.0.0.1:0",
            PROXYPRINT_CUPS_SERVER=private_cupsd.server,
            PROXYPRINT_TRACKER_INTERVAL_SECS="0.2",
            PROXYPRINT_PAPERCUT_URL=sim.url,
            PROXYPRINT_PAPERCUT_TOKEN="tok",
            PROXYPRINT_PAPERCUT_DB_URL=sim.db_url,
            PROXYPRINT_PAPERCUT_TIMEOUT_SECS="1.0",
        )
        (root / "none.toml").write_text("")
        await asyncio.to_thread(proxyprint_cli, env, "db", "upgrade")
        for user in ("alice", "bob", "carol"):
            # --delegate: their jobs charge others (SPEC §3 rights to charge)
            await asyncio.to_thread(proxyprint_cli, env, "user", "add", user, "--delegate")
        await asyncio.to_thread(proxyprint_cli, env, "account", "add", "ProjectX")
        await asyncio.to_thread(
            proxyprint_cli,
            env,
            "printer",
            "add",
            "pp-fault",
            "--target",
            "cups://pc-fault",
            "--mode",
            "direct",
            "--papercut",
        )
        sim.set_faults(fail_rate=0.1, timeout_rate=0.1, seed=7)

        service = ServeProcess("papercut", env, root)
        await service.start()
        pdf = make_pdf(root / "f.pdf", 1)
        rng = random.Random(11)

        async def submit() -> None:
            for i in range(JOBS):
                await asyncio.to_thread(
                    private_cupsd.lp,
                    "pp-fault",
                    pdf,
                    user="carol",
                    title=f"job-{i}",
                    options={"delegators": "alice,bob:2", "shared-accounts": "ProjectX"},
                )

        submitter = asyncio.create_task(submit())
        engine = make_engine(f"sqlite+aiosqlite:///{db}")
        sessions = make_sessionmaker(engine)
        try:
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                service.kill()
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                await service.start()
            await submitter

            deadline = time.monotonic() + 480  # a cap on waiting; a loaded CI machine is slow
            while True:
                async with sessions() as s:
                    done = await s.scalar(
                        select(func.count()).where(PrintOut.status == int(PrintStatus.COMPLETED))
                    )
                    pending_outbox = await s.scalar(
                        select(func.count()).where(OutboxItem.status == int(OutboxStatus.PENDING))
                    )
                    stuck = [
                        (po.id, po.status, po.status_reason, po.status_message, po.target_job_id)
                        for po in await s.scalars(
                            select(PrintOut).where(PrintOut.status != int(PrintStatus.COMPLETED))
                        )
                    ]
                if done == JOBS and pending_outbox == 0:
                    break
                assert time.monotonic() < deadline, (done, pending_outbox, stuck)
                await asyncio.sleep(0.5)
        finally:
            service.stop()
            submitter.cancel()

        async with sessions() as s:
            outs = (await s.scalars(select(PrintOut))).all()
            items = (await s.scalars(select(OutboxItem))).all()
        await engine.dispose()

        assert len(outs) == JOBS  # no job lost, none recorded twice
        assert {po.status for po in outs} == {int(PrintStatus.COMPLETED)}
        local_total = sum((po.cost or Decimal(0) for po in outs), Decimal(0))
        assert local_total == Decimal("0.07") * 4 * JOBS
        assert {i.status for i in items} == {int(OutboxStatus.DONE)}
        markers = {str(i.payload["marker"]) for i in items}
        # One adjustment per delegator account per job, and the clearing account's credit.
        assert len(items) == 4 * JOBS

        adjustments = [a for a in sim.adjustments() if "proxyprint print-out" in a.comment]
        per_marker = Counter(m for a in adjustments for m in markers if m in a.comment)
        assert set(per_marker) == markers
        assert set(per_marker.values()) == {1}, [m for m, n in per_marker.items() if n != 1][:5]
        applied = sum((Decimal(a.amount) for a in adjustments), Decimal(0))
        assert applied == 0  # the clearing credits net the delegators' debits

        # Every PaperCut account exact to the cent: PaperCut charged the clearing
        # account 0.28 a job, proxyprint credited it back and charged 1:2:1.
        assert sim.balance("carol") == 0
        assert sim.shared_balance("proxyprint-clearing") == 0
        assert sim.balance("alice") == Decimal("-0.07") * JOBS
        assert sim.balance("bob") == Decimal("-0.14") * JOBS
        assert sim.shared_balance("ProjectX") == Decimal("-0.07") * JOBS
        assert sim.total_balance() == -local_total  # PaperCut and the ledger agree
