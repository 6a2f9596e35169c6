"""``proxyprint user passwd NAME [--role ROLE]``: a user's web password (and web role)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from proxy.config import Config
from proxy.exceptions import BadRequest, NotFound


def _read_password(args: argparse.Namespace) -> str:
    """From the terminal (asked twice), else the first line of standard input."""
    if args.stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"new password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise BadRequest("the passwords differ")
    return first


async def cmd_user_passwd(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from billing.enums import Role
    from billing.models import User
    from proxy.cli import session_scope

    from . import passwords, sessions

    role = None
    if args.role is not None:
        try:
            role = Role(args.role)
        except ValueError:
            known = ", ".join(r.value for r in Role if r is not Role.READER)
            raise BadRequest(f"unknown role {args.role!r} (one of: {known})") from None
        if role is Role.READER:
            raise BadRequest("the reader role is for card readers, not people")
    password = None if args.no_password else _read_password(args)
    if password is not None:
        problem = passwords.acceptable(password)
        if problem:
            raise BadRequest(problem)
        hashed = await asyncio.to_thread(passwords.hash_password, password)
    async with session_scope(config) as session:
        user = await session.scalar(select(User).where(User.name == args.name))
        if user is None:
            raise NotFound(f"unknown user {args.name!r}")
        if password is not None:
            user.password_hash = hashed
            ended = await sessions.revoke_user(session, user.id)
        else:
            ended = 0
        if role is not None:
            user.web_role = role.value
    what = [] if password is None else ["password set"]
    if role is not None:
        what.append(f"web role {role.value}")
    if ended:
        what.append(f"{ended} web session(s) ended")
    print(f"user {args.name}: {', '.join(what) or 'unchanged'}")
    return 0


def register(user: Any) -> None:
    """Add ``passwd`` to the ``user`` subcommands (``user`` is their subparsers action)."""
    passwd = user.add_parser("passwd", help="set a user's web password (and web role)")
    passwd.add_argument("name")
    passwd.add_argument(
        "--role", help="the API role of the user's web sessions (default: unchanged, 'user')"
    )
    passwd.add_argument("--stdin", action="store_true", help="read the password from stdin")
    passwd.add_argument(
        "--no-password", action="store_true", help="change only --role, keep the password"
    )
    passwd.set_defaults(handler=cmd_user_passwd)
