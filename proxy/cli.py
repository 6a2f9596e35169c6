"""The ``proxyprint`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from billing.exceptions import BillingError

from . import config as config_mod
from .config import Config
from .exceptions import ConfigError, ProxyPrintError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

# Heavy imports (SQLAlchemy, aiohttp, alembic) happen inside the handlers: a command
# such as `papercut user-source`, which PaperCut runs often, starts quickly.
Handler = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]


@asynccontextmanager
async def session_scope(config: Config) -> AsyncIterator[AsyncSession]:
    """One unit of work for a command: commit on success, roll back on error."""
    from billing.db import make_engine, make_sessionmaker

    engine = make_engine(config.database.url, echo=config.database.echo)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        await engine.dispose()


async def cmd_db_upgrade(config: Config, args: argparse.Namespace) -> int:
    from billing.db import make_engine

    from . import dbadmin  # alembic: not loaded by `serve`

    engine = make_engine(config.database.url)
    try:
        await dbadmin.upgrade(engine, args.revision)
    finally:
        await engine.dispose()
    print(f"database at {args.revision}")
    return 0


async def cmd_db_verify(config: Config, args: argparse.Namespace) -> int:
    """Every account's running totals against the sums of its ledger entries."""
    from billing import ledger

    async with session_scope(config) as session:
        wrong = await ledger.verify(session)

        def fmt(amount: Decimal) -> str:  # exact: a sub-cent difference must show
            exact = config.money.quantize(amount) == amount
            return config.money.format(amount) if exact else f"{amount:f}"

        for m in wrong:
            print(
                f"account {m.account_id}: stored balance {fmt(m.stored[0])} pages {m.stored[1]},"
                f" ledger sums {fmt(m.summed[0])} pages {m.summed[1]}"
            )
        if wrong and args.repair:
            await ledger.rebuild_totals(await session.connection())
            print(f"{len(wrong)} account(s) repaired from the ledger")
            return 0
    if not wrong:
        print("every account's balance is the sum of its ledger entries")
    return 1 if wrong else 0


async def cmd_user_add(config: Config, args: argparse.Namespace) -> int:
    from billing import accounts

    from .cli_rights import apply_user_rights

    async with session_scope(config) as session:
        user = await accounts.create_user(
            session, args.name, email=args.email, full_name=args.full_name, groups=args.group
        )
        print(f"user {user.name} created")
        await apply_user_rights(session, user.name, args)
    return 0


async def cmd_group_add(config: Config, args: argparse.Namespace) -> int:
    from billing import accounts

    async with session_scope(config) as session:
        group = await accounts.create_group(session, args.name)
        print(f"group {group.name} created")
    return 0


async def cmd_account_add(config: Config, args: argparse.Namespace) -> int:
    from billing import accounts

    async with session_scope(config) as session:
        account = await accounts.create_shared_account(session, args.name)
        print(f"shared account {account.path} created")
    return 0


async def cmd_token_create(config: Config, args: argparse.Namespace) -> int:
    from . import tokens
    from .cli_admin import cli_actor

    expires_at = tokens.parse_expiry(args.expires) if args.expires else None
    async with session_scope(config) as session:
        secret = await tokens.create_api_token(
            session,
            args.role,
            user=args.user,
            label=args.label,
            expires_at=expires_at,
            actor=cli_actor(),
        )
    print(secret)
    return 0


async def cmd_cups_install_backend(config: Config, args: argparse.Namespace) -> int:
    from .cupsadmin import install_backend

    path = install_backend(Path(args.serverbin or config.cups.serverbin))
    print(f"backend installed as {path}")
    return 0


