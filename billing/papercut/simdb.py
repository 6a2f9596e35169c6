"""The PaperCut simulator's state: PaperCut-like tables in one SQLite file.

Standard library only (``sqlite3``), shared by the XML-RPC server
(``billing.papercut.simulator``), the tests, and, for the print log, by the
CUPS backend (``billing.papercut.simbackend``), which runs in its own process:
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
  ``tbl_printer`` (cost, ``unauthenticated``, ``hold_release``...) and
  ``tbl_printer_attribute`` (custom fields).

Amounts are exact decimal strings (TEXT) and times ISO 8601 UTC strings:
SQLite has neither a decimal nor a time type. Differences from PaperCut's own
schema are the simulator's design (``tbl_account.user_id`` instead of a
link table, fewer columns); the column names proxyprint reads are PaperCut's.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from billing.papercut.simbackend import DEFAULT_SERVER, ensure_user, record_usage

__all__ = [
    "COST_MODELS",
    "SCHEMA",
    "Adjustment",
    "SimDatabase",
    "SimFault",
    "SimNotFound",
    "UsageRow",
]

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
"""

COST_MODELS = frozenset(
    {"SIMPLE", "AREA", "SIZE_TABLE", "SIZE_CATEGORY", "SIZE_DETAILED", "SIZE_LENGTH"}
)
CUSTOM_FIELDS = frozenset(f"custom-field-{n}" for n in range(1, 7))
TRANSACTED_BY = "[web services]"
TIMEOUT_REASON = "TIMEOUT"

_USER_TEXT_PROPS = {
    "full-name": "full_name",
    "email": "email",
    "department": "department",
    "office": "office",
    "notes": "notes",
    "primary-card-number": "card_number",
    "secondary-card-number": "card_number2",
}
_USER_FLAG_PROPS = {
    "disabled-print": "disabled_printing",
    "restricted": "restricted",
}
_USER_WRITE_ONLY = {"card-pin": "card_pin", "password": "password"}


