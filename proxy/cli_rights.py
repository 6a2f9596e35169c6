"""``proxyprint`` rights to charge (SPEC §3, §7): ``--delegate``, ``--access``, ``--open``.

``user add|edit NAME --delegate/--no-delegate``, ``group edit NAME
--delegate/--no-delegate`` (every member), ``account edit NAME --access alice
@sales`` / ``--open``. The flags and what they do are separate functions
(``add_*_flags``, ``apply_*``) so other ``edit`` options can share the parsers.
"""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING

from .config import Config

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def add_delegate_flags(parser: argparse.ArgumentParser, *, what: str) -> None:
    flags = parser.add_mutually_exclusive_group()
    flags.add_argument(
        "--delegate",
        dest="delegate",
        action="store_const",
        const=True,
        default=None,
        help=f"grant the delegate right ({what} may charge others than themselves)",
    )
    flags.add_argument(
        "--no-delegate",
        dest="delegate",
        action="store_const",
        const=False,
        help="withdraw the delegate right",
    )


def add_access_flags(parser: argparse.ArgumentParser) -> None:
    flags = parser.add_mutually_exclusive_group()
    flags.add_argument(
        "--access",
        nargs="+",
        metavar="USER|@GROUP",
        help="only these users and groups' members may charge the account (replaces the list)",
    )
    flags.add_argument(
        "--open",
        action="store_true",
        help="anyone with the delegate right may charge the account",
    )


async def apply_user_rights(session: AsyncSession, name: str, args: argparse.Namespace) -> None:
    from billing import rights

    if getattr(args, "delegate", None) is not None:
        user = await rights.set_user_delegate(session, name, args.delegate, actor=cli_actor())
        print(f"user {user.name}: delegate right {'granted' if user.can_delegate else 'withdrawn'}")


async def apply_group_rights(session: AsyncSession, name: str, args: argparse.Namespace) -> None:
    from billing import rights

    if getattr(args, "delegate", None) is not None:
        group = await rights.set_group_delegate(session, name, args.delegate, actor=cli_actor())
        state = "granted to" if group.can_delegate else "withdrawn from"
        print(f"group {group.name}: delegate right {state} every member")


async def apply_account_rights(session: AsyncSession, name: str, args: argparse.Namespace) -> None:
    from billing import rights

    if getattr(args, "access", None) is None and not getattr(args, "open", False):
        return
    account = await rights.find_chargeable(session, name)
    entries = None if args.open else list(args.access)
    access = await rights.set_access(session, account, entries, actor=cli_actor())
    print(f"{account.type} account {account.path}: {access.describe()}")


async def cmd_user_edit(config: Config, args: argparse.Namespace) -> int:
    from .cli import session_scope

    if args.delegate is None:
        print("nothing to change (use --delegate or --no-delegate)")
        return 2
    async with session_scope(config) as session:
        await apply_user_rights(session, args.name, args)
    return 0


async def cmd_group_edit(config: Config, args: argparse.Namespace) -> int:
    from .cli import session_scope

    if args.delegate is None:
        print("nothing to change (use --delegate or --no-delegate)")
        return 2
    async with session_scope(config) as session:
        await apply_group_rights(session, args.name, args)
    return 0


async def cmd_account_edit(config: Config, args: argparse.Namespace) -> int:
    from .cli import session_scope

    if args.access is None and not args.open:
        print("nothing to change (use --access USER|@GROUP... or --open)")
        return 2
    async with session_scope(config) as session:
        await apply_account_rights(session, args.name, args)
    return 0


def register(
    user: SubParsers, user_add: argparse.ArgumentParser, group: SubParsers, account: SubParsers
) -> None:
    """The rights flags on ``user add`` and the ``edit`` commands that set them."""
    add_delegate_flags(user_add, what="the user")

    user_edit = user.add_parser("edit", help="change a user (rights: --delegate/--no-delegate)")
    user_edit.add_argument("name")
    add_delegate_flags(user_edit, what="the user")
    user_edit.set_defaults(handler=cmd_user_edit)

    group_edit = group.add_parser("edit", help="change a group (--delegate: every member)")
    group_edit.add_argument("name")
    add_delegate_flags(group_edit, what="every member")
    group_edit.set_defaults(handler=cmd_group_edit)

    account_edit = account.add_parser(
        "edit", help="change a shared account (or group:NAME): --access USER @GROUP..., --open"
    )
    account_edit.add_argument("name", help="shared account path, or group:NAME")
    add_access_flags(account_edit)
    account_edit.set_defaults(handler=cmd_account_edit)
