"""The PaperCut simulator's store: PaperCut-like tables in one SQLite file.

Standard library only (``sqlite3``), shared by the XML-RPC server
(``proxy.devkit.papercut.simulator``), the tests, and, for the print log, by the
CUPS backend (``proxy.devkit.papercut.simbackend``), which runs in its own process:
the file is in WAL mode with a busy timeout, and every write is one
``BEGIN IMMEDIATE`` transaction.

The tables are named as PaperCut's and carry the columns proxyprint reads
(``printlog.py`` reads them with SQLAlchemy Core and bound parameters, so the
same code reads a real PaperCut database):

* ``tbl_printer_usage_log``: one row per job (see ``simbackend``);
  ``printed``/``cancelled``/``refunded``/``usage_allowed`` are 'Y'/'N',
  ``denied_reason`` is '' or a code ('TIMEOUT' for an expired hold).
* ``tbl_account_transaction``: one row per balance change, with the
  caller's comment in ``txn_comment``: the billing outbox finds out there
  whether an adjustment was applied.
* ``tbl_account`` (USER and SHARED accounts; a user's built-in account has
  ``personal_name`` '', ``parent_id`` links a shared sub-account),
  ``tbl_user``, ``tbl_user_group``, ``tbl_user_group_member``,
  ``tbl_printer`` (cost, ``unauthenticated``, ``hold_release``,
  ``charge_account_id``: the shared account the printer charges, NULL for
  the printing user's personal account...) and
  ``tbl_printer_attribute`` (custom fields).

Amounts are exact decimal strings (TEXT) and times ISO 8601 UTC strings:
SQLite has neither a decimal nor a time type. Differences from PaperCut's own
schema are the simulator's design (``tbl_account.user_id`` instead of a
link table, fewer columns); the column names proxyprint reads are PaperCut's.

``SimStore`` is the connection, its transactions and the lookups the
Web Services methods (``simmethods``) and the test controls (``simdb``)
build on.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

__all__ = ["SCHEMA", "TRANSACTED_BY", "SimFault", "SimStore", "now_text", "yn"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tbl_user (
    user_id INTEGER PRIMARY KEY,
    user_name TEXT NOT NULL,
    full_name TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    department TEXT NOT NULL DEFAULT '',
    office TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    card_number TEXT NOT NULL DEFAULT '',
    card_number2 TEXT NOT NULL DEFAULT '',
    card_pin TEXT NOT NULL DEFAULT '',
    password TEXT NOT NULL DEFAULT '',
    internal TEXT NOT NULL DEFAULT 'N',
    disabled_printing TEXT NOT NULL DEFAULT 'N',
    restricted TEXT NOT NULL DEFAULT 'N',
    deleted TEXT NOT NULL DEFAULT 'N',
    created_date TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS uq_tbl_user_user_name ON tbl_user (user_name)
    WHERE deleted = 'N';

CREATE TABLE IF NOT EXISTS tbl_account (
    account_id INTEGER PRIMARY KEY,
    account_type TEXT NOT NULL CHECK (account_type IN ('USER', 'SHARED')),
    account_name TEXT NOT NULL,
    personal_name TEXT NOT NULL DEFAULT '',
    user_id INTEGER REFERENCES tbl_user (user_id),
    parent_id INTEGER REFERENCES tbl_account (account_id),
    balance TEXT NOT NULL DEFAULT '0',
    deleted TEXT NOT NULL DEFAULT 'N',
    created_date TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS uq_tbl_account_shared ON tbl_account (account_name COLLATE NOCASE)
    WHERE account_type = 'SHARED' AND deleted = 'N';
CREATE INDEX IF NOT EXISTS ix_tbl_account_user_id ON tbl_account (user_id);

CREATE TABLE IF NOT EXISTS tbl_account_transaction (
    account_transaction_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES tbl_account (account_id),
    transaction_date TEXT NOT NULL,
    amount TEXT NOT NULL,
    balance_after TEXT NOT NULL,
    transacted_by TEXT NOT NULL,
    transaction_type TEXT NOT NULL,
    txn_comment TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS ix_tbl_account_transaction_account_id
    ON tbl_account_transaction (account_id);

CREATE TABLE IF NOT EXISTS tbl_user_group (
    group_id INTEGER PRIMARY KEY,
    group_name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_date TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tbl_user_group_member (
    group_id INTEGER NOT NULL REFERENCES tbl_user_group (group_id),
    user_id INTEGER NOT NULL REFERENCES tbl_user (user_id),
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE IF NOT EXISTS tbl_printer (
    printer_id INTEGER PRIMARY KEY,
    server_name TEXT NOT NULL,
    printer_name TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    cost_model TEXT NOT NULL DEFAULT 'SIMPLE',
    default_cost TEXT NOT NULL DEFAULT '0',
    color_cost TEXT NOT NULL DEFAULT '',
    unauthenticated TEXT NOT NULL DEFAULT 'N',
    hold_release TEXT NOT NULL DEFAULT 'N',
    disabled TEXT NOT NULL DEFAULT 'N',
    charge_account_id INTEGER REFERENCES tbl_account (account_id),
    deleted TEXT NOT NULL DEFAULT 'N',
    created_date TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS uq_tbl_printer_server_name_printer_name
    ON tbl_printer (server_name, printer_name) WHERE deleted = 'N';

CREATE TABLE IF NOT EXISTS tbl_printer_attribute (
    printer_id INTEGER NOT NULL REFERENCES tbl_printer (printer_id),
    attrib_name TEXT NOT NULL,
    attrib_value TEXT NOT NULL,
    PRIMARY KEY (printer_id, attrib_name)
);

CREATE TABLE IF NOT EXISTS tbl_printer_usage_log (
    printer_usage_log_id INTEGER PRIMARY KEY,
    usage_date TEXT NOT NULL,
    used_by_user_id INTEGER NOT NULL REFERENCES tbl_user (user_id),
    charged_to_account_id INTEGER NOT NULL REFERENCES tbl_account (account_id),
    assoc_with_account_id INTEGER REFERENCES tbl_account (account_id),
    printer_id INTEGER NOT NULL REFERENCES tbl_printer (printer_id),
    document_name TEXT NOT NULL,
    total_pages INTEGER NOT NULL,
    total_color_pages INTEGER NOT NULL DEFAULT 0,
    copies INTEGER NOT NULL DEFAULT 1,
    duplex TEXT NOT NULL DEFAULT 'N',
    usage_cost TEXT NOT NULL DEFAULT '0',
    usage_allowed TEXT NOT NULL DEFAULT 'Y',
    printed TEXT NOT NULL DEFAULT 'N',
    cancelled TEXT NOT NULL DEFAULT 'N',
    refunded TEXT NOT NULL DEFAULT 'N',
    denied_reason TEXT NOT NULL DEFAULT '',
    job_type TEXT NOT NULL DEFAULT 'PRINT',
    cups_job_id INTEGER
);
CREATE INDEX IF NOT EXISTS ix_tbl_printer_usage_log_document_name
    ON tbl_printer_usage_log (document_name);
-- The simulator's own settings (not PaperCut's): read by its CUPS backend too.
CREATE TABLE IF NOT EXISTS sim_setting (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

TRANSACTED_BY = "[web services]"


class SimFault(Exception):
    """What the simulated server answers with an XML-RPC fault."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def now_text() -> str:
    """Now, as the tables store a time: ISO 8601 UTC."""
    return dt.datetime.now(dt.UTC).isoformat(sep=" ")


