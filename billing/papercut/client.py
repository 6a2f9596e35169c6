"""An async client for PaperCut NG/MF's XML-RPC Web Services API.

The API is ``POST <server>:9191/rpc/api/xmlrpc`` with one XML-RPC call per
request; every method takes the auth token (advanced config key
``auth.webservices.auth-token``) as its first argument. Method names and
argument orders are PaperCut's own (``ServerCommandProxy`` shipped with the
server in ``server/examples/webservices``); the Python names are the same in
snake_case.

Contracts:

* Amounts are ``Decimal`` for the caller. PaperCut's API wants a double, so
  the conversion to ``float`` happens here and only here (SPEC §4); an
  amount that a double cannot carry exactly (as its shortest decimal text,
  which is what goes over the wire) is refused. Balances come back as
  ``Decimal`` quantized to ``balance_decimals`` (default 6, the ledger's scale).
* Shared sub-accounts are written ``Parent/Sub`` by proxyprint and
  ``parent\\sub`` (one backslash) by PaperCut; the shared-account methods
  convert (``shared_account_name``).
* A fault (the server said no) raises ``PaperCutFault`` at once and is never
  retried. A transport error (refused, timeout, HTTP 5xx, malformed body)
  is retried with exponential backoff and jitter, at most ``attempts``
  attempts in all, then raises ``PaperCutUnavailable``.
* **Writes are not retried unless ``retry_writes=True``** (a write is any
  method not in ``READ_METHODS``, so an unlisted one is safe). A transport error
  after the server applied a write (the answer was lost, or came after our
  timeout) cannot be told apart from one before: retrying
  ``adjustUserAccountBalance`` blindly can charge twice. The billing outbox
  has its own exactly-once logic (it looks for its marker in PaperCut's
  ``tbl_account_transaction`` with ``printlog.adjustment_applied`` before
  re-sending), so it uses the default: one attempt per call. Reads are
  always retried.
* ``calls`` counts attempts (HTTP requests) per XML-RPC method, ``errors``
  the failed attempts (faults included) and ``retries`` the repeated ones.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import xmlrpc.client
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final
from xml.parsers.expat import ExpatError

import aiohttp

from billing.exceptions import InvalidAmount, InvalidInput
from billing.httpclient import HttpClient, RetryPolicy, transport_detail
from billing.papercut.exceptions import PaperCutFault, PaperCutTaskTimeout, PaperCutUnavailable

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "MAX_COMMENT_CHARS",
    "PAGE_SIZE",
    "READ_METHODS",
    "PaperCutClient",
    "TaskStatus",
    "is_write",
    "shared_account_name",
    "split_printer",
]

DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF = 0.2
DEFAULT_MAX_BACKOFF = 5.0
# PaperCut recommends pages of 1000 for listUserAccounts, listPrinters...
PAGE_SIZE = 1000
# tbl_account_transaction.txn_comment is varchar(255): a longer comment would be
# cut, and an idempotency marker at its end would be lost.
MAX_COMMENT_CHARS = 255
MAX_RESPONSE_BYTES = 32 * 1024 * 1024

# Calls that only read. Every other method counts as a write: not retried
# unless retry_writes, so a method added later is safe by default.
READ_METHODS: Final = frozenset(
    {
        "api.isUserExists",
        "api.getUserAccountBalance",
        "api.getUserProperty",
        "api.getUserProperties",
        "api.listUserAccounts",
        "api.getTotalUsers",
        "api.lookUpUserNameByCardNo",
        "api.lookUpUserNameByIDNo",
        "api.lookUpUserNameByEmail",
        "api.isGroupExists",
        "api.listUserGroups",
        "api.getGroupMembers",
        "api.getUserGroups",
        "api.isSharedAccountExists",
        "api.listSharedAccounts",
        "api.getSharedAccountAccountBalance",
        "api.getSharedAccountProperty",
        "api.listPrinters",
        "api.getPrinterProperty",
        "api.getPrinterProperties",
        "api.getPrinterCostSimple",
        "api.getTaskStatus",
    }
)


def is_write(method: str) -> bool:
    """Whether a call may change something on the server (anything not a known read)."""
    return method not in READ_METHODS


# XML 1.0 cannot carry these characters, not even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_WIDE = Context(prec=80)

XmlRpcArg = str | int | float | bool | list[str] | list[list[str]]
_HEADERS: Final = {"Content-Type": "text/xml; charset=utf-8"}


class _TransportError(Exception):
    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def shared_account_name(name: str) -> str:
    """proxyprint's ``Parent/Sub`` as PaperCut's ``Parent\\Sub``; other names unchanged.

    PaperCut has one level of sub-accounts, so ``a/b/c`` is refused; a name
    already in PaperCut's form (with a backslash) is passed as it is.
    """
    _text(name, "account")
    if "\\" in name:
        if "/" in name:
            raise InvalidInput(f"account: {name!r} mixes '/' and '\\'")
        return name
    parent, sep, sub = name.partition("/")
    if not sep:
        return name
    if not parent or not sub or "/" in sub:
        raise InvalidInput(
            f"account: {name!r} is not 'Parent/Sub' (PaperCut has one level of sub-accounts)"
        )
    return f"{parent}\\{sub}"


def split_printer(entry: str) -> tuple[str, str]:
    """``listPrinters``' ``server\\printer`` as (server, printer)."""
    server, sep, printer = entry.partition("\\")
    if not sep:
        raise InvalidInput(f"printer {entry!r} is not 'server\\printer'")
    return server, printer


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected a string, got {type(value).__name__}")
    if _NOT_XML.search(value):
        raise InvalidInput(f"{field}: {value[:40]!r} has characters XML-RPC cannot carry")
    return value


