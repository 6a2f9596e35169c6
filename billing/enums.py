"""Enumerations stored in the database (as integers or short strings)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class PrintStatus(IntEnum):
    """Status of a print-out and of each of its transactions.

    Values mirror IPP ``job-state`` where one exists (RFC 8011 §5.3.7);
    ``PENDING_EXTERNAL`` is a job handed to PaperCut whose outcome we wait for.
    """

    PENDING = 3
    HELD = 4  # IPP pending-held: hold mode, job tickets, invalid delegation
    PROCESSING = 5
    STOPPED = 6  # IPP processing-stopped
    CANCELED = 7
    ABORTED = 8
    COMPLETED = 9
    PENDING_EXTERNAL = 20

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @classmethod
    def from_label(cls, label: str) -> PrintStatus:
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"unknown status {label!r}") from None


FINAL_STATUSES = frozenset({PrintStatus.CANCELED, PrintStatus.ABORTED, PrintStatus.COMPLETED})


class PrinterMode(StrEnum):
    DIRECT = "direct"
    HOLD = "hold"
    TICKET = "ticket"


class AccountType(StrEnum):
    USER = "user"
    GROUP = "group"
    SHARED = "shared"


class LedgerKind(StrEnum):
    CHARGE = "charge"
    REVERSAL = "reversal"
    ADJUSTMENT = "adjustment"
    TOPUP = "topup"
    FEE = "fee"


class OutboxStatus(IntEnum):
    PENDING = 0
    DONE = 1
    FAILED = 2  # gave up permanently; an admin looks


class Role(StrEnum):
    ADMIN = "admin"
    ACCOUNTS_EDITOR = "accounts-editor"
    TICKET_OPERATOR = "ticket-operator"
    READER = "reader"
    USER = "user"


class CardFormat(StrEnum):
    HEX = "hex"
    DEC = "dec"


class ByteOrder(StrEnum):
    LSB = "lsb"
    MSB = "msb"
