"""Administration commands: list / show / edit / disable / delete, token list / revoke.

One function per entity adds that entity's actions to its command's
subparsers (``add_token_commands(token)`` ...), and one handler per action.
``edit`` subcommands keep their flags in one ``_*_edit_flags`` function each,
so more flags are one line there and one ``if`` in the handler's changes.
Heavy imports happen inside the handlers (as in ``proxy.cli``).

Every change goes through the domain functions, which record an event with
the actor (``cli:<login name>``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .config import Config

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def cli_actor() -> str:
    """Who runs the command, as events record it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """Aligned columns on stdout ("-" for None)."""
    cells = [[str(h) for h in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_fields(fields: dict[str, Any]) -> None:
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        shown = (", ".join(map(str, value)) or "-") if isinstance(value, list | tuple) else value
        print(f"{key.ljust(width)}  {'-' if shown is None else shown}")


# --- tokens ----------------------------------------------------------------------


async def cmd_token_list(config: Config, args: argparse.Namespace) -> int:
    from . import tokens
    from .cli import session_scope

    async with session_scope(config) as session:
        found = await tokens.list_api_tokens(session, include_revoked=args.all)
    print_table(
        [
            (t.id, t.role, t.user, t.label, t.state, t.created_at.isoformat(timespec="seconds"),
             t.expires_at.isoformat(timespec="seconds") if t.expires_at else None)
            for t in found
        ],
        ("ID", "ROLE", "USER", "LABEL", "STATE", "CREATED", "EXPIRES"),
    )  # fmt: skip
    return 0


async def cmd_token_revoke(config: Config, args: argparse.Namespace) -> int:
    from . import tokens
    from .cli import session_scope

    async with session_scope(config) as session:
        ids = await tokens.revoke_api_token(session, args.token, actor=cli_actor())
    print(f"revoked token(s) {', '.join(map(str, ids))}")
    return 0


def add_token_commands(token: Subparsers) -> None:
    listing = token.add_parser("list", help="API tokens (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked tokens too")
    listing.set_defaults(handler=cmd_token_list)
    revoke = token.add_parser("revoke", help="revoke a token by id or label: 401 at once")
    revoke.add_argument("token", metavar="ID|LABEL")
    revoke.set_defaults(handler=cmd_token_revoke)


def register(parsers: dict[str, Subparsers]) -> None:
    """Add the administration actions to each entity's subcommands (by command name)."""
    add_token_commands(parsers["token"])


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