def _comment(value: object) -> str:
    text = _text(value, "comment")
    if len(text) > MAX_COMMENT_CHARS:
        raise InvalidInput(
            f"comment: {len(text)} characters, PaperCut keeps at most {MAX_COMMENT_CHARS}"
        )
    return text


def _count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise InvalidInput(f"{field}: expected a non-negative 32-bit int, got {value!r}")
    return value


def _to_double(amount: object, field: str) -> float:
    """An exact Decimal (or int) as the double PaperCut wants, refusing any change."""
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise InvalidAmount(f"{field}: expected a Decimal, got {type(amount).__name__}")
    value = Decimal(amount)
    if not value.is_finite():
        raise InvalidAmount(f"{field}: {value} is not a finite amount")
    double = float(value)
    # xmlrpc.client writes a float as repr(): that text is what PaperCut reads.
    if not math.isfinite(double) or Decimal(repr(double)) != value:
        raise InvalidAmount(f"{field}: {value} cannot be sent as a double without changing it")
    return double


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """``api.getTaskStatus``: whether the background task completed, and its message."""

    completed: bool
    message: str


class PaperCutClient(HttpClient):
    """One PaperCut server; ``async with PaperCutClient(url, token) as pc: ...``.

    Session, per-attempt ``timeout``, ``attempts``, backoff and counters:
    ``billing.httpclient.HttpClient``.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        retry_writes: bool = False,
        balance_decimals: int = 6,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            _HEADERS, timeout, RetryPolicy(attempts, backoff, max_backoff, rng), session
        )
        self.url = url
        self._token = token
        self.retry_writes = retry_writes
        self._quantum = Decimal(1).scaleb(-balance_decimals)

    # --- the XML-RPC call ----------------------------------------------------

    async def call(self, method: str, *params: XmlRpcArg) -> object:
        """Call ``method`` (e.g. ``"api.isUserExists"``) with the token prepended.

        Retried on transport errors when the method is a read or
        ``retry_writes`` is set; faults are never retried.
        """
        body = xmlrpc.client.dumps(
            (self._token, *params), methodname=method, encoding="utf-8", allow_none=False
        ).encode("utf-8")
        attempts = self.attempts if (self.retry_writes or not is_write(method)) else 1
        for attempt in range(1, attempts + 1):
            self.calls[method] += 1
            try:
                return await self._post(method, body)
            except PaperCutFault:
                self.errors[method] += 1
                raise
            except _TransportError as exc:
                self.errors[method] += 1
                if not exc.retryable or attempt == attempts:
                    raise PaperCutUnavailable(
                        method, exc.reason, attempts=attempt, retryable=exc.retryable
                    ) from exc.__cause__
                await self._backoff(method, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, method: str, body: bytes) -> object:
        try:
            async with self._http().post(
                self.url, data=body, timeout=self._attempt_timeout()
            ) as response:
                if response.status != 200:
                    # 5xx and 408/429 are passing; any other status is a wrong URL
                    # or a proxy in the way, which sending again does not change.
                    transient = response.status >= 500 or response.status in (408, 429)
                    raise _TransportError(f"HTTP {response.status}", retryable=transient)
                data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _TransportError(transport_detail(exc)) from exc
        if len(data) > MAX_RESPONSE_BYTES:
            raise _TransportError(f"response of {len(data)} bytes")
        try:
            (result,), _ = xmlrpc.client.loads(data, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            code = fault.faultCode if isinstance(fault.faultCode, int) else 0
            raise PaperCutFault(method, code, str(fault.faultString)) from None
        except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError) as exc:
            raise _TransportError(f"malformed response: {exc}") from exc
        return result

    # --- result checks -------------------------------------------------------

    @staticmethod
    def _wrong(method: str, value: object, expected: str) -> PaperCutUnavailable:
        return PaperCutUnavailable(
            method, f"expected {expected}, got {type(value).__name__}", retryable=False
        )

    async def _bool(self, method: str, *params: XmlRpcArg) -> bool:
        value = await self.call(method, *params)
        if type(value) is not bool:
            raise self._wrong(method, value, "a boolean")
        return value

    async def _str(self, method: str, *params: XmlRpcArg) -> str:
        value = await self.call(method, *params)
        if not isinstance(value, str):
            raise self._wrong(method, value, "a string")
        return value

    async def _strings(self, method: str, *params: XmlRpcArg) -> list[str]:
        value = await self.call(method, *params)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(method, value, "an array of strings")
        return list(value)

    async def _money(self, method: str, *params: XmlRpcArg) -> Decimal:
        value = await self.call(method, *params)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(method, value, "a double")
        if not math.isfinite(value):
            raise self._wrong(method, value, "a finite double")
        # repr() is the shortest text that reads back as the same double.
        return Decimal(repr(value)).quantize(self._quantum, ROUND_HALF_EVEN, _WIDE)

    # --- users and their accounts --------------------------------------------

    async def is_user_exists(self, user: str) -> bool:
        return await self._bool("api.isUserExists", _text(user, "user"))

    async def get_user_account_balance(self, user: str, account_name: str = "") -> Decimal:
        """The user's balance; ``account_name`` "" is the total of all personal accounts."""
        return await self._money(
            "api.getUserAccountBalance", _text(user, "user"), _text(account_name, "account_name")
        )

    async def adjust_user_account_balance(
        self, user: str, amount: Decimal | int, comment: str, account_name: str = ""
    ) -> None:
        """Add ``amount`` (negative: charge) to a personal account; "" = the built-in one.

        Unconditional: PaperCut does not check the balance (it may go
        negative). A write: one attempt unless ``retry_writes`` (see module doc).
        """
        await self.call(
            "api.adjustUserAccountBalance",
            _text(user, "user"),
            _to_double(amount, "amount"),
            _comment(comment),
            _text(account_name, "account_name"),
        )

    async def get_user_property(self, user: str, prop: str) -> str:
        return await self._str("api.getUserProperty", _text(user, "user"), _text(prop, "property"))

    async def get_user_properties(self, user: str, props: Sequence[str]) -> list[str]:
        """Several properties in one call, in the order asked."""
        names = [_text(p, "property") for p in props]
        values = await self._strings("api.getUserProperties", _text(user, "user"), names)
        if len(values) != len(names):
            raise PaperCutUnavailable(
                "api.getUserProperties",
                f"asked {len(names)} properties, got {len(values)}",
                retryable=False,
            )
        return values

    async def set_user_property(self, user: str, prop: str, value: str) -> None:
        await self.call(
            "api.setUserProperty",
            _text(user, "user"),
            _text(prop, "property"),
            _text(value, "value"),
        )

    async def set_user_properties(
        self, user: str, values: Mapping[str, str] | Sequence[tuple[str, str]]
    ) -> None:
        pairs = values.items() if isinstance(values, Mapping) else values
        body = [[_text(k, "property"), _text(v, "value")] for k, v in pairs]
        await self.call("api.setUserProperties", _text(user, "user"), body)

    async def list_user_accounts(self, offset: int = 0, limit: int = PAGE_SIZE) -> list[str]:
        """User names, sorted, from ``offset``; at most ``limit``."""
        return await self._strings(
            "api.listUserAccounts", _count(offset, "offset"), _count(limit, "limit")
        )

    async def add_new_internal_user(
        self,
        user: str,
        password: str,
        *,
        full_name: str = "",
        email: str = "",
        card_id: str = "",
        pin: str = "",
    ) -> None:
        """An internal user (not from the directory). Faults if the name exists."""
        await self.call(
            "api.addNewInternalUser",
            _text(user, "user"),
            _text(password, "password"),
            _text(full_name, "full_name"),
            _text(email, "email"),
            _text(card_id, "card_id"),
            _text(pin, "pin"),
        )

    async def delete_existing_user(self, user: str, redact_user_data: bool = False) -> None:
        """Delete a user (print and transaction history stay); ``redact_user_data`` too."""
        if not isinstance(redact_user_data, bool):
            raise InvalidInput("redact_user_data must be a bool")
        await self.call("api.deleteExistingUser", _text(user, "user"), redact_user_data)

    async def lookup_user_name_by_card_no(self, card: str) -> str | None:
        """The user with this card number, or None (PaperCut answers "")."""
        name = await self._str("api.lookUpUserNameByCardNo", _text(card, "card"))
        return name or None

    # --- groups ---------------------------------------------------------------

    async def is_group_exists(self, group: str) -> bool:
        return await self._bool("api.isGroupExists", _text(group, "group"))

    async def add_new_group(self, group: str) -> None:
        """Add a group. It must exist in the user directory source; it is added in the
        background (``wait_for_task``)."""
        await self.call("api.addNewGroup", _text(group, "group"))

    # --- user directory sync and background tasks ----------------------------

    async def perform_user_and_group_sync(self) -> None:
        """Start PaperCut's user and group sync with its directory source (background)."""
        await self.call("api.performUserAndGroupSync")

    async def perform_group_sync(self) -> None:
        """Start PaperCut's group membership sync (background)."""
        await self.call("api.performGroupSync")

    async def get_task_status(self) -> TaskStatus:
        """The status of PaperCut's current (or last) background task."""
        value = await self.call("api.getTaskStatus")
        if not isinstance(value, Mapping) or not isinstance(value.get("completed"), bool):
            raise PaperCutUnavailable(
                "api.getTaskStatus", f"unexpected answer {value!r}", retryable=False
            )
        return TaskStatus(bool(value["completed"]), str(value.get("message", "")))

    async def wait_for_task(
        self, *, timeout: float = 300.0, interval: float = 0.05, max_interval: float = 1.0
    ) -> TaskStatus:
        """Poll ``getTaskStatus`` until the task completed (``PaperCutTaskTimeout`` after
        ``timeout`` seconds); the pause doubles from ``interval`` up to ``max_interval``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = interval
        while True:
            status = await self.get_task_status()
            if status.completed:
                return status
            if loop.time() + pause > deadline:
                raise PaperCutTaskTimeout(
                    f"PaperCut's background task did not complete in {timeout:g} s:"
                    f" {status.message}"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, max_interval)

    async def list_user_groups(self, offset: int = 0, limit: int = PAGE_SIZE) -> list[str]:
        """All groups (not one user's: that is ``get_user_groups``)."""
        return await self._strings(
            "api.listUserGroups", _count(offset, "offset"), _count(limit, "limit")
        )

    async def get_group_members(
        self, group: str, offset: int = 0, limit: int = PAGE_SIZE
    ) -> list[str]:
        return await self._strings(
            "api.getGroupMembers",
            _text(group, "group"),
            _count(offset, "offset"),
            _count(limit, "limit"),
        )

    async def get_user_groups(self, user: str) -> list[str]:
        return await self._strings("api.getUserGroups", _text(user, "user"))

    async def add_user_to_group(self, user: str, group: str) -> None:
        await self.call("api.addUserToGroup", _text(user, "user"), _text(group, "group"))

    async def remove_user_from_group(self, user: str, group: str) -> None:
        await self.call("api.removeUserFromGroup", _text(user, "user"), _text(group, "group"))

    # --- shared accounts ----------------------------------------------------------

    async def is_shared_account_exists(self, account: str) -> bool:
        return await self._bool("api.isSharedAccountExists", shared_account_name(account))

    async def add_new_shared_account(self, account: str) -> None:
        """Create ``account`` (``Parent/Sub`` for a sub-account)."""
        await self.call("api.addNewSharedAccount", shared_account_name(account))

    async def adjust_shared_account_account_balance(
        self, account: str, amount: Decimal | int, comment: str
    ) -> None:
        """Add ``amount`` (negative: charge) to a shared account. Unconditional; a write."""
        await self.call(
            "api.adjustSharedAccountAccountBalance",
            shared_account_name(account),
            _to_double(amount, "amount"),
            _comment(comment),
        )

    # --- printers -------------------------------------------------------------------

    async def list_printers(self, offset: int = 0, limit: int = PAGE_SIZE) -> list[str]:
        """``server\\printer`` names (``split_printer``); MFDs are ``device\\name``."""
        return await self._strings(
            "api.listPrinters", _count(offset, "offset"), _count(limit, "limit")
        )

    async def get_printer_property(self, server: str, printer: str, prop: str) -> str:
        """Documented: cost-model, custom-field-1..6, disabled, print-stats.job-count,
        print-stats.page-count, printer-id."""
        return await self._str(
            "api.getPrinterProperty",
            _text(server, "server"),
            _text(printer, "printer"),
            _text(prop, "property"),
        )

    async def set_printer_property(self, server: str, printer: str, prop: str, value: str) -> None:
        """Documented as settable: cost-model, custom-field-1..6, disabled."""
        await self.call(
            "api.setPrinterProperty",
            _text(server, "server"),
            _text(printer, "printer"),
            _text(prop, "property"),
            _text(value, "value"),
        )

    async def get_printer_cost_simple(self, server: str, printer: str) -> Decimal:
        """The page cost of a printer on the Simple charging model (a fault otherwise)."""
        return await self._money(
            "api.getPrinterCostSimple", _text(server, "server"), _text(printer, "printer")
        )

    async def set_printer_cost_simple(self, server: str, printer: str, cost: Decimal) -> None:
        await self.call(
            "api.setPrinterCostSimple",
            _text(server, "server"),
            _text(printer, "printer"),
            _to_double(cost, "cost"),
        )

    # --- paging -------------------------------------------------------------------------

    async def _all(
        self, page: Callable[[int, int], Awaitable[list[str]]], size: int = PAGE_SIZE
    ) -> list[str]:
        items: list[str] = []
        while True:
            batch = await page(len(items), size)
            items += batch
            if len(batch) < size:
                return items

    async def all_user_accounts(self, page_size: int = PAGE_SIZE) -> list[str]:
        return await self._all(self.list_user_accounts, page_size)

    async def all_user_groups(self, page_size: int = PAGE_SIZE) -> list[str]:
        return await self._all(self.list_user_groups, page_size)

    async def all_group_members(self, group: str, page_size: int = PAGE_SIZE) -> list[str]:
        async def page(offset: int, limit: int) -> list[str]:
            return await self.get_group_members(group, offset, limit)

        return await self._all(page, page_size)

    async def all_printers(self, page_size: int = PAGE_SIZE) -> list[str]:
        return await self._all(self.list_printers, page_size)
