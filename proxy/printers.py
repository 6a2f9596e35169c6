"""Proxy printers: the service's record plus the CUPS queue that feeds it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import events
from billing.cost import CostRules
from billing.db import utcnow
from billing.directory import apply_changes, record_change
from billing.enums import PrinterMode
from billing.exceptions import InvalidInput
from billing.models import Printer

from .exceptions import BadRequest, Conflict, NotFound

# CUPS printer names: up to 127 printable characters, no space, "/", "\\", "#", quotes.
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-@+]{1,127}")
TARGET_SCHEMES = ("ipp", "ipps", "cups")
# The backend exits RETRY when the service is down (cupsd keeps the job whatever
# the policy) and FAILED when a followed print-out was aborted: this policy
# then aborts that job alone, where stop-printer would stop the queue.
PROXY_QUEUE_ERROR_POLICY = "abort-job"
MAX_TAP_WINDOW_SECS = 3600


def validate_printer_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise BadRequest(
            f"printer name {name!r}: use 1-127 letters, digits, '_', '.', '-', '@' or '+'"
        )
    return name


def validate_target(target: str) -> str:
    parts = urlsplit(target)
    if parts.scheme not in TARGET_SCHEMES:
        raise BadRequest(f"target {target!r}: use ipp://, ipps:// or cups://QUEUE")
    if parts.scheme == "cups":
        validate_printer_name(parts.netloc or parts.path.lstrip("/"))
    elif not parts.hostname:
        raise BadRequest(f"target {target!r} has no host")
    return target


def device_uri(intake_socket: str, intake_tcp: str = "", *, tls: bool = False) -> str:
    """The CUPS device URI of a proxy queue: the intake socket, or TCP (TLS: proxyprints)."""
    if intake_tcp:
        return f"proxyprint{'s' if tls else ''}://{intake_tcp}"
    return f"proxyprint:{intake_socket}"


async def add_printer(
    session: AsyncSession,
    name: str,
    *,
    target: str,
    mode: str,
    cost_mono: str | Decimal = "0",
    cost_color: str | Decimal = "0",
    duplex_discount: str | Decimal = "0",
    papercut: bool = False,
    hold_expiry_mins: int = 60,
    require_tap: bool = False,
    tap_window_secs: int = 60,
    actor: str = "admin",
) -> Printer:
    """Create the service's record of a proxy printer (the caller makes the queue)."""
    validate_printer_name(name)
    validate_target(target)
    try:
        parsed_mode = PrinterMode(mode)
    except ValueError:
        raise BadRequest(f"mode {mode!r}: use direct, hold or ticket") from None
    if not 1 <= hold_expiry_mins <= 60 * 24 * 30:
        raise BadRequest("hold expiry must be 1 minute .. 30 days")
    if require_tap and parsed_mode is not PrinterMode.DIRECT:
        raise BadRequest("--require-tap is for direct printers (hold printers always wait for one)")
    if not 1 <= tap_window_secs <= MAX_TAP_WINDOW_SECS:
        raise BadRequest(f"the tap window must be 1 .. {MAX_TAP_WINDOW_SECS} seconds")
    try:
        rules = CostRules(mono=cost_mono, color=cost_color, duplex_discount=duplex_discount)  # type: ignore[arg-type]
    except InvalidInput as exc:
        raise BadRequest(str(exc)) from exc
    if await session.scalar(select(Printer.id).where(Printer.name == name)) is not None:
        raise Conflict(f"printer {name!r} already exists")
    printer = Printer(
        name=name,
        mode=parsed_mode.value,
        target=target,
        cost_mono=rules.mono,
        cost_color=rules.color,
        duplex_discount=rules.duplex_discount,
        papercut=papercut,
        hold_expiry_mins=hold_expiry_mins,
        require_tap=require_tap,
        tap_window_secs=tap_window_secs,
    )
    session.add(printer)
    await session.flush()
    events.record(
        session,
        subject_type="printer",
        subject_id=printer.id,
        actor=actor,
        reason="created",
        data={"target": target, "mode": parsed_mode.value, "require_tap": require_tap},
    )
    return printer


# --- administration: list, show, edit, disable, delete ------------------------------

_PRICE_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?", re.ASCII)
EDITABLE = frozenset(
    {"target", "mode", "cost_mono", "cost_color", "duplex_discount", "media_costs",
     "papercut", "hold_expiry_mins"}
)  # fmt: skip


