"""Two instances on one PostgreSQL, 1,000 mixed jobs through the private cupsd, one
instance SIGKILLed at random moments three times (and restarted each time).

The mix: direct (to a cupsd queue and to ippeveprinter), hold released by NFC
taps (some canceled), job tickets (released, some to another printer, some
canceled) and PaperCut. Each instance has its own proxy queues (half the jobs
each), its own intake socket and HTTP port; the spool directory is shared, as
it must be between instances. Afterwards:

- every job is recorded once and is in its right end state;
- at the printers, every dispatched print-out is there exactly once (cupsd
  queues: by the job-uuid dispatch sends; ippeveprinter: by the job-name
  marker; PaperCut: by the document name in its print log), and nothing else;
- every completed print-out is charged exactly once in the ledger (nothing for
  canceled ones), PaperCut's adjustments match the PaperCut print-outs' costs
  to the cent, each applied once, and every account's balance (API) is the
  sum of its ledger.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from billing.db import make_engine, make_sessionmaker
from billing.enums import OutboxStatus, PrintStatus
from billing.models import LedgerEntry, OutboxItem, PrintIn, PrintOut
from proxy.devkit.cupsd import PrivateCupsd, free_port
from proxy.devkit.documents import make_pdf
from proxy.devkit.ippeve import IppEvePrinter
from proxy.devkit.papercut.simulator import PaperCutSimulator, install_papercut_backend
from tests.fixtures_cups import queue_job_uuids
from tests.fixtures_db import _truncate_pg
from tests.serve_process import ServeProcess, proxyprint_cli

pytestmark = [pytest.mark.cups, pytest.mark.slow]

JOBS = int(os.environ.get("PP_CLUSTER_JOBS", "1000"))
KILLS = 3
USERS = ("alice", "bob", "carol", "dave")
CARDS = {user: f"04:A1:B2:{i:02X}" for i, user in enumerate(USERS)}
# Share of each kind of job (the rest of JOBS is direct to a cupsd queue).
SHARES = {"eve": 0.05, "hold": 0.2, "ticket": 0.2, "papercut": 0.2}
TARGET_QUEUES = {"direct": "t-direct", "hold": "t-hold", "ticket": "t-ticket"}
S = PrintStatus


@dataclass
class Outcomes:
    """What the clients did, to derive each job's right end state."""

    canceled: set[int] = field(default_factory=set)
    released_to: dict[int, str] = field(default_factory=dict)  # ticket id -> printer
    api_errors: list[str] = field(default_factory=list)


