"""The whole service running in-process next to a private cupsd: demo and e2e tests.

``ServiceStack`` builds a config for a private directory, migrates the
database, serves the app (API on a free port, intake on a Unix socket), and
offers the set-up steps an administrator would run with the CLI.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts
from billing.db import make_engine
from billing.enums import FINAL_STATUSES, PrintStatus
from billing.models import Printer, PrintIn, PrintOut

from .. import cupsadmin, dbadmin, nfc_admin, printers, tokens
from ..app import create_app
from ..config import Config, build_config
from ..exceptions import ProxyPrintError
from ..keys import SESSIONS
from ..listen import GuardedRunner
from .cupsd import PrivateCupsd, free_port


class ServiceStack:
    def __init__(
        self,
        cupsd: PrivateCupsd,
        root: Path,
        *,
        db_url: str | None = None,
        tracker_interval: float = 0.2,
        extra: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.cupsd = cupsd
        self.root = root
        self.db_url = db_url or f"sqlite+aiosqlite:///{root / 'proxyprint.db'}"
        raw: dict[str, dict[str, Any]] = {
            "database": {"url": self.db_url},
            "spool": {"dir": str(root / "spool")},
            "intake": {"socket": str(root / "intake.sock")},
            "cups": {"server": cupsd.server, "serverbin": str(cupsd.serverbin)},
            "tracker": {"interval_secs": tracker_interval},
            "http": {"listen": f"127.0.0.1:{free_port()}"},
        }
        for section, values in (extra or {}).items():
            raw.setdefault(section, {}).update(values)
        self.config: Config = build_config(raw, {})
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.http.listen}"

    @property
    def intake_socket(self) -> str:
        return self.config.intake.socket

    async def migrate(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        engine = make_engine(self.db_url)
        try:
            await dbadmin.upgrade(engine)
        finally:
            await engine.dispose()

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.app = create_app(self.config)
        self._runner = GuardedRunner(
            self.app, name="api", limits=self.config.limits, handle_signals=False, access_log=None
        )
        await self._runner.setup()
        host, _, port = self.config.http.listen.rpartition(":")
        await web.TCPSite(self._runner, host, int(port)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self.app = None

    async def __aenter__(self) -> ServiceStack:
        await self.migrate()
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- what an administrator sets up ---------------------------------

    def _sessions(self) -> async_sessionmaker[AsyncSession]:
        if self.app is None:
            raise ProxyPrintError("the service is not running")
        return self.app[SESSIONS]

    async def add_printer(self, name: str, *, target: str, mode: str = "direct", **kw: Any) -> None:
        async with self._sessions()() as session, session.begin():
            await printers.add_printer(session, name, target=target, mode=mode, **kw)
        await asyncio.to_thread(
            cupsadmin.create_queue,
            name,
            printers.device_uri(self.intake_socket),
            cups_server=self.cupsd.server,
            error_policy=printers.PROXY_QUEUE_ERROR_POLICY,
        )

    async def add_users(
        self, *names: str, groups: Iterable[str] = (), delegate: bool = False
    ) -> None:
        """Users (in ``groups``); ``delegate``: with the right to charge others."""
        async with self._sessions()() as session, session.begin():
            for name in names:
                user = await accounts.create_user(session, name, groups=list(groups))
                user.can_delegate = delegate

    async def add_group(self, name: str) -> None:
        async with self._sessions()() as session, session.begin():
            await accounts.create_group(session, name)

    async def add_shared_account(self, path: str) -> None:
        async with self._sessions()() as session, session.begin():
            await accounts.create_shared_account(session, path)

    async def add_card(self, user: str, card: str) -> str:
        async with self._sessions()() as session, session.begin():
            return (await nfc_admin.add_card(session, user, card)).number

    async def add_reader(self, reader_id: str, printers: list[str]) -> str:
        """A reader for hold printers; returns its token."""
        async with self._sessions()() as session, session.begin():
            return await nfc_admin.add_reader(session, reader_id, printers)

    async def token(self, role: str, user: str | None = None) -> str:
        async with self._sessions()() as session, session.begin():
            return await tokens.create_api_token(session, role, user=user)

    # --- following jobs --------------------------------------------------

    async def lp(self, queue: str, file: Path | None, **kw: Any) -> int:
        return await asyncio.to_thread(self.cupsd.lp, queue, file, **kw)

    async def print_out_for(self, printer: str, cups_job_id: int) -> PrintOut | None:
        async with self._sessions()() as session:
            return await session.scalar(
                select(PrintOut)
                .join(PrintIn, PrintIn.id == PrintOut.print_in_id)
                .join(Printer, Printer.id == PrintIn.printer_id)
                .where(Printer.name == printer, PrintIn.cups_job_id == cups_job_id)
            )

    async def wait_print_out(
        self,
        printer: str,
        cups_job_id: int,
        statuses: Iterable[PrintStatus] = FINAL_STATUSES,
        timeout: float = 30.0,
    ) -> PrintOut:
        """Wait until the print-out of a CUPS job exists and is in one of ``statuses``."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            po = await self.print_out_for(printer, cups_job_id)
            if po is not None and PrintStatus(po.status) in wanted:
                return po
            if time.monotonic() > deadline:
                seen = "no print-out" if po is None else PrintStatus(po.status).label
                raise ProxyPrintError(
                    f"job {printer}-{cups_job_id}: {seen} after {timeout} s\n"
                    + self.cupsd.error_log[-3000:]
                )
            await asyncio.sleep(0.05)


def amounts_sum(amounts: Iterable[str]) -> Decimal:
    return sum((Decimal(a) for a in amounts), Decimal(0))
