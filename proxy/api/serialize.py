"""Rows → JSON, as SPEC §6 shows them.

Amounts are decimal strings, times ISO 8601 UTC ending in ``Z`` with
microseconds (always the same shape, so clients can compare them as strings),
statuses the lower-case labels of ``PrintStatus``. Pure functions: the
caller loads everything first, so serialising never touches the database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from billing.enums import PrintStatus, ReversalState
from billing.models import Account, AccountTransaction, Event, LedgerEntry, PrintOut
from billing.money import Currency

JSON = dict[str, Any]


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def money(amount: Decimal | None, currency: Currency) -> str | None:
    """The amount in the currency's decimals; exact digits if it has more.

    Rounding an entry with extra decimals for display would make the listed
    entries disagree with the balance they sum to, so those are shown whole.
    """
    if amount is None:
        return None
    if currency.quantize(amount) == amount:
        return currency.format(amount)
    return f"{amount.normalize():f}"


def reversal(amount: Decimal, state: ReversalState, currency: Currency) -> JSON:
    return {"amount": money(amount, currency), "status": state.value}


def transaction(
    txn: AccountTransaction,
    account: Account,
    currency: Currency,
    reversed_amount: Decimal | None = None,
) -> JSON:
    """``reversed_amount``: what its reversal gave back (None: not reversed)."""
    state = ReversalState.NONE if reversed_amount is None else ReversalState.FULL
    return {
        "id": txn.id,
        "account": {"id": account.id, "type": account.type, "name": account.path},
        "weight": txn.weight,
        "amount": money(txn.amount, currency),
        "status": PrintStatus(txn.status).label,
        "reversed": reversal(reversed_amount or Decimal(0), state, currency),
    }


def event(ev: Event) -> JSON:
    return {
        "at": iso(ev.at),
        "actor": ev.actor,
        "from": ev.from_status,
        "to": ev.to_status,
        "reason": ev.reason,
        "message": ev.message,
    }


def print_out(
    po: PrintOut,
    *,
    printer: str,
    transactions: Sequence[tuple[AccountTransaction, Account]],
    currency: Currency,
    events: Sequence[Event] | None = None,
    pages_estimated: bool = False,
    count_method: str | None = None,
    color_pages: int | None = None,
    document_copies: int = 1,
    reversed_: Mapping[int, Decimal] | None = None,
) -> JSON:
    """A print-out; ``events`` only in the detail view (None leaves the key out).

    ``pages_estimated``, ``count_method``, ``color_pages``, ``document_copies``:
    how its document was counted (its print-in). ``reversed_``: per transaction
    id, what its reversal gave back; the print-out's ``reversed`` sums them
    (status ``partial`` when only some transactions were reversed).
    """
    given_back = reversed_ or {}
    state = ReversalState.of(len(given_back), len(transactions))
    total = sum(given_back.values(), Decimal(0))
    out: JSON = {
        "id": po.id,
        "status": PrintStatus(po.status).label,
        "status_reason": po.status_reason,
        "status_message": po.status_message,
        "mode": po.mode,
        "printer": printer,
        "target": po.target,
        "delegate": po.delegate,
        "title": po.title,
        "pages": po.pages,
        "pages_estimated": pages_estimated,
        "count_method": count_method,
        "color_pages": color_pages,
        "copies": po.copies,
        "document_copies": document_copies,
        "printer_impressions": po.printer_impressions,
        "cost": money(po.cost, currency),
        "currency": po.currency,
        "ticket_number": po.ticket_number,
        "created_at": iso(po.created_at),
        "ended_at": iso(po.ended_at),
        "charged_at": iso(po.charged_at),
        "reversed_at": iso(po.reversed_at),
        "reversed": reversal(total, state, currency),
        "transactions": [
            transaction(t, a, currency, given_back.get(t.id)) for t, a in transactions
        ],
    }
    if events is not None:
        out["events"] = [event(e) for e in events]
    return out


def account(acc: Account, *, balance: Decimal, pages: int, currency: Currency) -> JSON:
    return {
        "id": acc.id,
        "type": acc.type,
        "name": acc.path,
        "balance": money(balance, currency),
        "currency": currency.code,
        "pages": pages,
        "active": acc.active,
        "credit_limit": money(acc.credit_limit, currency),
        "deleted_at": iso(acc.deleted_at),
    }


def ledger_entry(
    entry: LedgerEntry, currency: Currency, reversed_amount: Decimal | None = None
) -> JSON:
    """``reversed_amount``: the amount of the entry that compensates it (None: none)."""
    state = ReversalState.NONE if reversed_amount is None else ReversalState.FULL
    return {
        "id": entry.id,
        "amount": money(entry.amount, currency),
        "kind": entry.kind,
        "pages": entry.pages,
        "print_out_id": entry.print_out_id,
        "reverses_id": entry.reverses_id,
        "reversed": reversal(reversed_amount or Decimal(0), state, currency),
        "created_at": iso(entry.created_at),
        "comment": entry.comment,
        "actor": entry.actor,
    }


def page(items: list[JSON], next_cursor: str | None) -> JSON:
    return {"items": items, "next_cursor": next_cursor}