def yn(flag: bool) -> str:
    return "Y" if flag else "N"


class SimStore:
    """The connection (WAL, a busy timeout), its transactions and the lookups."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _one(self, sql: str, params: Sequence[object] = ()) -> tuple[object, ...] | None:
        row: tuple[object, ...] | None = self._conn.execute(sql, params).fetchone()
        return row

    def _column(self, sql: str, params: Sequence[object] = ()) -> list[str]:
        return [str(r[0]) for r in self._conn.execute(sql, params).fetchall()]

    # --- lookups (raise SimFault, as the server answers) ----------------------------

    def _id(self, sql: str, params: Sequence[object], missing: str) -> int:
        """The id ``sql`` selects; ``SimFault(missing)`` when it selects none."""
        row = self._one(sql, params)
        if row is None:
            raise SimFault(missing)
        return int(str(row[0]))

    def _user_id(self, user: str) -> int:
        return self._id(
            "SELECT user_id FROM tbl_user WHERE user_name = ? AND deleted = 'N'",
            (user.lower(),),
            f"User does not exist: {user.lower()}",
        )

    def _personal_account(self, user_id: int, personal_name: str) -> int:
        return self._id(
            "SELECT account_id FROM tbl_account WHERE account_type = 'USER' AND user_id = ?"
            " AND personal_name = ? COLLATE NOCASE AND deleted = 'N'",
            (user_id, personal_name),
            f"Personal account does not exist: {personal_name!r}",
        )

    def _shared_account(self, name: str) -> int:
        return self._id(
            "SELECT account_id FROM tbl_account WHERE account_type = 'SHARED'"
            " AND account_name = ? COLLATE NOCASE AND deleted = 'N'",
            (name,),
            f"Shared account does not exist: {name}",
        )

    def _group_id(self, group: str) -> int:
        return self._id(
            "SELECT group_id FROM tbl_user_group WHERE group_name = ?",
            (group,),
            f"Group does not exist: {group}",
        )

    def _printer_id(self, server: str, printer: str) -> int:
        return self._id(
            "SELECT printer_id FROM tbl_printer WHERE server_name = ? AND printer_name = ?"
            " AND deleted = 'N'",
            (server, printer),
            f"Printer does not exist: {server}\\{printer}",
        )

    def _balance_of(self, account_id: int) -> Decimal:
        row = self._one("SELECT balance FROM tbl_account WHERE account_id = ?", (account_id,))
        assert row is not None
        return Decimal(str(row[0]))

    def _user_balance(self, user: str, account_name: str) -> Decimal:
        """The named personal account's balance, or with "" the total of all of them."""
        user_id = self._user_id(user)
        if account_name:
            return self._balance_of(self._personal_account(user_id, account_name))
        rows = self._column(
            "SELECT balance FROM tbl_account WHERE account_type = 'USER' AND user_id = ?"
            " AND deleted = 'N'",
            (user_id,),
        )
        return sum((Decimal(r) for r in rows), Decimal(0))

    def _adjust(
        self, conn: sqlite3.Connection, account_id: int, amount: Decimal, comment: str, kind: str
    ) -> Decimal:
        balance = self._balance_of(account_id) + amount
        conn.execute(
            "UPDATE tbl_account SET balance = ? WHERE account_id = ?", (str(balance), account_id)
        )
        conn.execute(
            "INSERT INTO tbl_account_transaction (account_id, transaction_date, amount,"
            " balance_after, transacted_by, transaction_type, txn_comment)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (account_id, now_text(), str(amount), str(balance), TRANSACTED_BY, kind, comment),
        )
        return balance