async def cmd_printer_add(config: Config, args: argparse.Namespace) -> int:
    from . import cupsadmin, printers

    uri = printers.device_uri(config.intake.socket, args.intake_tcp or "", tls=args.intake_tls)
    async with session_scope(config) as session:
        printer = await printers.add_printer(
            session,
            args.name,
            target=args.target,
            mode=args.mode,
            cost_mono=args.cost_mono,
            cost_color=args.cost_color,
            duplex_discount=args.duplex_discount,
            papercut=args.papercut,
            hold_expiry_mins=args.hold_expiry_mins,
            require_tap=args.require_tap,
            tap_window_secs=args.tap_window_secs,
        )
        # The queue last: if CUPS refuses, the record is rolled back with it.
        await asyncio.to_thread(
            cupsadmin.create_queue,
            printer.name,
            uri,
            cups_server=config.cups.server,
            info=f"proxyprint {printer.mode} -> {printer.target}",
            error_policy=printers.PROXY_QUEUE_ERROR_POLICY,
        )
    print(f"printer {args.name} ({args.mode}) -> {args.target}; CUPS device {uri}")
    return 0


async def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import create_app
    from .listen import GuardedRunner, check_nofile, throttle_accept_errors
    from .logs import setup_logging

    setup_logging(config.log)  # [log] format = "text" | "json", level; request ids
    listeners = (
        1 + bool(config.intake.socket) + bool(config.intake.tcp) + bool(config.nfc.tcp_listen)
    )
    low = check_nofile(config.limits, listeners)
    if low is not None:
        logging.getLogger("proxy.serve").warning("%s", low)
    throttle_accept_errors(asyncio.get_running_loop())
    host, _, port = config.http.listen.rpartition(":")
    runner = GuardedRunner(create_app(config), name="api", limits=config.limits)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    print(f"proxyprint serving on http://{config.http.listen}, intake {config.intake.socket}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


async def cmd_card_add(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin
    from .cli_admin import cli_actor

    async with session_scope(config) as session:
        card = await nfc_admin.add_card(
            session, args.user, args.card, card_format=args.format, byte_order=args.byte_order,
            actor=cli_actor(),
        )  # fmt: skip
    print(f"card {card.number} registered to {args.user}")
    return 0


async def cmd_reader_add(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin

    async with session_scope(config) as session:
        secret = await nfc_admin.add_reader(
            session,
            args.reader_id,
            args.printer,
            card_format=args.card_format,
            byte_order=args.byte_order,
        )
    print(f"reader {args.reader_id} -> {', '.join(args.printer)}; its token:", file=sys.stderr)
    print(secret)
    return 0


async def _papercut_queues(config: Config) -> set[str]:
    """The CUPS queues proxyprint's PaperCut-managed printers send to (``cups://QUEUE``):
    PaperCut names its printers after them, and they must charge the clearing account."""
    from sqlalchemy import select

    from billing.models import Printer

    async with session_scope(config) as session:
        targets = await session.scalars(select(Printer.target).where(Printer.papercut.is_(True)))
        return {t.removeprefix("cups://").strip("/") for t in targets if t.startswith("cups://")}


async def cmd_papercut(config: Config, args: argparse.Namespace) -> int:
    """``papercut check|fix``: exit 0 when nothing is left to do, 1 otherwise."""
    from billing.money import parse_amount
    from billing.papercut import checks
    from billing.papercut.client import PaperCutClient

    if not config.papercut.url:
        raise ConfigError("papercut.url is not set: no PaperCut server to check")
    default_cost = (
        parse_amount(args.default_cost, field="--default-cost") if args.default_cost else None
    )
    clearing = config.papercut.clearing_account or None
    managed = set(args.queue) if args.queue else await _papercut_queues(config)
    async with PaperCutClient(config.papercut.url, config.papercut.token) as client:
        if args.action == "check":
            problems = await checks.check(
                client, default_cost=default_cost, clearing_account=clearing, managed=managed
            )
            for problem in problems:
                fix_note = "fixable by 'papercut fix'" if problem.fixable else "needs a person"
                print(f"PROBLEM {problem} ({fix_note})")
                if not problem.fixable:
                    for step in problem.steps:
                        print(f"    - {step}")
            print(f"{len(problems)} problem(s)")
            return 1 if problems else 0
        report = await checks.fix(
            client, default_cost=default_cost, clearing_account=clearing, managed=managed
        )
    for problem in report.fixed:
        print(f"FIXED {problem}")
    for problem, error in report.failed:
        print(f"FAILED {problem}: {error}")
    for problem in report.needs_person:
        print(f"NEEDS A PERSON {problem}")
        for step in problem.steps:
            print(f"    - {step}")
    return 0 if report.clean else 1


async def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    from .demo import run_demo

    del config  # the demo runs on its own embedded defaults
    return await run_demo()


def _register_more(sub: Any, user_add: argparse.ArgumentParser, groups: dict[str, Any]) -> None:
    """The commands that live in their own modules (administration, rights, jobs, OfficeRnD)."""
    from .cli_admin import register as register_admin
    from .cli_jobs import register as register_jobs
    from .cli_officernd import register as register_officernd
    from .cli_rights import register as register_rights

    register_rights(groups["user"], user_add, groups["group"], groups["account"])
    register_admin({k: v for k, v in groups.items() if k != "papercut"})
    register_officernd(sub, groups["papercut"])
    register_jobs(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxyprint", description="Delegated print for CUPS")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML file (default /etc/proxyprint/proxyprint.toml)",
    )
    parser.add_argument(
        "--allow-readable-config",
        action="store_true",
        help="start even though the config file holds secrets and others can read it",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    up = db.add_parser("upgrade", help="alembic upgrade head")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=cmd_db_upgrade)
    verify = db.add_parser("verify", help="check stored balances against the ledger")
    verify.add_argument(
        "--repair",
        action="store_true",
        help="recompute the stored balances from the ledger (with the service stopped)",
    )
    verify.set_defaults(handler=cmd_db_verify)

    user = sub.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    user_add = user.add_parser("add", help="a user and its personal account")
    user_add.add_argument("name")
    user_add.add_argument("--email")
    user_add.add_argument("--full-name")
    user_add.add_argument("--group", action="append", default=[], help="repeatable")
    user_add.set_defaults(handler=cmd_user_add)
    from .web.cli import register as register_web

    register_web(user)

    group = sub.add_parser("group", help="groups").add_subparsers(dest="action", required=True)
    group_add = group.add_parser("add", help="a group and its group account")
    group_add.add_argument("name")
    group_add.set_defaults(handler=cmd_group_add)

    account = sub.add_parser("account", help="shared accounts").add_subparsers(
        dest="action", required=True
    )
    account_add = account.add_parser("add", help="a shared account (Parent or Parent/Sub)")
    account_add.add_argument("name")
    account_add.set_defaults(handler=cmd_account_add)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    token_create = token.add_parser("create", help="print a new API token")
    token_create.add_argument("--role", required=True)
    token_create.add_argument("--user")
    token_create.add_argument("--label")
    token_create.add_argument(
        "--expires", help="a date (2027-01-01), date-time, or duration (30m, 12h, 90d, 2w)"
    )
    token_create.set_defaults(handler=cmd_token_create)

    demo = sub.add_parser("demo", help="run the whole pipeline privately and show a job go through")
    demo.set_defaults(handler=cmd_demo)

    card = sub.add_parser("card", help="NFC cards").add_subparsers(dest="action", required=True)
    card_add = card.add_parser("add", help="register an NFC card for a user")
    card_add.add_argument("user")
    card_add.add_argument("card", help="04:A1:B2:C3, 04a1b2c3, 0x04A1B2C3; decimal: --format dec")
    card_add.add_argument("--format", choices=["hex", "dec"], default="hex")
    card_add.add_argument("--byte-order", choices=["msb", "lsb"], default="msb")
    card_add.set_defaults(handler=cmd_card_add)

    reader = sub.add_parser("reader", help="NFC card readers").add_subparsers(
        dest="action", required=True
    )
    reader_add = reader.add_parser("add", help="a reader for hold printers; prints its token")
    reader_add.add_argument("reader_id")
    reader_add.add_argument("--printer", action="extend", nargs="+", required=True)
    reader_add.add_argument("--card-format", choices=["hex", "dec"], default="hex")
    reader_add.add_argument("--byte-order", choices=["msb", "lsb"], default="msb")
    reader_add.set_defaults(handler=cmd_reader_add)

    papercut = sub.add_parser("papercut", help="PaperCut server checks").add_subparsers(
        dest="action", required=True
    )
    for action, text in (("check", "report misconfigured printers"), ("fix", "fix what can be")):
        cmd = papercut.add_parser(action, help=text)
        cmd.add_argument("--default-cost", help="page cost to set on printers without one")
        cmd.add_argument(
            "--queue",
            action="append",
            default=[],
            help="a PaperCut printer proxyprint sends to (default: every --papercut"
            " printer's cups:// target in the database); it must charge the clearing account",
        )
        cmd.set_defaults(handler=cmd_papercut)

    serve = sub.add_parser("serve", help="run the service (API, intake, workers)")
    serve.set_defaults(handler=cmd_serve)

    cups_cmd = sub.add_parser("cups", help="CUPS set-up").add_subparsers(
        dest="action", required=True
    )
    install = cups_cmd.add_parser("install-backend", help="install the proxyprint backend")
    install.add_argument("--serverbin", help="CUPS ServerBin (default from config, /usr/lib/cups)")
    install.set_defaults(handler=cmd_cups_install_backend)

    printer = sub.add_parser("printer", help="proxy printers").add_subparsers(
        dest="action", required=True
    )
    printer_add = printer.add_parser("add", help="a proxy printer and its CUPS queue")
    printer_add.add_argument("name")
    printer_add.add_argument(
        "--target", required=True, help="ipp://..., ipps://... or cups://QUEUE"
    )
    printer_add.add_argument("--mode", required=True, choices=["direct", "hold", "ticket"])
    printer_add.add_argument("--cost-mono", default="0")
    printer_add.add_argument("--cost-color", default="0")
    printer_add.add_argument("--duplex-discount", default="0")
    printer_add.add_argument("--papercut", action="store_true")
    printer_add.add_argument("--hold-expiry-mins", type=int, default=60)
    printer_add.add_argument(
        "--require-tap",
        action="store_true",
        help="direct mode: print a job only when its owner taps a card at a reader",
    )
    printer_add.add_argument(
        "--tap-window-secs", type=int, default=60, help="how long a job waits for the tap"
    )
    printer_add.add_argument("--intake-tcp", help="HOST:PORT for a CUPS server on another host")
    printer_add.add_argument(
        "--intake-tls",
        action="store_true",
        help="with --intake-tcp: TLS (device URI proxyprints://; the intake has tls_cert)",
    )
    printer_add.set_defaults(handler=cmd_printer_add)
    _register_more(
        sub,
        user_add,
        {
            "user": user,
            "group": group,
            "account": account,
            "token": token,
            "printer": printer,
            "card": card,
            "reader": reader,
            "papercut": papercut,
        },
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loaded = config_mod.load(args.config, allow_readable=args.allow_readable_config)
        if loaded.warning is not None:
            print(f"proxyprint: WARNING: {loaded.warning}", file=sys.stderr)
        if not loaded.from_file:
            # Say where state goes before anything writes it.
            print(
                f"proxyprint: no configuration file at {loaded.path}; using defaults: "
                f"database {loaded.config.database.url}, spool {loaded.config.spool.dir}",
                file=sys.stderr,
            )
        config = loaded.config
        handler: Handler = args.handler
        return asyncio.run(handler(config, args))
    except (ProxyPrintError, BillingError) as exc:
        print(f"proxyprint: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
