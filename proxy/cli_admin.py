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

from .cli_rights import (
    add_access_flags,
    add_delegate_flags,
    apply_account_rights,
    apply_group_rights,
    apply_user_rights,
)
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


# --- shared --------------------------------------------------------------------------


def _name_action(sub: Subparsers, action: str, text: str, handler: Any, arg: str = "name") -> Any:
    cmd = sub.add_parser(action, help=text)
    cmd.add_argument(arg)
    cmd.set_defaults(handler=handler)
    return cmd


def _listing(sub: Subparsers, text: str, handler: Any) -> Any:
    cmd = sub.add_parser("list", help=text)
    cmd.add_argument("--deleted", action="store_true", help="deleted ones too")
    cmd.set_defaults(handler=handler)
    return cmd


def _limit(config: Config, limit: Any) -> str:
    return "unlimited" if limit is None else config.money.format(limit)


def _state(active: bool, deleted_at: Any) -> str:
    return "deleted" if deleted_at is not None else ("active" if active else "disabled")


# --- users -----------------------------------------------------------------------------


async def cmd_user_list(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        users = await directory.list_users(session, deleted=args.deleted)
        groups = await directory.groups_of_users(session, [u.id for u in users])
    print_table(
        [(u.name, u.email, u.full_name, ",".join(groups[u.id]) or None,
          _state(u.active, u.deleted_at)) for u in users],
        ("NAME", "EMAIL", "FULL NAME", "GROUPS", "STATE"),
    )  # fmt: skip
    return 0


async def cmd_user_show(config: Config, args: argparse.Namespace) -> int:
    from billing import directory, ledger
    from billing.enums import AccountType

    from . import nfc_admin
    from .cli import session_scope

    async with session_scope(config) as session:
        user = await directory.get_user(session, args.name, deleted=True)
        groups = (await directory.groups_of_users(session, [user.id]))[user.id]
        account = await directory.get_account(session, f"{AccountType.USER.value}:{user.name}",
                                              deleted=True)  # fmt: skip
        balance = await ledger.balance(session, account.id)
        cards = await nfc_admin.cards_of(session, user.name)
    print_fields(
        {
            "name": user.name,
            "email": user.email,
            "full name": user.full_name,
            "external id": user.external_id,
            "state": _state(user.active, user.deleted_at),
            "groups": groups,
            "account": f"{account.id} (balance {config.money.format(balance)}"
            f" {config.money.code}, credit limit {_limit(config, account.credit_limit)})",
            "cards": cards,
        }
    )
    return 0


def _user_edit_flags(cmd: argparse.ArgumentParser) -> None:
    """``user edit`` flags: add one here and one line in ``cmd_user_edit``."""
    cmd.add_argument("--email", help="'' clears it")
    cmd.add_argument("--full-name", help="'' clears it")
    cmd.add_argument("--add-group", action="append", default=[], metavar="GROUP")
    cmd.add_argument("--remove-group", action="append", default=[], metavar="GROUP")
    add_delegate_flags(cmd, what="the user")


async def cmd_user_edit(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    actor = cli_actor()
    wanted = {}
    if args.email is not None:
        wanted["email"] = args.email
    if args.full_name is not None:
        wanted["full_name"] = args.full_name
    if not (wanted or args.add_group or args.remove_group or args.delegate is not None):
        print("nothing to change (see proxyprint user edit --help)", file=sys.stderr)
        return 2
    async with session_scope(config) as session:
        user = await directory.get_user(session, args.name)
        if wanted:
            await directory.edit_user(session, user.name, wanted, actor=actor)
        for group in args.add_group:
            await directory.edit_group_members(session, group, add=[user.name], actor=actor)
        for group in args.remove_group:
            await directory.edit_group_members(session, group, remove=[user.name], actor=actor)
        await apply_user_rights(session, user.name, args)
    print(f"user {args.name} updated")
    return 0


async def cmd_user_active(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        await directory.set_user_active(session, args.name, args.active, actor=cli_actor())
    what = "enabled" if args.active else "disabled: her tokens and cards stop working"
    print(f"user {args.name} {what}")
    return 0


async def cmd_user_delete(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        await directory.delete_user(session, args.name, actor=cli_actor())
    print(f"user {args.name} deleted (her history and ledger are kept)")
    return 0


def add_user_commands(user: Subparsers) -> None:
    _listing(user, "users", cmd_user_list)
    _name_action(user, "show", "one user, her groups, account and cards", cmd_user_show)
    _user_edit_flags(_name_action(user, "edit", "change a user", cmd_user_edit))
    for action, active in (("disable", False), ("enable", True)):
        text = "tokens 401, cards 404, not chargeable" if not active else "undo disable"
        _name_action(user, action, text, cmd_user_active).set_defaults(active=active)
    _name_action(user, "delete", "soft delete (history kept)", cmd_user_delete)


# --- groups ----------------------------------------------------------------------------


async def cmd_group_list(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        groups = await directory.list_groups(session, deleted=args.deleted)
        members = {g.id: await directory.group_member_names(session, g.id) for g in groups}
    print_table(
        [(g.name, len(members[g.id]), _state(g.active, g.deleted_at)) for g in groups],
        ("NAME", "MEMBERS", "STATE"),
    )
    return 0


async def cmd_group_show(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        group = await directory.get_group(session, args.name, deleted=True)
        members = await directory.group_member_names(session, group.id)
    print_fields(
        {"name": group.name, "external id": group.external_id,
         "state": _state(group.active, group.deleted_at), "members": members}
    )  # fmt: skip
    return 0


def _group_edit_flags(cmd: argparse.ArgumentParser) -> None:
    """``group edit`` flags: add one here and one line in ``cmd_group_edit``."""
    cmd.add_argument("--add-member", action="append", default=[], metavar="USER")
    cmd.add_argument("--remove-member", action="append", default=[], metavar="USER")
    add_delegate_flags(cmd, what="every member")


async def cmd_group_edit(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    if not (args.add_member or args.remove_member or args.delegate is not None):
        print("nothing to change (see proxyprint group edit --help)", file=sys.stderr)
        return 2
    async with session_scope(config) as session:
        await directory.edit_group_members(
            session, args.name, add=args.add_member, remove=args.remove_member, actor=cli_actor()
        )
        await apply_group_rights(session, args.name, args)
    print(f"group {args.name} updated")
    return 0


async def cmd_group_active(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        await directory.set_group_active(session, args.name, args.active, actor=cli_actor())
    print(f"group {args.name} {'enabled' if args.active else 'disabled'}")
    return 0


async def cmd_group_delete(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        await directory.delete_group(session, args.name, actor=cli_actor())
    print(f"group {args.name} deleted (its account and history are kept)")
    return 0


def add_group_commands(group: Subparsers) -> None:
    _listing(group, "groups", cmd_group_list)
    _name_action(group, "show", "one group and its members", cmd_group_show)
    _group_edit_flags(_name_action(group, "edit", "change a group's members", cmd_group_edit))
    for action, active in (("disable", False), ("enable", True)):
        text = "its account cannot be charged" if not active else "undo disable"
        _name_action(group, action, text, cmd_group_active).set_defaults(active=active)
    _name_action(group, "delete", "soft delete (account and history kept)", cmd_group_delete)


# --- accounts --------------------------------------------------------------------------

ACCOUNT_REF = "ID, NAME or TYPE:NAME (user:alice, group:sales, shared:Events/Gala)"


async def cmd_account_list(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from billing import ledger
    from billing.models import Account

    from .cli import session_scope

    stmt = select(Account).order_by(Account.type, Account.path)
    if args.type:
        stmt = stmt.where(Account.type == args.type)
    if not args.deleted:
        stmt = stmt.where(Account.deleted_at.is_(None))
    async with session_scope(config) as session:
        found = list((await session.scalars(stmt)).all())
        balances = await ledger.balances(session, [a.id for a in found])
    fmt = config.money.format
    print_table(
        [(a.id, a.type, a.path, fmt(balances[a.id]),
          None if a.credit_limit is None else fmt(a.credit_limit), _state(a.active, a.deleted_at))
         for a in found],
        ("ID", "TYPE", "NAME", "BALANCE", "CREDIT LIMIT", "STATE"),
    )  # fmt: skip
    return 0


async def cmd_account_show(config: Config, args: argparse.Namespace) -> int:
    from billing import directory, ledger

    from .cli import session_scope

    async with session_scope(config) as session:
        account = await directory.get_account(session, args.account, deleted=True)
        balance, pages = await ledger.totals(session, account.id)
    fmt = config.money.format
    print_fields(
        {
            "id": account.id,
            "type": account.type,
            "name": account.path,
            "balance": f"{fmt(balance)} {config.money.code}",
            "credit limit": "unlimited" if account.credit_limit is None
            else fmt(account.credit_limit),
            "pages": pages,
            "state": _state(account.active, account.deleted_at),
        }
    )  # fmt: skip
    return 0


def _account_edit_flags(cmd: argparse.ArgumentParser) -> None:
    """``account edit`` flags: add one here and one line in ``cmd_account_edit``."""
    limit = cmd.add_mutually_exclusive_group()
    limit.add_argument("--credit-limit", metavar="AMOUNT", help="10.00: down to -10.00")
    limit.add_argument("--unlimited", action="store_true", help="no credit limit")
    add_access_flags(cmd)


async def cmd_account_edit(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    wanted: dict[str, Any] = {}
    if args.credit_limit is not None:
        wanted["credit_limit"] = directory.parse_credit_limit(args.credit_limit)
    if args.unlimited:
        wanted["credit_limit"] = None
    if not (wanted or args.access is not None or args.open):
        print("nothing to change (see proxyprint account edit --help)", file=sys.stderr)
        return 2
    async with session_scope(config) as session:
        account = await directory.get_account(session, args.account)
        if wanted:
            await directory.edit_account(session, account, wanted, actor=cli_actor())
        ref = f"group:{account.path}" if account.type == "group" else account.path
        await apply_account_rights(session, ref, args)
    print(f"account {account.type}:{account.path} updated")
    return 0


async def cmd_account_active(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        account = await directory.get_account(session, args.account)
        await directory.set_account_active(session, account, args.active, actor=cli_actor())
    print(f"account {account.type}:{account.path} {'enabled' if args.active else 'disabled'}")
    return 0


async def cmd_account_delete(config: Config, args: argparse.Namespace) -> int:
    from billing import directory

    from .cli import session_scope

    async with session_scope(config) as session:
        account = await directory.get_account(session, args.account)
        await directory.delete_account(session, account, actor=cli_actor())
    print(f"account {account.type}:{account.path} deleted (its ledger is kept)")
    return 0


async def cmd_account_adjust(config: Config, args: argparse.Namespace) -> int:
    import uuid

    from billing import adjustments, directory, ledger
    from billing.money import parse_amount

    from .cli import session_scope

    amount = parse_amount(args.amount, field="amount", allow_negative=True)
    key = args.idempotency_key or f"cli:{uuid.uuid4()}"
    async with session_scope(config) as session:
        account = await directory.get_account(session, args.account)
        _, new = await adjustments.adjust(
            session,
            account,
            amount,
            reason=args.reason,
            key=key,
            actor=cli_actor(),
            currency=config.money,
        )
        balance = await ledger.balance(session, account.id)
    done = "posted" if new else "already posted under this key"
    print(f"{done}; balance of {account.type}:{account.path}: {config.money.format(balance)}")
    return 0


def add_account_commands(account: Subparsers) -> None:
    listing = _listing(account, "accounts with balances and limits", cmd_account_list)
    listing.add_argument("--type", choices=["user", "group", "shared"])
    _name_action(account, "show", "one account", cmd_account_show, "account")
    _account_edit_flags(
        _name_action(account, "edit", f"change an account ({ACCOUNT_REF})", cmd_account_edit,
                     "account")
    )  # fmt: skip
    for action, active in (("disable", False), ("enable", True)):
        text = "cannot be charged for new jobs" if not active else "undo disable"
        cmd = _name_action(account, action, text, cmd_account_active, "account")
        cmd.set_defaults(active=active)
    _name_action(account, "delete", "soft delete a shared account", cmd_account_delete, "account")
    adjust = _name_action(
        account, "adjust", "a deposit (positive) or debit (negative)", cmd_account_adjust, "account"
    )
    adjust.add_argument("amount", help="5.00 or -2.50")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument("--idempotency-key", help="the same key twice posts once")


# --- printers --------------------------------------------------------------------------


async def cmd_printer_list(config: Config, args: argparse.Namespace) -> int:
    from . import printers
    from .cli import session_scope

    async with session_scope(config) as session:
        found = await printers.list_printers(session, deleted=args.deleted)
    print_table(
        [(p.name, p.mode, p.target, config.money.format(p.cost_mono),
          config.money.format(p.cost_color), p.hold_expiry_mins,
          "yes" if p.papercut else "no", _state(p.enabled, p.deleted_at)) for p in found],
        ("NAME", "MODE", "TARGET", "MONO", "COLOR", "HOLD MINS", "PAPERCUT", "STATE"),
    )  # fmt: skip
    return 0


async def cmd_printer_show(config: Config, args: argparse.Namespace) -> int:
    from . import printers
    from .cli import session_scope

    async with session_scope(config) as session:
        p = await printers.get_printer(session, args.name, deleted=True)
    fmt = config.money.format
    print_fields(
        {"name": p.name, "mode": p.mode, "target": p.target, "cost mono": fmt(p.cost_mono),
         "cost color": fmt(p.cost_color), "duplex discount": fmt(p.duplex_discount),
         "media costs": p.media_costs or None, "papercut": p.papercut,
         "hold expiry mins": p.hold_expiry_mins, "state": _state(p.enabled, p.deleted_at)}
    )  # fmt: skip
    return 0


def _printer_edit_flags(cmd: argparse.ArgumentParser) -> None:
    """``printer edit`` flags: add one here and one line in ``cmd_printer_edit``."""
    cmd.add_argument("--target")
    cmd.add_argument("--mode", choices=["direct", "hold", "ticket"])
    cmd.add_argument("--cost-mono")
    cmd.add_argument("--cost-color")
    cmd.add_argument("--duplex-discount")
    cmd.add_argument("--hold-expiry-mins", type=int)
    pc = cmd.add_mutually_exclusive_group()
    pc.add_argument("--papercut", dest="papercut", action="store_true", default=None)
    pc.add_argument("--no-papercut", dest="papercut", action="store_false")


async def cmd_printer_edit(config: Config, args: argparse.Namespace) -> int:
    from . import printers
    from .cli import session_scope

    wanted = {
        field: getattr(args, field)
        for field in ("target", "mode", "cost_mono", "cost_color", "duplex_discount",
                      "hold_expiry_mins", "papercut")
        if getattr(args, field) is not None
    }  # fmt: skip
    async with session_scope(config) as session:
        changed = await printers.edit_printer(session, args.name, wanted, actor=cli_actor())
    if not changed:
        print(f"printer {args.name}: nothing changed")
    for field, (old, new) in changed.items():
        print(f"printer {args.name}: {field} {old} -> {new} (for jobs received from now on)")
    return 0


async def cmd_printer_enabled(config: Config, args: argparse.Namespace) -> int:
    from . import printers
    from .cli import session_scope

    async with session_scope(config) as session:
        await printers.set_printer_enabled(session, args.name, args.enabled, actor=cli_actor())
    what = "enabled" if args.enabled else "disabled: new jobs wait in CUPS"
    print(f"printer {args.name} {what}")
    return 0


async def cmd_printer_delete(config: Config, args: argparse.Namespace) -> int:
    from . import printers
    from .cli import session_scope

    async with session_scope(config) as session:
        await printers.delete_printer(session, args.name, actor=cli_actor())
    print(f"printer {args.name} deleted (history kept); remove its queue: lpadmin -x {args.name}")
    return 0


def add_printer_commands(printer: Subparsers) -> None:
    _listing(printer, "proxy printers", cmd_printer_list)
    _name_action(printer, "show", "one printer's settings", cmd_printer_show)
    _printer_edit_flags(
        _name_action(printer, "edit", "change settings (jobs received afterwards)",
                     cmd_printer_edit)
    )  # fmt: skip
    for action, enabled in (("disable", False), ("enable", True)):
        text = "new jobs wait in CUPS" if not enabled else "undo disable"
        _name_action(printer, action, text, cmd_printer_enabled).set_defaults(enabled=enabled)
    _name_action(printer, "delete", "soft delete (history kept)", cmd_printer_delete)


# --- cards and readers -----------------------------------------------------------------


async def cmd_card_list(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin
    from .cli import session_scope

    async with session_scope(config) as session:
        found = await nfc_admin.list_cards(session, args.user, deleted=args.deleted)
    print_table(
        [(c.id, c.number, c.user, _state(True, c.deleted_at)) for c in found],
        ("ID", "CARD", "USER", "STATE"),
    )
    return 0


async def cmd_card_delete(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin
    from .cli import session_scope

    async with session_scope(config) as session:
        info = await nfc_admin.delete_card(
            session, args.card, card_format=args.format, byte_order=args.byte_order,
            actor=cli_actor(),
        )  # fmt: skip
    print(f"card {info.number} of {info.user} deleted")
    return 0


def add_card_commands(card: Subparsers) -> None:
    _listing(card, "registered cards", cmd_card_list).add_argument("--user")
    delete = _name_action(
        card, "delete", "soft delete a card (history kept; may be registered again)",
        cmd_card_delete, "card",
    )  # fmt: skip
    delete.add_argument("--format", choices=["hex", "dec"], default="hex")
    delete.add_argument("--byte-order", choices=["msb", "lsb"], default="msb")


async def cmd_reader_list(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin
    from .cli import session_scope

    async with session_scope(config) as session:
        found = await nfc_admin.list_readers(session, getattr(args, "reader_id", None))
    if getattr(args, "reader_id", None) is not None:
        if not found:
            raise_not_found(f"unknown reader {args.reader_id!r}")
        r = found[0]
        print_fields({"reader": r.reader_id, "printers": r.printers, "card format": r.card_format,
                      "byte order": r.byte_order, "enabled": r.enabled})  # fmt: skip
        return 0
    print_table(
        [(r.reader_id, ",".join(r.printers), r.card_format, r.byte_order,
          "enabled" if r.enabled else "disabled") for r in found],
        ("READER", "PRINTERS", "FORMAT", "BYTE ORDER", "STATE"),
    )  # fmt: skip
    return 0


def raise_not_found(message: str) -> None:
    from .exceptions import NotFound

    raise NotFound(message)


def _reader_edit_flags(cmd: argparse.ArgumentParser) -> None:
    """``reader edit`` flags: add one here and one line in ``cmd_reader_edit``."""
    cmd.add_argument("--printer", action="extend", nargs="+", help="replaces the list")
    cmd.add_argument("--card-format", choices=["hex", "dec"])
    cmd.add_argument("--byte-order", choices=["msb", "lsb"])


async def cmd_reader_edit(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin
    from .cli import session_scope

    async with session_scope(config) as session:
        await nfc_admin.edit_reader(
            session, args.reader_id, printers=args.printer, card_format=args.card_format,
            byte_order=args.byte_order, actor=cli_actor(),
        )  # fmt: skip
    print(f"reader {args.reader_id} updated")
    return 0


async def cmd_reader_enabled(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin
    from .cli import session_scope

    async with session_scope(config) as session:
        await nfc_admin.set_reader_enabled(session, args.reader_id, args.enabled, actor=cli_actor())
    print(f"reader {args.reader_id} {'enabled' if args.enabled else 'disabled'}")
    return 0


async def cmd_reader_delete(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin
    from .cli import session_scope

    async with session_scope(config) as session:
        await nfc_admin.delete_reader(session, args.reader_id, actor=cli_actor())
    print(f"reader {args.reader_id} deleted")
    return 0


async def cmd_reader_rotate(config: Config, args: argparse.Namespace) -> int:
    from . import nfc_admin
    from .cli import session_scope

    async with session_scope(config) as session:
        secret = await nfc_admin.rotate_reader_token(session, args.reader_id, actor=cli_actor())
    print(f"reader {args.reader_id}: new token (the old one stops working):", file=sys.stderr)
    print(secret)
    return 0


def add_reader_commands(reader: Subparsers) -> None:
    reader.add_parser("list", help="readers and their printers").set_defaults(
        handler=cmd_reader_list
    )
    _name_action(reader, "show", "one reader", cmd_reader_list, "reader_id")
    _reader_edit_flags(_name_action(reader, "edit", "change a reader", cmd_reader_edit,
                                    "reader_id"))  # fmt: skip
    for action, enabled in (("disable", False), ("enable", True)):
        text = "its token answers 401" if not enabled else "undo disable"
        cmd = _name_action(reader, action, text, cmd_reader_enabled, "reader_id")
        cmd.set_defaults(enabled=enabled)
    _name_action(reader, "delete", "remove a reader", cmd_reader_delete, "reader_id")
    _name_action(reader, "rotate", "a new token; prints it", cmd_reader_rotate, "reader_id")


def register(parsers: dict[str, Subparsers]) -> None:
    """Add the administration actions to each entity's subcommands (by command name)."""
    add_user_commands(parsers["user"])
    add_group_commands(parsers["group"])
    add_account_commands(parsers["account"])
    add_token_commands(parsers["token"])
    add_printer_commands(parsers["printer"])
    add_card_commands(parsers["card"])
    add_reader_commands(parsers["reader"])
