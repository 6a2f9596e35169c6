"""The PaperCut simulator's Web Services methods, as data operations on its tables.

``SimMethods`` has one method per XML-RPC method the simulator answers
(``api.isUserExists`` is ``is_user_exists``...), with PaperCut's argument
order after the auth token and PaperCut's rules: user names lower-cased,
adjustments unconditional, each one a ``tbl_account_transaction`` row. An
error is a ``SimFault``, which the server answers as an XML-RPC fault
(``proxy.devkit.papercut.simrpc``).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from billing.papercut.checks import CHARGE_ACCOUNT_PROPERTY
from proxy.devkit.papercut.simbackend import ensure_user
from proxy.devkit.papercut.simdirectory import SimDirectory
from proxy.devkit.papercut.simstore import SimFault, now_text, yn

__all__ = ["CHARGE_ACCOUNT_PROPERTY", "COST_MODELS", "CUSTOM_FIELDS", "SimMethods"]

# The shared account a printer charges every job to ("" = the printing user's
# personal account, PaperCut's default): the simulator's model of that printer
# setting, read and set as a printer property (billing.papercut.checks).
# (the name is billing.papercut.checks'; one definition)

COST_MODELS = frozenset(
    {"SIMPLE", "AREA", "SIZE_TABLE", "SIZE_CATEGORY", "SIZE_DETAILED", "SIZE_LENGTH"}
)
CUSTOM_FIELDS = frozenset(f"custom-field-{n}" for n in range(1, 7))

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
_PRINT_STATS = ("print-stats.job-count", "print-stats.page-count")


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


class SimMethods(SimDirectory):
    """The Web Services methods; every write is one transaction (groups and the
    directory sync: ``simdirectory``)."""

    def _print_stats(self, column: str, key: int, prop: str) -> str:
        """A ``print-stats.*`` property: the printed jobs (pages) whose ``column`` is ``key``."""
        row = self._one(
            "SELECT COUNT(*), COALESCE(SUM(total_pages), 0) FROM tbl_printer_usage_log"
            f" WHERE {column} = ? AND printed = 'Y'",
            (key,),
        )
        assert row is not None
        return str(row[0] if prop.endswith("job-count") else row[1])

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
        return float(self._user_balance(user, account_name))

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
        if prop in _PRINT_STATS:
            return self._print_stats("used_by_user_id", user_id, prop)
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
            column, stored = _USER_FLAG_PROPS[prop], yn(_flag(value, prop))
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
        now = now_text()
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
        return self._membership(
            user,
            group,
            "INSERT OR IGNORE INTO tbl_user_group_member (group_id, user_id) VALUES (?, ?)",
        )

    def remove_user_from_group(self, user: str, group: str) -> bool:
        return self._membership(
            user, group, "DELETE FROM tbl_user_group_member WHERE group_id = ? AND user_id = ?"
        )

    def _membership(self, user: str, group: str, sql: str) -> bool:
        """Run ``sql`` with (group_id, user_id); both must exist."""
        user_id, group_id = self._user_id(user), self._group_id(group)
        with self._tx() as conn:
            conn.execute(sql, (group_id, user_id))
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
            (name, parent_id, now_text()),
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
        if prop == CHARGE_ACCOUNT_PROPERTY:
            charged = self._one(
                "SELECT a.account_name FROM tbl_printer p JOIN tbl_account a"
                " ON a.account_id = p.charge_account_id WHERE p.printer_id = ?",
                (printer_id,),
            )
            return "" if charged is None else str(charged[0])
        if prop in CUSTOM_FIELDS:
            attr = self._one(
                "SELECT attrib_value FROM tbl_printer_attribute"
                " WHERE printer_id = ? AND attrib_name = ?",
                (printer_id, prop),
            )
            return "" if attr is None else str(attr[0])
        if prop in _PRINT_STATS:
            return self._print_stats("printer_id", printer_id, prop)
        raise SimFault(f"Invalid printer property: {prop}")

    def set_printer_property(self, server: str, printer: str, prop: str, value: str) -> bool:
        """Settable as documented: cost-model, custom-field-1..6, disabled; and the
        simulator's ``charge-to-shared-account`` (a shared account's name, or "")."""
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
                    (yn(_flag(value, prop)), printer_id),
                )
            elif prop == CHARGE_ACCOUNT_PROPERTY:
                charge_id = self._shared_account(value) if value else None
                conn.execute(
                    "UPDATE tbl_printer SET charge_account_id = ? WHERE printer_id = ?",
                    (charge_id, printer_id),
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
