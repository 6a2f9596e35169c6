"""``proxyprint officernd sync|fees|topup`` and ``proxyprint papercut user-source``.

``register(sub, papercut)`` adds the commands to the ``proxyprint`` parser
(``sub``: its subcommands; ``papercut``: the ``papercut`` command's
subcommands, found in ``sub`` when not given). Everything heavy is imported
inside the handlers, so the other commands start as quickly as before.

Exit status: 0 when the job finished without errors, 1 when some users
failed (the summary lists them; the next run or the service retries), 2 for
configuration and usage errors (as every ``proxyprint`` command).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from .config import Config
from .exceptions import ConfigError

if TYPE_CHECKING:
    from typing import TypeAlias

    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from billing.officernd.client import OfficeRnDClient
    from billing.officernd.fees import AdjustmentCheck
    from billing.papercut.client import PaperCutClient

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["ProgressBar", "register", "site_today"]

PROGRESS_AFTER = 50  # users: fewer finish before a bar is worth drawing


def site_today(config: Config, now: datetime | None = None) -> date:
    """Today at the site (``[officernd] timezone``)."""
    zone = ZoneInfo(config.officernd.timezone)
    return (now or datetime.now(zone)).astimezone(zone).date()


class ProgressBar:
    """``[#####.....]  512/5000`` on a terminal, redrawn at most 10 times a second."""

    def __init__(self, stream: TextIO, width: int = 40) -> None:
        self.stream = stream
        self.width = width
        self._drawn = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_AFTER:
            return
        now = time.monotonic()
        if done < total and now - self._drawn < 0.1:
            return
        self._drawn = now
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done:>{len(str(total))}}/{total}")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class _Clients:
    sessions: async_sessionmaker[AsyncSession]
    officernd: OfficeRnDClient
    papercut: PaperCutClient
    applied: AdjustmentCheck | None


def _log_engine(url: str) -> AsyncEngine:
    """PaperCut's database, read only (any of its databases: ``printlog.log_engine``)."""
    from billing.papercut.printlog import log_engine

    return log_engine(url)


@asynccontextmanager
async def _clients(config: Config) -> AsyncIterator[_Clients]:
    """The database, both API clients and PaperCut's transaction log, from the config."""
    from billing.db import make_engine, make_sessionmaker
    from billing.officernd.client import OfficeRnDClient
    from billing.papercut import printlog
    from billing.papercut.client import PaperCutClient

    ornd, pc = config.officernd, config.papercut
    for key, value in (
        ("officernd.api_url", ornd.api_url),
        ("officernd.token_url", ornd.token_url),
        ("officernd.org", ornd.org),
        ("officernd.client_id", ornd.client_id),
        ("papercut.url", pc.url),
    ):
        if not value:
            raise ConfigError(f"{key} is not set")
    engine = make_engine(config.database.url, echo=config.database.echo)
    log_engine = _log_engine(pc.db_url) if pc.db_url else None
    applied: AdjustmentCheck | None = None
    if log_engine is not None:
        bound = log_engine

        async def check(marker: str) -> bool:
            return await printlog.adjustment_applied(bound, marker)

        applied = check
    try:
        async with (
            OfficeRnDClient(
                ornd.api_url,
                ornd.org,
                token_url=ornd.token_url,
                client_id=ornd.client_id,
                client_secret=ornd.client_secret,
                scope=ornd.scope,
            ) as officernd,
            PaperCutClient(pc.url, pc.token) as papercut,
        ):
            yield _Clients(make_sessionmaker(engine), officernd, papercut, applied)
    finally:
        await engine.dispose()
        if log_engine is not None:
            await log_engine.dispose()


def _print_errors(errors: list[str], out: TextIO) -> None:
    for error in errors[:20]:
        print(f"  error: {error}", file=out)
    if len(errors) > 20:
        print(f"  ... {len(errors) - 20} more (see the event row)", file=out)


async def cmd_sync(config: Config, args: argparse.Namespace) -> int:
    from billing.enums import Provisioning
    from billing.officernd.filter import MemberFilter
    from billing.officernd.sync import run_sync

    initial: bool | None = True if args.initial else (False if args.regular else None)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.no_progress else None
    async with _clients(config) as clients:
        try:
            summary = await run_sync(
                clients.sessions,
                clients.officernd,
                clients.papercut,
                member_filter=MemberFilter.from_settings(config.officernd),
                applied=clients.applied,
                initial=initial,
                concurrency=args.concurrency,
                progress=bar,
                provisioning=Provisioning(config.papercut.provisioning),
            )
        finally:
            if bar is not None:
                bar.close()
    print(summary.line())
    _print_errors(summary.error_details, sys.stdout)
    return 1 if summary.errors else 0