class Api:
    """Calls whichever instance answers (one may be dead at the moment)."""

    def __init__(self, instances: list[ServeProcess], rng: random.Random) -> None:
        self.instances = instances
        self.rng = rng

    async def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        order = self.rng.sample(self.instances, len(self.instances))
        for _ in range(200):
            for inst in order:
                try:
                    async with (
                        aiohttp.ClientSession(inst.url) as s,
                        s.request(
                            method,
                            f"/api/v1{path}",
                            json=body,
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=aiohttp.ClientTimeout(total=30),
                        ) as r,
                    ):
                        return r.status, await r.json()
                except (aiohttp.ClientConnectionError, TimeoutError):
                    continue
            await asyncio.sleep(0.1)
        raise AssertionError(f"no instance answered {method} {path}")

    async def items(self, path: str, token: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            sep = "&" if "?" in path else "?"
            page = f"{path}{sep}limit=200" + (f"&cursor={cursor}" if cursor else "")
            status, body = await self.call("GET", page, token)
            assert status == 200, body
            found += body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return found


def plan(rng: random.Random) -> list[str]:
    kinds = [kind for kind, share in SHARES.items() for _ in range(round(JOBS * share))]
    kinds += ["direct"] * (JOBS - len(kinds))
    rng.shuffle(kinds)
    return kinds


async def test_two_instances_three_kills_every_job_once(
    private_cupsd: PrivateCupsd,
    ippeve_printer: IppEvePrinter,
    pg_database: str,
    short_tmp: Path,
) -> None:
    root = short_tmp
    rng = random.Random(20261121)
    await _truncate_pg(pg_database)
    sim_db = root / "papercut.db"
    install_papercut_backend(private_cupsd.serverbin, sim_db)
    for queue in TARGET_QUEUES.values():
        await asyncio.to_thread(private_cupsd.add_queue, queue, "file:///dev/null")

    async with PaperCutSimulator(sim_db, token="tok") as sim:
        for user in USERS:
            sim.add_user(user)
        sim.add_shared_account("proxyprint-clearing")
        sim.add_printer(
            "papercut",
            "pc-cluster",
            cost_mono=Decimal("0.07"),
            charge_account="proxyprint-clearing",
        )
        await asyncio.to_thread(
            private_cupsd.add_queue, "pc-cluster", sim.device_uri("pc-cluster", server="papercut")
        )
        (root / "none.toml").write_text("")
        base = {k: v for k, v in os.environ.items() if not k.startswith("PROXYPRINT_")}
        base.update(
            PROXYPRINT_CONFIG=str(root / "none.toml"),
            PROXYPRINT_DATABASE_URL=pg_database,
            PROXYPRINT_SPOOL_DIR=str(root / "spool"),
            PROXYPRINT_CUPS_SERVER=private_cupsd.server,
            PROXYPRINT_TRACKER_INTERVAL_SECS="0.2",
            PROXYPRINT_PAPERCUT_URL=sim.url,
            PROXYPRINT_PAPERCUT_TOKEN="tok",
            PROXYPRINT_PAPERCUT_DB_URL=sim.db_url,
        )
        instances = [
            ServeProcess(
                name,
                {
                    **base,
                    "PROXYPRINT_INTAKE_SOCKET": str(root / f"intake-{name}.sock"),
                    "PROXYPRINT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
                    "PROXYPRINT_INSTANCE_NAME": f"print-{name}",
                },
                root,
            )
            for name in ("a", "b")
        ]
        env = instances[0].env
        await asyncio.to_thread(proxyprint_cli, env, "db", "upgrade")
        for user in USERS:
            # --delegate: their jobs charge others (SPEC §3 rights to charge)
            await asyncio.to_thread(proxyprint_cli, env, "user", "add", user, "--delegate")
            await asyncio.to_thread(proxyprint_cli, env, "card", "add", user, CARDS[user])
        await asyncio.to_thread(proxyprint_cli, env, "account", "add", "ProjectX")
        targets = {
            "direct": "cups://t-direct",
            "eve": ippeve_printer.uri,
            "hold": "cups://t-hold",
            "ticket": "cups://t-ticket",
            "papercut": "cups://pc-cluster",
        }
        for inst in instances:  # each instance's own proxy queues (device: its intake)
            for kind, target in targets.items():
                mode = kind if kind in ("hold", "ticket") else "direct"
                extra = ["--papercut"] if kind == "papercut" else []
                await asyncio.to_thread(
                    proxyprint_cli,
                    inst.env,
                    "printer",
                    "add",
                    f"pp-{kind}-{inst.name}",
                    "--target",
                    target,
                    "--mode",
                    mode,
                    *extra,
                )
        reader_token = await asyncio.to_thread(
            proxyprint_cli, env, "reader", "add", "r-cluster", "--printer", "pp-hold-a", "pp-hold-b"
        )
        reader_token = reader_token.split()[-1]
        admin = (
            await asyncio.to_thread(proxyprint_cli, env, "token", "create", "--role", "admin")
        ).split()[-1]
        operator = (
            await asyncio.to_thread(
                proxyprint_cli, env, "token", "create", "--role", "ticket-operator"
            )
        ).split()[-1]

        for inst in instances:
            await inst.start()
        api = Api(instances, rng)
        outcomes = Outcomes()
        kinds = plan(rng)
        pdf = make_pdf(root / "c.pdf", 1)
        submitted = 0

        def submit(worker: int, workers: int) -> None:
            nonlocal submitted
            for i in range(worker, JOBS, workers):
                inst = instances[i % 2]
                options = {"delegators": "alice,bob:2", "shared-accounts": "ProjectX"}
                private_cupsd.lp(
                    f"pp-{kinds[i]}-{inst.name}",
                    pdf,
                    user=USERS[i % len(USERS)],
                    title=f"c{i}",
                    options=options if i % 3 == 0 else {},
                )
                submitted += 1

        async def killer() -> None:
            victim = instances[0]
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(3.0, 12.0))
                victim.kill()
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                await victim.start()

        async def tapper(stop: asyncio.Event) -> None:
            while not stop.is_set():
                user = rng.choice(USERS)
                status, body = await api.call(
                    "POST", "/readers/r-cluster/tap", reader_token, {"card": CARDS[user]}
                )
                if status != 200:
                    outcomes.api_errors.append(f"tap {status} {body}")
                await asyncio.sleep(0.3)

        async def holds_and_tickets(stop: asyncio.Event) -> None:
            while not stop.is_set():
                for job in await api.items("/jobs/held", admin):
                    if job["id"] % 10 == 0 and job["printer"].startswith("pp-hold"):
                        status, body = await api.call("POST", f"/jobs/{job['id']}/cancel", admin)
                        if status == 200:
                            outcomes.canceled.add(job["id"])
                        elif status != 409:  # 409: a tap released it and it printed first
                            outcomes.api_errors.append(f"cancel {status} {body}")
                for ticket in await api.items("/tickets", operator):
                    number = ticket["id"]
                    if number % 10 == 1:
                        status, body = await api.call("POST", f"/tickets/{number}/cancel", operator)
                        if status == 200:
                            outcomes.canceled.add(number)
                        continue
                    to = "pp-direct-a" if number % 3 == 0 else ticket["printer"]
                    status, body = await api.call(
                        "POST", f"/tickets/{number}/release", operator, {"printer": to}
                    )
                    if status == 200:
                        outcomes.released_to[number] = to
                    elif status != 409:
                        outcomes.api_errors.append(f"release {status} {body}")
                await asyncio.sleep(0.5)

        stop = asyncio.Event()
        started = time.monotonic()
        workers = [asyncio.create_task(asyncio.to_thread(submit, w, 4)) for w in range(4)]
        helpers = [
            asyncio.create_task(tapper(stop)),
            asyncio.create_task(holds_and_tickets(stop)),
        ]
        engine = make_engine(pg_database)
        sessions = make_sessionmaker(engine)
        try:
            await killer()
            await asyncio.gather(*workers)
            deadline = time.monotonic() + 720  # a cap on waiting; a loaded CI machine is slow
            while True:
                async with sessions() as s:
                    ins = await s.scalar(select(func.count()).select_from(PrintIn))
                    open_ = await s.scalar(
                        select(func.count()).where(
                            PrintOut.status.not_in([int(S.COMPLETED), int(S.CANCELED)])
                        )
                    )
                    outbox_open = await s.scalar(
                        select(func.count()).where(OutboxItem.status != int(OutboxStatus.DONE))
                    )
                if ins == JOBS and open_ == 0 and outbox_open == 0:
                    break
                if time.monotonic() > deadline:
                    async with sessions() as s:
                        stuck = [
                            (p.id, p.mode, p.status, p.status_reason, p.status_message)
                            for p in await s.scalars(
                                select(PrintOut)
                                .where(PrintOut.status.not_in([int(S.COMPLETED), int(S.CANCELED)]))
                                .limit(10)
                            )
                        ]
                    raise AssertionError((ins, open_, outbox_open, stuck))
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
            stop.set()
            await asyncio.gather(*helpers)
            balances = {a["id"]: Decimal(a["balance"]) for a in await api.items("/accounts", admin)}
        finally:
            stop.set()
            for task in helpers:
                task.cancel()
            for inst in instances:
                inst.stop()

        async with sessions() as s:
            outs = {p.id: p for p in await s.scalars(select(PrintOut))}
            entries = (await s.scalars(select(LedgerEntry))).all()
            items = (await s.scalars(select(OutboxItem))).all()
        await engine.dispose()
        logs = "".join(inst.log.read_text("utf-8", "replace") for inst in instances)
        found_again = logs.count("at the target")  # dispatches found after a kill
        print(
            f"{JOBS} jobs, {KILLS} kills: all ended in {elapsed:.0f} s; {found_again} found again"
        )
        assert "Traceback" not in logs, logs[logs.find("Traceback") - 2000 :][:5000]

        # Every job once, in its right end state.
        assert not outcomes.api_errors, outcomes.api_errors[:5]
        twice = Counter(p.title for p in outs.values())
        extra = [
            (p.id, p.title, p.status, p.status_reason, p.reprint_of, p.print_in_id)
            for p in outs.values()
            if twice[p.title] > 1
        ]
        assert len(outs) == JOBS, extra
        assert {int(t.removeprefix("c")) for t in (p.title for p in outs.values())} == set(
            range(JOBS)
        )
        for po in outs.values():
            want = S.CANCELED if po.id in outcomes.canceled else S.COMPLETED
            assert po.status == int(want), (po.id, po.mode, po.status, po.status_reason)
        assert sum(1 for p in outs.values() if p.status == int(S.CANCELED)) >= max(1, JOBS // 200)
        tickets = [p for p in outs.values() if p.ticket_number is not None]
        assert len(outcomes.released_to) >= 0.8 * len(tickets) > 0
        moved = [p for p in tickets if outcomes.released_to.get(p.id) == "pp-direct-a"]
        assert moved and all(p.target == "cups://t-direct" for p in moved)

        # At the printers: each dispatched print-out exactly once, and nothing else.
        completed = [p for p in outs.values() if p.status == int(S.COMPLETED)]
        assert all(p.dispatch_uuid and p.target_job_id for p in completed)
        for kind, queue in {**TARGET_QUEUES, "papercut": "pc-cluster"}.items():
            at_queue = await queue_job_uuids(private_cupsd, queue)
            # Dispatched: the completed ones, and held jobs a cancel reached only after
            # a tap had released them (canceled at the queue, still listed there).
            dispatched = [p for p in outs.values() if p.target_job_id is not None]
            ours = [p.dispatch_uuid for p in dispatched if p.target == f"cups://{queue}"]
            assert len(ours) > 0, kind
            twice = [u for u, n in Counter(at_queue).items() if n > 1]
            assert not twice, (queue, twice[:5])
            assert sorted(at_queue) == sorted(f"urn:uuid:{u}" for u in ours), queue
        eve_outs = [p for p in completed if p.target == ippeve_printer.uri]
        markers = {str(p.dispatch_uuid).replace("-", "")[:12] for p in eve_outs}
        at_eve = Counter(d.marker for d in ippeve_printer.documents() if d.marker in markers)
        assert set(at_eve) == markers and set(at_eve.values()) == {1}
        pc_outs = [p for p in completed if p.papercut]
        for p in pc_outs:
            assert len(sim.usage_rows(p.document_name)) == 1

        # Charged once: the ledger, PaperCut and the balances agree to the cent.
        charges: dict[int, list[LedgerEntry]] = {}
        for e in entries:
            if e.print_out_id is not None:
                charges.setdefault(e.print_out_id, []).append(e)
        for po in outs.values():
            posted = charges.get(po.id, [])
            if po.status == int(S.CANCELED):
                assert posted == [], po.id
            elif posted or not po.papercut:
                assert posted and sum(e.amount for e in posted) == -(po.cost or 0), po.id
                assert len({e.transaction_id for e in posted}) == len(posted)
        for p in pc_outs:  # PaperCut's page cost, every copy (one per delegation weight)
            assert p.cost == Decimal("0.07") * p.pages * p.copies, p.id
        pc_total = sum((p.cost or Decimal(0) for p in pc_outs), Decimal(0))
        markers_pc = {str(i.payload["marker"]) for i in items if "marker" in i.payload}
        adjustments = [a for a in sim.adjustments() if "proxyprint print-out" in a.comment]
        per_marker = Counter(m for a in adjustments for m in markers_pc if m in a.comment)
        assert set(per_marker) == markers_pc and set(per_marker.values()) == {1}
        # PaperCut charged the clearing account pc_total; proxyprint credited it back.
        assert sum((a.amount for a in adjustments), Decimal(0)) == 0
        assert sim.shared_balance("proxyprint-clearing") == 0
        assert sim.total_balance() == -pc_total
        by_account: dict[int, Decimal] = {}
        for e in entries:
            by_account[e.account_id] = by_account.get(e.account_id, Decimal(0)) + e.amount
        for account_id, balance in balances.items():
            assert balance == by_account.get(account_id, Decimal(0)), account_id
