"""Proxy printers: the service's record plus the CUPS queue that feeds it."""

from __future__ import annotations

import re
from decimal import Decimal
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import events
from billing.cost import CostRules
from billing.enums import PrinterMode
from billing.exceptions import InvalidInput
from billing.models import Printer

from .exceptions import BadRequest, Conflict

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