def _day(config: Config, args: argparse.Namespace) -> date:
    if args.date:
        try:
            return date.fromisoformat(args.date)
        except ValueError:
            raise ConfigError(f"--date {args.date!r}: use YYYY-MM-DD") from None
    return site_today(config)


async def cmd_fees(config: Config, args: argparse.Namespace) -> int:
    from billing.officernd.fees import run_fees

    async with _clients(config) as clients:
        summary = await run_fees(
            clients.sessions,
            clients.officernd,
            clients.papercut,
            clients.applied,
            day=_day(config, args),
            currency=config.money,
            plan_name=config.officernd.fees_plan,
            office=config.officernd.office,
            manage=config.officernd.manage_fees,
            concurrency=args.concurrency,
            wait=args.wait,
        )
    print(summary.line())
    _print_errors(summary.errors, sys.stdout)
    return 1 if summary.failed or summary.pending or summary.errors else 0


async def cmd_topup(config: Config, args: argparse.Namespace) -> int:
    from billing.money import parse_amount
    from billing.officernd.topup import run_topups

    amount = parse_amount(config.officernd.allowance_amount, field="officernd.allowance_amount")
    async with _clients(config) as clients:
        summary = await run_topups(
            clients.sessions,
            clients.papercut,
            clients.applied,
            amount=amount,
            period=config.officernd.allowance_period,
            day=_day(config, args),
            concurrency=args.concurrency,
            wait=args.wait,
        )
    print(summary.line())
    _print_errors(summary.errors, sys.stdout)
    return 1 if summary.failed or summary.pending else 0


async def cmd_user_source(config: Config, args: argparse.Namespace) -> int:
    from .usersource import run

    return await run(config.database.url, args.args)


def _papercut_commands(sub: Subparsers) -> Subparsers:
    parser = sub.choices.get("papercut")
    if parser is None:
        created: Subparsers = sub.add_parser("papercut", help="PaperCut").add_subparsers(
            dest="action", required=True
        )
        return created
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise ValueError("the papercut command has no subcommands")


def register(sub: Subparsers, papercut: Subparsers | None = None) -> None:
    """Add ``officernd sync|fees|topup`` and ``papercut user-source`` to ``proxyprint``."""
    handlers: dict[str, Callable[[Config, argparse.Namespace], Any]] = {
        "sync": cmd_sync,
        "fees": cmd_fees,
        "topup": cmd_topup,
    }
    officernd = sub.add_parser(
        "officernd", help="OfficeRnD: member sync, fees, allowance (also run by serve)"
    ).add_subparsers(dest="action", required=True)
    sync = officernd.add_parser("sync", help="sync members into PaperCut (groups and users)")
    flow = sync.add_mutually_exclusive_group()
    flow.add_argument(
        "--initial", action="store_true", help="run the initial sync (second flow if not empty)"
    )
    flow.add_argument("--regular", action="store_true", help="apply the differences only")
    sync.add_argument("--no-progress", action="store_true", help="no progress bar")
    fees = officernd.add_parser("fees", help="bill negative PaperCut balances as fees (once a day)")
    topup = officernd.add_parser("topup", help="add the balance allowance (once per period)")
    for cmd in (fees, topup):
        cmd.add_argument("--date", help="the site's day, YYYY-MM-DD (default: today)")
        cmd.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help="seconds to keep retrying failed users (default 60); the service retries later",
        )
    for name, cmd in (("sync", sync), ("fees", fees), ("topup", topup)):
        cmd.add_argument("--concurrency", type=int, default=16, help="PaperCut calls at once")
        cmd.set_defaults(handler=handlers[name])

    target = papercut if papercut is not None else _papercut_commands(sub)
    user_source = target.add_parser(
        "user-source",
        help="PaperCut custom user directory program (the synced members)",
        description="Run by PaperCut as its user/group source: - is-valid | all-users | "
        "all-groups | get-user-details (name on stdin) | group-member-names GROUP | "
        "group-members GROUP | is-user-in-group GROUP USER. With no arguments, its "
        "custom auth program: user name and password on stdin, answers OK/ERROR.",
    )
    user_source.add_argument(
        "args", nargs=argparse.REMAINDER, help="- COMMAND [ARGS] (none: authenticate)"
    )
    user_source.set_defaults(handler=cmd_user_source)