async def get_printer(session: AsyncSession, name: str, *, deleted: bool = False) -> Printer:
    printer = await session.scalar(select(Printer).where(Printer.name == name))
    if printer is None or (printer.deleted_at is not None and not deleted):
        raise NotFound(f"unknown printer {str(name)[:127]!r}")
    return printer


async def list_printers(session: AsyncSession, *, deleted: bool = False) -> list[Printer]:
    stmt = select(Printer).order_by(Printer.name)
    if not deleted:
        stmt = stmt.where(Printer.deleted_at.is_(None))
    return list((await session.scalars(stmt)).all())


def _validated(printer: Printer, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """``wanted`` checked and converted to column values (prices as Decimal)."""
    unknown = set(wanted) - EDITABLE
    if unknown:
        raise BadRequest(f"printer fields {sorted(unknown)} cannot be edited")
    out: dict[str, Any] = {}
    if "target" in wanted:
        if not isinstance(wanted["target"], str) or len(wanted["target"]) > 1023:
            raise BadRequest("target must be a string of at most 1023 characters")
        out["target"] = validate_target(wanted["target"])
    if "mode" in wanted:
        try:
            out["mode"] = PrinterMode(wanted["mode"]).value
        except ValueError:
            raise BadRequest(f"mode {wanted['mode']!r}: use direct, hold or ticket") from None
    if "papercut" in wanted:
        if not isinstance(wanted["papercut"], bool):
            raise BadRequest("papercut must be true or false")
        out["papercut"] = wanted["papercut"]
    if "hold_expiry_mins" in wanted:
        mins = wanted["hold_expiry_mins"]
        if isinstance(mins, bool) or not isinstance(mins, int) or not 1 <= mins <= 60 * 24 * 30:
            raise BadRequest("hold_expiry_mins must be an integer, 1 minute .. 30 days")
        out["hold_expiry_mins"] = mins
    prices = {k: wanted[k] for k in ("cost_mono", "cost_color", "duplex_discount") if k in wanted}
    for key, value in prices.items():
        if not isinstance(value, str | Decimal):
            raise BadRequest(f'{key} must be a decimal string such as "0.10"')
    media = wanted.get("media_costs", printer.media_costs or {})
    try:
        rules = CostRules(
            mono=prices.get("cost_mono", printer.cost_mono),
            color=prices.get("cost_color", printer.cost_color),
            duplex_discount=prices.get("duplex_discount", printer.duplex_discount),
            media=media,
        )
    except (InvalidInput, TypeError, AttributeError) as exc:
        raise BadRequest(str(exc)) from exc
    for key, value in (
        ("cost_mono", rules.mono),
        ("cost_color", rules.color),
        ("duplex_discount", rules.duplex_discount),
    ):
        if key in prices:
            out[key] = value
    if "media_costs" in wanted:
        out["media_costs"] = dict(wanted["media_costs"])
    return out


async def edit_printer(
    session: AsyncSession, name: str, wanted: Mapping[str, Any], *, actor: str = "admin"
) -> dict[str, tuple[Any, Any]]:
    """Change a printer's settings; returns field -> (old, new) and records one event.

    Applies to jobs received afterwards: a print-out keeps the mode, target,
    PaperCut flag, hold expiry and prices it was received under (intake copies
    them onto it). The CUPS queue stays as it is (its device URI does not change).
    """
    printer = await get_printer(session, name)
    changed = apply_changes(printer, _validated(printer, wanted))
    if changed:
        record_change(
            session, "printer", printer.name, actor=actor, reason="updated", changes=changed
        )
    await session.flush()
    return changed


async def set_printer_enabled(
    session: AsyncSession, name: str, enabled: bool, *, actor: str = "admin"
) -> Printer:
    """A disabled printer's jobs wait in CUPS (the intake answers 503: the backend retries)."""
    printer = await get_printer(session, name)
    if printer.enabled != enabled:
        printer.enabled = enabled
        record_change(
            session,
            "printer",
            printer.name,
            actor=actor,
            reason="enabled" if enabled else "disabled",
            changes={"enabled": (not enabled, enabled)},
        )
        await session.flush()
    return printer


async def delete_printer(session: AsyncSession, name: str, *, actor: str = "admin") -> Printer:
    """Soft delete: the record and its history stay; the intake refuses its jobs (404).

    The CUPS queue is the caller's to remove (``lpadmin -x``).
    """
    printer = await get_printer(session, name)
    printer.deleted_at, printer.enabled = utcnow(), False
    record_change(session, "printer", printer.name, actor=actor, reason="deleted")
    await session.flush()
    return printer
