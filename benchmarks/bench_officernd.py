"""OfficeRnD: initial sync of 5,000 members, a no-op resync, and the day's fees.

Both simulators run in their own processes, as the real servers would, with
10 ms of latency on every call: the OfficeRnD simulator has a ``latency``
knob; the PaperCut simulator has none, so a subclass here (no change to its
files) sleeps 10 ms before each XML-RPC call. proxyprint's side (the clients,
the sync, the database: SQLite in a scratch directory) runs in this process.
The call counts are the clients' (``calls``: HTTP requests made).

Baseline: the reference integration takes "about 20 minutes" for 5,000
members (``reference/officernd-papercut-integration.txt``): 1,200 s. Goals:
initial sync < 60 s; a resync with no change < 5 s and no write call; fees
for 5,000 users < 30 s.

``python -m benchmarks.bench_officernd serve-papercut|serve-officernd ...``
is how this benchmark starts its simulator processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

from billing.db import make_engine, make_sessionmaker
from billing.enums import Provisioning
from billing.money import Currency
from billing.officernd.client import OfficeRnDClient
from billing.officernd.fees import run_fees
from billing.officernd.filter import MemberFilter
from billing.officernd.sync import run_sync
from billing.papercut import printlog
from billing.papercut.client import PaperCutClient, is_write
from proxy import dbadmin
from proxy.devkit.officernd.simulator import OfficeRnDSimulator
from proxy.devkit.papercut.simulator import PaperCutSimulator

from .harness import scratch_dir

MEMBERS = 5_000
COMPANIES = 600
INDIVIDUALS = 400
LATENCY = 0.010
BASELINE_SECONDS = 1_200.0
TOKEN = "bench"


class SlowPaperCut(PaperCutSimulator):
    """The PaperCut simulator with a fixed latency per XML-RPC call."""

    latency = LATENCY

    async def _xmlrpc(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.latency)
        return await super()._xmlrpc(request)


# --- the simulator processes ------------------------------------------------------------


async def _serve(kind: str, args: Sequence[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if kind == "serve-papercut":
        async with SlowPaperCut(Path(args[0]), token=TOKEN) as papercut:
            print(json.dumps({"url": papercut.url, "db_url": papercut.db_url}), flush=True)
            await stop.wait()
        return
    async with OfficeRnDSimulator(latency=LATENCY) as officernd:
        officernd.seed_members(
            MEMBERS - INDIVIDUALS, COMPANIES, INDIVIDUALS, statuses={"active": 1}, seed=1
        )
        print(
            json.dumps(
                {
                    "api_url": officernd.api_url,
                    "token_url": officernd.token_url,
                    "org": officernd.org,
                    "client_id": officernd.client_id,
                    "client_secret": officernd.client_secret,
                }
            ),
            flush=True,
        )
        await stop.wait()


@contextlib.asynccontextmanager
async def _process(*args: str) -> AsyncIterator[dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.bench_officernd", *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        yield json.loads(line)
    finally:
        proc.terminate()
        await proc.wait()


# --- the benchmark ------------------------------------------------------------------------


def _calls(counter: Counter[str]) -> str:
    writes = sum(n for m, n in counter.items() if is_write(m))
    top = ", ".join(f"{m.removeprefix('api.')} {n:,}" for m, n in counter.most_common(3))
    return f"{sum(counter.values()):,} calls, {writes:,} writes ({top})"


def _ornd_calls(counter: Counter[str]) -> str:
    top = ", ".join(f"{k} {n:,}" for k, n in counter.most_common(3))
    return f"{sum(counter.values()):,} requests ({top})"


def _fees_received(api_url: str) -> int:
    with urllib.request.urlopen(f"{api_url}/sim/fees", timeout=30) as answer:
        return len(json.load(answer))


async def _run(root: Path) -> list[str]:
    url = f"sqlite+aiosqlite:///{root / 'proxyprint.db'}"
    engine = make_engine(url)
    await dbadmin.upgrade(engine)
    sessions = make_sessionmaker(engine)
    lines: list[str] = []
    async with (
        _process("serve-papercut", str(root / "papercut.db")) as pc_sim,
        _process("serve-officernd") as ornd_sim,
    ):
        log_engine = create_async_engine(pc_sim["db_url"])

        async def applied(marker: str) -> bool:
            return await printlog.adjustment_applied(log_engine, marker)

        async with (
            PaperCutClient(pc_sim["url"], TOKEN) as papercut,
            OfficeRnDClient(
                ornd_sim["api_url"],
                ornd_sim["org"],
                token_url=ornd_sim["token_url"],
                client_id=ornd_sim["client_id"],
                client_secret=ornd_sim["client_secret"],
            ) as officernd,
        ):

            async def sync() -> tuple[float, str]:
                papercut.calls.clear()
                officernd.calls.clear()
                start = time.perf_counter()
                summary = await run_sync(
                    sessions,
                    officernd,
                    papercut,
                    member_filter=MemberFilter(),
                    applied=applied,
                    # The simulator process has no directory program here: internal users.
                    provisioning=Provisioning.INTERNAL,
                )
                took = time.perf_counter() - start
                assert summary.errors == 0, summary.error_details[:5]
                return took, summary.line()

            initial, line = await sync()
            lines.append(
                f"officernd initial sync ({MEMBERS:,} members, {COMPANIES} companies, "
                f"{LATENCY * 1000:.0f} ms per call): {initial:.1f} s; reference integration "
                f"~{BASELINE_SECONDS:,.0f} s; ratio {initial / BASELINE_SECONDS:.3f}x (goal < 60 s)"
            )
            lines.append(
                f"  PaperCut {_calls(papercut.calls)}; OfficeRnD {_ornd_calls(officernd.calls)}"
            )
            lines.append(f"  {line}")

            resync, line = await sync()
            writes = sum(n for m, n in papercut.calls.items() if is_write(m))
            lines.append(
                f"officernd resync, no change: {resync:.2f} s, {writes} PaperCut write calls "
                f"(goal < 5 s, 0 writes); initial / resync {initial / resync:.0f}x"
            )
            lines.append(
                f"  PaperCut {_calls(papercut.calls)}; OfficeRnD {_ornd_calls(officernd.calls)}"
            )

            users = await papercut.all_user_accounts()
            gate = asyncio.Semaphore(16)

            async def printed(n: int, user: str) -> None:
                async with gate:
                    amount = -Decimal(1 + n % 900) / 100
                    await papercut.adjust_user_account_balance(user, amount, "printing")

            await asyncio.gather(*(printed(n, user) for n, user in enumerate(users)))
            papercut.calls.clear()
            officernd.calls.clear()
            start = time.perf_counter()
            fees = await run_fees(
                sessions,
                officernd,
                papercut,
                applied,
                day=date(2024, 6, 3),
                currency=Currency("EUR", 2),
                wait=30,
            )
            took = time.perf_counter() - start
            assert fees.done == len(users) and not fees.errors, fees.line()
            lines.append(
                f"officernd fees ({len(users):,} negative balances): {took:.1f} s "
                f"(goal < 30 s); {fees.total} billed in "
                f"{_fees_received(ornd_sim['api_url']):,} fees, PaperCut zeroed"
            )
            lines.append(
                f"  PaperCut {_calls(papercut.calls)}; OfficeRnD {_ornd_calls(officernd.calls)}"
            )
        await log_engine.dispose()
    await engine.dispose()
    return lines


def main() -> None:
    with scratch_dir("ppbench-officernd-") as root:
        lines = asyncio.run(_run(root))
    for line in lines:
        print(line, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] and sys.argv[1].startswith("serve-"):
        asyncio.run(_serve(sys.argv[1], sys.argv[2:]))
    else:
        main()