class SimFault(Exception):
    """What the simulated server answers with an XML-RPC fault."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(sep=" ")


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


def _flag(value: str, prop: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise SimFault(f"Invalid value for {prop}: {value!r} (expected true or false)")
    return lowered == "true"


def _decimal(value: object, field: str) -> Decimal:
    """An XML-RPC double (or our own Decimal/str) as the exact decimal it was written as."""
    if isinstance(value, bool):
        raise SimFault(f"{field}: expected a number")
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except ArithmeticError:
            raise SimFault(f"{field}: {value!r} is not a number") from None
    raise SimFault(f"{field}: expected a number")


def papercut_account_name(name: str) -> str:
    """``Parent/Sub`` (proxyprint) or ``Parent\\Sub`` (PaperCut) as PaperCut writes it."""
    return name if "\\" in name else name.replace("/", "\\", 1)


class SimDatabase:
    """The simulator's tables; every method is one short transaction."""

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

    def _user_id(self, user: str) -> int:
        row = self._one(
            "SELECT user_id FROM tbl_user WHERE user_name = ? AND deleted = 'N'", (user.lower(),)
        )
        if row is None:
            raise SimFault(f"User does not exist: {user.lower()}")
        return int(str(row[0]))

    def _personal_account(self, user_id: int, personal_name: str) -> int:
        row = self._one(
            "SELECT account_id FROM tbl_account WHERE account_type = 'USER' AND user_id = ?"
            " AND personal_name = ? COLLATE NOCASE AND deleted = 'N'",
            (user_id, personal_name),
        )
        if row is None:
            raise SimFault(f"Personal account does not exist: {personal_name!r}")
        return int(str(row[0]))

    def _shared_account(self, name: str) -> int:
        row = self._one(
            "SELECT account_id FROM tbl_account WHERE account_type = 'SHARED'"
            " AND account_name = ? COLLATE NOCASE AND deleted = 'N'",
            (name,),
        )
        if row is None:
            raise SimFault(f"Shared account does not exist: {name}")
        return int(str(row[0]))

    def _group_id(self, group: str) -> int:
        row = self._one("SELECT group_id FROM tbl_user_group WHERE group_name = ?", (group,))
        if row is None:
            raise SimFault(f"Group does not exist: {group}")
        return int(str(row[0]))

    def _printer_id(self, server: str, printer: str) -> int:
        row = self._one(
            "SELECT printer_id FROM tbl_printer WHERE server_name = ? AND printer_name = ?"
            " AND deleted = 'N'",
            (server, printer),
        )
        if row is None:
            raise SimFault(f"Printer does not exist: {server}\\{printer}")
        return int(str(row[0]))

    def _balance_of(self, account_id: int) -> Decimal:
        row = self._one("SELECT balance FROM tbl_account WHERE account_id = ?", (account_id,))
        assert row is not None
        return Decimal(str(row[0]))

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
            (account_id, _now(), str(amount), str(balance), TRANSACTED_BY, kind, comment),
        )
        return balance

    # --- the API: users and accounts ------------------------------------------------

    def is_user_exists(self, user: str) -> bool:
        return (
            self._one(
                "SELECT 1 FROM tbl_user WHERE user_name = ? AND deleted = 'N'", (user.lower(),)
            )
            is not None
        )

    def get_user_account_balance(self, user: str, account_name: str = "") -> float:
        """The named personal account, or with "" the total of all personal accounts."""
        user_id = self._user_id(user)
        if account_name:
            return float(self._balance_of(self._personal_account(user_id, account_name)))
        rows = self._column(
            "SELECT balance FROM tbl_account WHERE account_type = 'USER' AND user_id = ?"
            " AND deleted = 'N'",
            (user_id,),
        )
        return float(sum((Decimal(r) for r in rows), Decimal(0)))

    def adjust_user_account_balance(
        self, user: str, amount: object, comment: str, account_name: str = ""
    ) -> bool:
        """Unconditional (no balance check); "" is the built-in account."""
        value = _decimal(amount, "adjustment")
        with self._tx() as conn:
            account_id = self._personal_account(self._user_id(user), account_name)
            self._adjust(conn, account_id, value, comment, "ADJUST")
        return True

    def get_user_property(self, user: str, prop: str) -> str:
        user_id = self._user_id(user)
        if prop == "balance":
            return f"{Decimal(repr(self.get_user_account_balance(user))):f}"
        if prop in _USER_TEXT_PROPS or prop in _USER_FLAG_PROPS or prop == "internal":
            column = _USER_TEXT_PROPS.get(prop) or _USER_FLAG_PROPS.get(prop) or prop
            row = self._one(f"SELECT {column} FROM tbl_user WHERE user_id = ?", (user_id,))
            assert row is not None
            value = str(row[0])
            if prop in _USER_TEXT_PROPS:
                return value
            return "true" if value == "Y" else "false"
        if prop in ("print-stats.job-count", "print-stats.page-count"):
            row = self._one(
                "SELECT COUNT(*), COALESCE(SUM(total_pages), 0) FROM tbl_printer_usage_log"
                " WHERE used_by_user_id = ? AND printed = 'Y'",
                (user_id,),
            )
            assert row is not None
            return str(row[0] if prop.endswith("job-count") else row[1])
        if prop in ("unauthenticated", "username-alias"):
            return "false" if prop == "unauthenticated" else ""
        raise SimFault(f"Invalid user property: {prop}")

    def get_user_properties(self, user: str, props: list[object]) -> list[str]:
        return [self.get_user_property(user, str(p)) for p in props]

    def set_user_property(self, user: str, prop: str, value: str) -> bool:
        user_id = self._user_id(user)
        with self._tx() as conn:
            self._set_user_property(conn, user_id, prop, value)
        return True

    def set_user_properties(self, user: str, pairs: list[object]) -> bool:
        user_id = self._user_id(user)
        with self._tx() as conn:
            for pair in pairs:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise SimFault("setUserProperties expects [[name, value], ...]")
                self._set_user_property(conn, user_id, str(pair[0]), str(pair[1]))
        return True

    def _set_user_property(
        self, conn: sqlite3.Connection, user_id: int, prop: str, value: str
    ) -> None:
        if prop == "balance":
            account_id = self._personal_account(user_id, "")
            target = _decimal(value, "balance")
            delta = target - self._balance_of(account_id)
            self._adjust(conn, account_id, delta, "balance set", "ADJUST")
            return
        column = _USER_TEXT_PROPS.get(prop) or _USER_WRITE_ONLY.get(prop)
        stored = value
        if column is None and prop in _USER_FLAG_PROPS:
            column, stored = _USER_FLAG_PROPS[prop], _yn(_flag(value, prop))
        if column is None:
            raise SimFault(f"Invalid or read-only user property: {prop}")
        conn.execute(f"UPDATE tbl_user SET {column} = ? WHERE user_id = ?", (stored, user_id))

    def list_user_accounts(self, offset: int, limit: int) -> list[str]:
        return self._column(
            "SELECT user_name FROM tbl_user WHERE deleted = 'N' ORDER BY user_name"
            " LIMIT ? OFFSET ?",
            (limit, offset),
        )

    def add_new_internal_user(  # noqa: PLR0917 - PaperCut's positional arguments
        self,
        user: str,
        password: str,
        full_name: str = "",
        email: str = "",
        card_id: str = "",
        pin: str = "",
    ) -> bool:
        name = user.lower()
        if not name or self.is_user_exists(name):
            raise SimFault(f"User already exists: {name}" if name else "Invalid username")
        now = _now()
        with self._tx() as conn:
            user_id, _ = ensure_user(conn, name, now)
            conn.execute(
                "UPDATE tbl_user SET password = ?, full_name = ?, email = ?, card_number = ?,"
                " card_pin = ?, internal = 'Y' WHERE user_id = ?",
                (password, full_name, email, card_id, pin, user_id),
            )
        return True

    def delete_existing_user(self, user: str, redact_user_data: bool = False) -> bool:
        """Deleted users keep their history; group memberships go."""
        user_id = self._user_id(user)
        with self._tx() as conn:
            conn.execute("UPDATE tbl_user SET deleted = 'Y' WHERE user_id = ?", (user_id,))
            conn.execute("UPDATE tbl_account SET deleted = 'Y' WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM tbl_user_group_member WHERE user_id = ?", (user_id,))
            if redact_user_data:
                conn.execute(
                    "UPDATE tbl_user SET full_name = '', email = '', notes = '', card_number = '',"
                    " card_number2 = '', card_pin = '', password = '' WHERE user_id = ?",
                    (user_id,),
                )
        return True

    def look_up_user_name_by_card_no(self, card: str) -> str:
        if not card:
            return ""
        row = self._one(
            "SELECT user_name FROM tbl_user WHERE deleted = 'N'"
            " AND (card_number = ? OR card_number2 = ?) ORDER BY user_id LIMIT 1",
            (card, card),
        )
        return "" if row is None else str(row[0])

    # --- the API: groups --------------------------------------------------------------

    def is_group_exists(self, group: str) -> bool:
        return self._one("SELECT 1 FROM tbl_user_group WHERE group_name = ?", (group,)) is not None

    def add_new_group(self, group: str) -> bool:
        """Adding an existing group changes nothing."""
        if not group:
            raise SimFault("Invalid group name")
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO tbl_user_group (group_name, created_date) VALUES (?, ?)",
                (group, _now()),
            )
        return True

    def list_user_groups(self, offset: int, limit: int) -> list[str]:
        return self._column(
            "SELECT group_name FROM tbl_user_group ORDER BY group_name COLLATE NOCASE"
            " LIMIT ? OFFSET ?",
            (limit, offset),
        )

    def get_group_members(self, group: str, offset: int, limit: int) -> list[str]:
        group_id = self._group_id(group)
        return self._column(
            "SELECT u.user_name FROM tbl_user_group_member m JOIN tbl_user u USING (user_id)"
            " WHERE m.group_id = ? AND u.deleted = 'N' ORDER BY u.user_name LIMIT ? OFFSET ?",
            (group_id, limit, offset),
        )

    def get_user_groups(self, user: str) -> list[str]:
        user_id = self._user_id(user)
        return self._column(
            "SELECT g.group_name FROM tbl_user_group_member m JOIN tbl_user_group g"
            " USING (group_id) WHERE m.user_id = ? ORDER BY g.group_name COLLATE NOCASE",
            (user_id,),
        )

    def add_user_to_group(self, user: str, group: str) -> bool:
        user_id, group_id = self._user_id(user), self._group_id(group)
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO tbl_user_group_member (group_id, user_id) VALUES (?, ?)",
                (group_id, user_id),
            )
        return True

    def remove_user_from_group(self, user: str, group: str) -> bool:
        user_id, group_id = self._user_id(user), self._group_id(group)
        with self._tx() as conn:
            conn.execute(
                "DELETE FROM tbl_user_group_member WHERE group_id = ? AND user_id = ?",
                (group_id, user_id),
            )
        return True

    # --- the API: shared accounts -------------------------------------------------------

    def is_shared_account_exists(self, account: str) -> bool:
        try:
            self._shared_account(account)
        except SimFault:
            return False
        return True

    def add_new_shared_account(self, account: str) -> bool:
        """``parent\\sub`` creates the parent too when missing; an existing account is kept."""
        parent, sep, sub = account.partition("\\")
        if not parent or (sep and not sub) or "\\" in sub:
            raise SimFault(f"Invalid shared account name: {account!r}")
        with self._tx() as conn:
            parent_id = self._ensure_shared(conn, parent, None)
            if sep:
                self._ensure_shared(conn, account, parent_id)
        return True

    def _ensure_shared(self, conn: sqlite3.Connection, name: str, parent_id: int | None) -> int:
        try:
            return self._shared_account(name)
        except SimFault:
            pass
        row_id = conn.execute(
            "INSERT INTO tbl_account (account_type, account_name, parent_id, balance,"
            " created_date) VALUES ('SHARED', ?, ?, '0', ?)",
            (name, parent_id, _now()),
        ).lastrowid
        assert row_id is not None
        return row_id

    def adjust_shared_account_account_balance(
        self, account: str, amount: object, comment: str
    ) -> bool:
        value = _decimal(amount, "adjustment")
        with self._tx() as conn:
            self._adjust(conn, self._shared_account(account), value, comment, "ADJUST")
        return True

    # --- the API: printers --------------------------------------------------------------------

    def list_printers(self, offset: int, limit: int) -> list[str]:
        rows = self._conn.execute(
            "SELECT server_name, printer_name FROM tbl_printer WHERE deleted = 'N'"
            " ORDER BY printer_name COLLATE NOCASE, server_name LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        return [f"{server}\\{printer}" for server, printer in rows]

    def get_printer_property(self, server: str, printer: str, prop: str) -> str:
        """PaperCut's documented properties, plus the simulator's ``unauthenticated``
        and ``hold-release`` (read-only here, as in the real API, which has neither)."""
        printer_id = self._printer_id(server, printer)
        row = self._one(
            "SELECT cost_model, disabled, unauthenticated, hold_release FROM tbl_printer"
            " WHERE printer_id = ?",
            (printer_id,),
        )
        assert row is not None
        cost_model, disabled, unauthenticated, hold = (str(v) for v in row)
        simple = {
            "cost-model": cost_model,
            "disabled": "true" if disabled == "Y" else "false",
            "printer-id": str(printer_id),
            "unauthenticated": "true" if unauthenticated == "Y" else "false",
            "hold-release": "true" if hold == "Y" else "false",
        }
        if prop in simple:
            return simple[prop]
        if prop in CUSTOM_FIELDS:
            attr = self._one(
                "SELECT attrib_value FROM tbl_printer_attribute"
                " WHERE printer_id = ? AND attrib_name = ?",
                (printer_id, prop),
            )
            return "" if attr is None else str(attr[0])
        if prop in ("print-stats.job-count", "print-stats.page-count"):
            stats = self._one(
                "SELECT COUNT(*), COALESCE(SUM(total_pages), 0) FROM tbl_printer_usage_log"
                " WHERE printer_id = ? AND printed = 'Y'",
                (printer_id,),
            )
            assert stats is not None
            return str(stats[0] if prop.endswith("job-count") else stats[1])
        raise SimFault(f"Invalid printer property: {prop}")

    def set_printer_property(self, server: str, printer: str, prop: str, value: str) -> bool:
        """Settable as documented: cost-model, custom-field-1..6, disabled."""
        printer_id = self._printer_id(server, printer)
        with self._tx() as conn:
            if prop == "cost-model":
                if value.upper() not in COST_MODELS:
                    raise SimFault(f"Invalid cost model: {value}")
                conn.execute(
                    "UPDATE tbl_printer SET cost_model = ? WHERE printer_id = ?",
                    (value.upper(), printer_id),
                )
            elif prop == "disabled":
                conn.execute(
                    "UPDATE tbl_printer SET disabled = ? WHERE printer_id = ?",
                    (_yn(_flag(value, prop)), printer_id),
                )
            elif prop in CUSTOM_FIELDS:
                conn.execute(
                    "INSERT OR REPLACE INTO tbl_printer_attribute"
                    " (printer_id, attrib_name, attrib_value) VALUES (?, ?, ?)",
                    (printer_id, prop, value),
                )
            else:
                raise SimFault(f"Invalid or read-only printer property: {prop}")
        return True

    def get_printer_cost_simple(self, server: str, printer: str) -> float:
        printer_id = self._printer_id(server, printer)
        row = self._one(
            "SELECT cost_model, default_cost FROM tbl_printer WHERE printer_id = ?", (printer_id,)
        )
        assert row is not None
        if row[0] != "SIMPLE":
            raise SimFault(f"Printer {server}\\{printer} does not use the simple cost model")
        return float(Decimal(str(row[1])))

    def set_printer_cost_simple(self, server: str, printer: str, cost: object) -> bool:
        """Sets the page cost and the Simple cost model."""
        value = _decimal(cost, "cost")
        if value < 0:
            raise SimFault("The page cost must not be negative")
        printer_id = self._printer_id(server, printer)
        with self._tx() as conn:
            conn.execute(
                "UPDATE tbl_printer SET default_cost = ?, cost_model = 'SIMPLE'"
                " WHERE printer_id = ?",
                (str(value), printer_id),
            )
        return True

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
            user_id, account_id = ensure_user(conn, user, _now())
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
                (user.lower(), name, user_id, _now()),
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
        self.add_new_group(name)
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
    ) -> None:
        """A printer; cost 0 means "no cost set". Replaces one of the same name."""
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
                " created_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    server,
                    name,
                    name,
                    cost_model,
                    str(Decimal(cost_mono)),
                    "" if cost_color is None else str(Decimal(cost_color)),
                    _yn(unauthenticated),
                    _yn(hold_release),
                    _yn(disabled),
                    _now(),
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
                        (_yn(value), printer_id),
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
        user_id = self._user_id(user)
        if account_name:
            return self._balance_of(self._personal_account(user_id, account_name))
        rows = self._column(
            "SELECT balance FROM tbl_account WHERE account_type = 'USER' AND user_id = ?"
            " AND deleted = 'N'",
            (user_id,),
        )
        return sum((Decimal(r) for r in rows), Decimal(0))

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
            " l.denied_reason, l.job_type FROM tbl_printer_usage_log l"
            " JOIN tbl_user u ON u.user_id = l.used_by_user_id"
            " JOIN tbl_printer p ON p.printer_id = l.printer_id"
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

    def _decide(self, document_name: str, assignments: str, params: tuple[str, ...]) -> bool:
        row = self._latest(document_name)
        if not row.held:
            return False
        with self._tx() as conn:
            conn.execute(
                f"UPDATE tbl_printer_usage_log SET {assignments} WHERE printer_usage_log_id = ?",
                (*params, row.printer_usage_log_id),
            )
        return True

    def release(self, document_name: str) -> bool:
        """A held job printed: ``printed='Y'``. No account is charged (see simbackend)."""
        return self._decide(document_name, "printed = 'Y'", ())

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
        """A printed job refunded by an admin (``refunded='Y'``)."""
        row = self._latest(document_name)
        if not row.printed or row.refunded:
            return False
        with self._tx() as conn:
            conn.execute(
                "UPDATE tbl_printer_usage_log SET refunded = 'Y' WHERE printer_usage_log_id = ?",
                (row.printer_usage_log_id,),
            )
        return True
