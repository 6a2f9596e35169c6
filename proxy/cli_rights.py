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


def register(
    user: SubParsers, user_add: argparse.ArgumentParser, group: SubParsers, account: SubParsers
) -> None:
    """The rights flag on ``user add``; the ``edit`` commands (``cli_admin``) take
    theirs through ``add_delegate_flags``/``add_access_flags`` and ``apply_*_rights``."""
    add_delegate_flags(user_add, what="the user")
