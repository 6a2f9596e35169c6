"""The PaperCut simulator's database: the Web Services methods plus the test controls.

``SimDatabase`` is what the simulator serves (``SimMethods``, on the
tables of ``SimStore``) and what tests, benchmarks and the demo drive: they
seed users, accounts, groups and printers as an administrator would, record
jobs as the CUPS backend does (``proxy.devkit.papercut.simbackend``, which writes
the same file from its own process), read the print log and the balance
changes, and decide what happens to a held job (release, cancel, deny,
expire, refund). Every helper works whether or not the server runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from proxy.devkit.papercut.simbackend import (
    DEFAULT_SERVER,
    charge_account,
    ensure_user,
    record_usage,
)
from proxy.devkit.papercut.simmethods import CHARGE_ACCOUNT_PROPERTY, COST_MODELS, SimMethods
from proxy.devkit.papercut.simstore import SCHEMA, SimFault, now_text, yn

__all__ = [
    "COST_MODELS",
    "SCHEMA",
    "Adjustment",
    "SimDatabase",
    "SimFault",
    "SimNotFound",
    "UsageRow",
    "papercut_account_name",
]

TIMEOUT_REASON = "TIMEOUT"


class SimNotFound(LookupError):
    """A control named a document the print log does not have."""


@dataclass(frozen=True, slots=True)
class UsageRow:
    printer_usage_log_id: int
    usage_date: str
    user_name: str
    server_name: str
    printer_name: str
    document_name: str
    total_pages: int
    total_color_pages: int
    copies: int
    duplex: bool
    usage_cost: Decimal
    usage_allowed: bool
    printed: bool
    cancelled: bool
    refunded: bool
    denied_reason: str
    job_type: str
    charged_to: str  # the account PaperCut charges: a user name or a shared account's

    @property
    def held(self) -> bool:
        """Waiting in a hold/release queue: not printed, cancelled or denied."""
        return not (self.printed or self.cancelled or self.denied_reason)


@dataclass(frozen=True, slots=True)
class Adjustment:
    account_transaction_id: int
    account_type: str
    account_name: str
    amount: Decimal
    balance_after: Decimal
    comment: str
    transacted_by: str
    transaction_type: str
    transaction_date: str


def papercut_account_name(name: str) -> str:
    """``Parent/Sub`` (proxyprint) or ``Parent\\Sub`` (PaperCut) as PaperCut writes it."""
    return name if "\\" in name else name.replace("/", "\\", 1)


class SimDatabase(SimMethods):
    """The simulator's tables: the Web Services methods, and the helpers below."""

    # --- seeding (the simulator's own helpers) -------------------------------------------

    def add_user(
        self,
        name: str,
        balance: Decimal | int = 0,
        *,
        full_name: str = "",
        email: str = "",
        card: str = "",
        groups: Sequence[str] = (),
    ) -> None:
        """A user (lower-cased) with its built-in account; an opening balance is a transaction."""
        user = name.lower()
        if self.is_user_exists(user):
            raise SimFault(f"User already exists: {user}")
        with self._tx() as conn:
            user_id, account_id = ensure_user(conn, user, now_text())
            conn.execute(
                "UPDATE tbl_user SET full_name = ?, email = ?, card_number = ? WHERE user_id = ?",
                (full_name, email, card, user_id),
            )
            if balance:
                self._adjust(conn, account_id, Decimal(balance), "initial balance", "INITIAL")
        for group in groups:
            self.add_group(group)
            self.add_user_to_group(user, group)

    def add_personal_account(self, user: str, name: str, balance: Decimal | int = 0) -> None:
        """A named personal account ("multiple personal accounts")."""
        user_id = self._user_id(user)
        if not name:
            raise SimFault("A named personal account needs a name")
        with self._tx() as conn:
            account_id = conn.execute(
                "INSERT INTO tbl_account (account_type, account_name, personal_name, user_id,"
                " balance, created_date) VALUES ('USER', ?, ?, ?, '0', ?)",
                (user.lower(), name, user_id, now_text()),
            ).lastrowid
            assert account_id is not None
            if balance:
                self._adjust(conn, account_id, Decimal(balance), "initial balance", "INITIAL")

    def add_shared_account(self, name: str, balance: Decimal | int = 0) -> None:
        """``Parent/Sub`` or ``Parent\\Sub``; the parent is created when missing."""
        account = papercut_account_name(name)
        self.add_new_shared_account(account)
        if balance:
            with self._tx() as conn:
                account_id = self._shared_account(account)
                self._adjust(conn, account_id, Decimal(balance), "initial balance", "INITIAL")

    def add_group(self, name: str, members: Sequence[str] = ()) -> None:
        """A group, at once (as if it came from the directory source long ago)."""
        self.insert_group(name)
        for member in members:
            self.add_user_to_group(member, name)

    def add_printer(
        self,
        server: str,
        name: str,
        *,
        cost_mono: Decimal | int = 0,
        cost_color: Decimal | int | None = None,
        unauthenticated: bool = True,
        hold_release: bool = False,
        cost_model: str = "SIMPLE",
        disabled: bool = False,
        charge_account: str | None = None,
    ) -> None:
        """A printer; cost 0 means "no cost set". Replaces one of the same name.

        ``charge_account`` names the shared account the printer charges every
        job to (None: the printing user's personal account, PaperCut's default).
        """
        charge_id = (
            None
            if charge_account is None
            else self._shared_account(papercut_account_name(charge_account))
        )
        with self._tx() as conn:
            conn.execute(
                "DELETE FROM tbl_printer_attribute WHERE printer_id IN (SELECT printer_id"
                " FROM tbl_printer WHERE server_name = ? AND printer_name = ? AND deleted = 'N')",
                (server, name),
            )
            conn.execute(
                "UPDATE tbl_printer SET deleted = 'Y' WHERE server_name = ? AND printer_name = ?",
                (server, name),
            )
            conn.execute(
                "INSERT INTO tbl_printer (server_name, printer_name, display_name, cost_model,"
                " default_cost, color_cost, unauthenticated, hold_release, disabled,"
                " charge_account_id, created_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    server,
                    name,
                    name,
                    cost_model,
                    str(Decimal(cost_mono)),
                    "" if cost_color is None else str(Decimal(cost_color)),
                    yn(unauthenticated),
                    yn(hold_release),
                    yn(disabled),
                    charge_id,
                    now_text(),
                ),
            )

    def set_printer_flags(
        self,
        server: str,
        name: str,
        *,
        unauthenticated: bool | None = None,
        hold_release: bool | None = None,
    ) -> None:
        """What a person does in the admin UI (Advanced Configuration)."""
        printer_id = self._printer_id(server, name)
        with self._tx() as conn:
            for column, value in (
                ("unauthenticated", unauthenticated),
                ("hold_release", hold_release),
            ):
                if value is not None:
                    conn.execute(
                        f"UPDATE tbl_printer SET {column} = ? WHERE printer_id = ?",
                        (yn(value), printer_id),
                    )

    def record_job(
        self,
        document_name: str,
        *,
        user: str,
        printer: str,
        server: str = DEFAULT_SERVER,
        pages: int = 1,
        copies: int = 1,
        color: bool = False,
        duplex: bool = False,
    ) -> int:
        """Log a job exactly as the CUPS backend does (for tests without cupsd)."""
        return record_usage(
            self._conn,
            server=server,
            printer=printer,
            user=user,
            document_name=document_name,
            pages=pages,
            copies=copies,
            color=color,
            duplex=duplex,
        )

    # --- reading (tests, demo) ------------------------------------------------------------------

    def balance(self, user: str, account_name: str = "") -> Decimal:
        """As getUserAccountBalance: "" is the total of the user's personal accounts."""
        return self._user_balance(user, account_name)

    def shared_balance(self, name: str) -> Decimal:
        return self._balance_of(self._shared_account(papercut_account_name(name)))

    def adjustments(self, comment_contains: str | None = None) -> list[Adjustment]:
        """Every balance change, oldest first (optionally those whose comment contains a text)."""
        sql = (
            "SELECT t.account_transaction_id, a.account_type,"
            " CASE WHEN a.personal_name = '' THEN a.account_name"
            " ELSE a.account_name || '/' || a.personal_name END,"
            " t.amount, t.balance_after, t.txn_comment, t.transacted_by, t.transaction_type,"
            " t.transaction_date FROM tbl_account_transaction t JOIN tbl_account a"
            " USING (account_id)"
        )
        params: tuple[str, ...] = ()
        if comment_contains is not None:
            sql += " WHERE instr(t.txn_comment, ?) > 0"
            params = (comment_contains,)
        rows = self._conn.execute(sql + " ORDER BY t.account_transaction_id", params).fetchall()
        return [
            Adjustment(
                account_transaction_id=int(r[0]),
                account_type=str(r[1]),
                account_name=str(r[2]),
                amount=Decimal(r[3]),
                balance_after=Decimal(r[4]),
                comment=str(r[5]),
                transacted_by=str(r[6]),
                transaction_type=str(r[7]),
                transaction_date=str(r[8]),
            )
            for r in rows
        ]

    def usage_rows(self, document_name: str | None = None) -> list[UsageRow]:
        """The print log, oldest first (optionally one document's rows)."""
        sql = (
            "SELECT l.printer_usage_log_id, l.usage_date, u.user_name, p.server_name,"
            " p.printer_name, l.document_name, l.total_pages, l.total_color_pages, l.copies,"
            " l.duplex, l.usage_cost, l.usage_allowed, l.printed, l.cancelled, l.refunded,"
            " l.denied_reason, l.job_type, a.account_name FROM tbl_printer_usage_log l"
            " JOIN tbl_user u ON u.user_id = l.used_by_user_id"
            " JOIN tbl_printer p ON p.printer_id = l.printer_id"
            " JOIN tbl_account a ON a.account_id = l.charged_to_account_id"
        )
        params: tuple[str, ...] = ()
        if document_name is not None:
            sql += " WHERE l.document_name = ?"
            params = (document_name,)
        rows = self._conn.execute(sql + " ORDER BY l.printer_usage_log_id", params).fetchall()
        return [
            UsageRow(
                printer_usage_log_id=int(r[0]),
                usage_date=str(r[1]),
                user_name=str(r[2]),
                server_name=str(r[3]),
                printer_name=str(r[4]),
                document_name=str(r[5]),
                total_pages=int(r[6]),
                total_color_pages=int(r[7]),
                copies=int(r[8]),
                duplex=r[9] == "Y",
                usage_cost=Decimal(r[10]),
                usage_allowed=r[11] == "Y",
                printed=r[12] == "Y",
                cancelled=r[13] == "Y",
                refunded=r[14] == "Y",
                denied_reason=str(r[15]),
                job_type=str(r[16]),
                charged_to=str(r[17]),
            )
            for r in rows
        ]

    def held_jobs(self) -> list[UsageRow]:
        return [row for row in self.usage_rows() if row.held]

    # --- controls: what happens to a held job in PaperCut ------------------------------------

    def _latest(self, document_name: str) -> UsageRow:
        rows = self.usage_rows(document_name)
        if not rows:
            raise SimNotFound(f"no print-log row for document {document_name!r}")
        return rows[-1]

    HELD_ROWS = ("submission", "end")

    def set_held_rows(self, when: str) -> None:
        """When a held job's print-log row is written: at ``submission`` (the default) or
        at the ``end`` of the hold (release, cancel, deny, expire); see ``simbackend``."""
        if when not in self.HELD_ROWS:
            raise ValueError(f"held rows: {' or '.join(self.HELD_ROWS)}, not {when!r}")
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO sim_setting (name, value) VALUES ('held_rows', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (when,),
            )

    def _decide(self, document_name: str, assignments: str, params: tuple[str, ...]) -> bool:
        """End a held job: ``assignments`` on its row, which (held rows logged at the end)
        only now enters the print log, dated now."""
        row = self._latest(document_name)
        if not row.held:
            return False
        with self._tx() as conn:
            self._end_hold(conn, row, assignments, params)
        return True

    @staticmethod
    def _end_hold(
        conn: sqlite3.Connection, row: UsageRow, assignments: str, params: tuple[str, ...]
    ) -> None:
        conn.execute(
            f"UPDATE tbl_printer_usage_log SET {assignments},"
            " usage_date = CASE job_type WHEN 'HELD' THEN ? ELSE usage_date END,"
            " job_type = CASE job_type WHEN 'HELD' THEN 'PRINT' ELSE job_type END"
            " WHERE printer_usage_log_id = ?",
            (*params, now_text(), row.printer_usage_log_id),
        )

    def release(self, document_name: str) -> bool:
        """A held job printed: ``printed='Y'``, its cost charged to its charged account."""
        row = self._latest(document_name)
        if not row.held:
            return False
        charged = self._charged_account_id(row)
        with self._tx() as conn:
            self._end_hold(conn, row, "printed = 'Y'", ())
            charge_account(conn, charged, row.usage_cost)
        return True

    def _charged_account_id(self, row: UsageRow) -> int:
        found = self._one(
            "SELECT charged_to_account_id FROM tbl_printer_usage_log"
            " WHERE printer_usage_log_id = ?",
            (row.printer_usage_log_id,),
        )
        assert found is not None
        return int(str(found[0]))

    def cancel(self, document_name: str) -> bool:
        """A held job cancelled by a person (in PaperCut or at the release station)."""
        return self._decide(document_name, "cancelled = 'Y'", ())

    def deny(self, document_name: str, reason: str) -> bool:
        """A held job refused (e.g. a filter rule): ``denied_reason``, not allowed."""
        if not reason:
            raise ValueError("deny needs a reason")
        return self._decide(document_name, "denied_reason = ?, usage_allowed = 'N'", (reason,))

    def expire(self, document_name: str) -> bool:
        """A held job never released before the hold timeout: PaperCut deletes it.

        Recorded as ``cancelled='Y'`` with ``denied_reason='TIMEOUT'``: a reader
        that looks only at ``cancelled`` sees it ended, and the reason tells an
        expiry from a cancel.
        """
        return self._decide(document_name, "cancelled = 'Y', denied_reason = ?", (TIMEOUT_REASON,))

    def refund(self, document_name: str) -> bool:
        """A printed job refunded by an admin (``refunded='Y'``): its cost goes back to
        the account it was charged to, as a ``PRINT_REFUND`` transaction."""
        row = self._latest(document_name)
        if not row.printed or row.refunded:
            return False
        with self._tx() as conn:
            conn.execute(
                "UPDATE tbl_printer_usage_log SET refunded = 'Y' WHERE printer_usage_log_id = ?",
                (row.printer_usage_log_id,),
            )
            self._adjust(
                conn,
                self._charged_account_id(row),
                row.usage_cost,
                f"refund of {row.document_name}",
                "PRINT_REFUND",
            )
        return True

    def set_printer_charge_account(self, server: str, name: str, account: str | None) -> None:
        """What an admin sets in the UI: the shared account a printer charges (None: the
        printing user's personal account)."""
        self.set_printer_property(server, name, CHARGE_ACCOUNT_PROPERTY, account or "")

    def total_balance(self) -> Decimal:
        """Every account's balance added up (users' and shared)."""
        rows = self._column("SELECT balance FROM tbl_account WHERE deleted = 'N'")
        return sum((Decimal(r) for r in rows), Decimal(0))
