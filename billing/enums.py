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


class StatusReason(StrEnum):
    """Why a print-out has its status (``print_outs.status_reason``): public values.

    Every reason the code writes or compares comes from here (a test greps for
    literals). Two more kinds of reason come from outside and are stored as
    they arrive: the IPP ``job-state-reasons`` a target reports (the tracker)
    and ``denied:<PaperCut's denied_reason>`` (see ``denied``).
    """

    # held, waiting for someone
    HOLD = "hold"  # hold mode: waits for a tap or a web release
    TICKET = "ticket"  # job ticket: waits for an operator
    DELEGATION_INVALID = "delegation-invalid"
    USER_UNKNOWN = "user-unknown"  # the delegate is no known, active user
    DELEGATION_FORBIDDEN = "delegation-forbidden"  # the delegate may not charge whom she named
    TITLE_INVALID = "title-invalid"
    FORMAT_UNSUPPORTED = "format-unsupported"  # no conversion to what the printer takes
    CONVERSION_FAILED = "conversion-failed"  # the converter failed or ran out of time
    AWAITING_TAP = "awaiting-tap"  # a direct printer with --require-tap: its owner taps
    # a restricted account would go below its credit limit (a deposit, then release)
    INSUFFICIENT_BALANCE = "insufficient-balance"
    # released
    WEB_RELEASE = "web-release"
    NFC_TAP = "nfc-tap"
    TICKET_RELEASED = "ticket-released"
    # a held job's delegation fixed (re-checked, or replaced by an admin)
    RECHECKED = "rechecked"
    DELEGATION_REPLACED = "delegation-replaced"
    # ended
    PRINTED = "printed"  # PaperCut logged it printed
    EXPIRED = "expired"  # a hold never released (here or in PaperCut)
    NOT_AUTHENTICATED = "not-authenticated"  # nobody tapped within the tap window
    CANCELED_WHILE_HELD = "canceled-while-held"
    TICKET_CANCELED = "ticket-canceled"
    CANCELED_IN_CUPS = "canceled-in-cups"
    CANCELED_IN_PAPERCUT = "canceled-in-papercut"
    TARGET_REJECTED = "target-rejected"
    LOST_AT_TARGET = "lost-at-target"  # the printer no longer knows the job
    CANCELED_BY_USER = "canceled-by-user"
    # moved to another proxy printer (POST /jobs/{id}/redirect)
    REDIRECTED = "redirected"
    # events of a CUPS restart of an ended job
    REPRINT = "reprint"
    REPRINTED = "reprinted"
    # flagged for an admin, status unchanged
    NOT_IN_PRINT_LOG = "not-in-print-log"
    # events of a dispatch: what was converted or dropped, and a count that differs
    CONVERTED = "converted"
    OPTION_DROPPED = "option-dropped"
    COUNT_DIFFERS = "count-differs"
    # prefix of ``denied:<reason>``
    DENIED = "denied"

    @classmethod
    def denied(cls, why: str) -> str:
        """``denied:<why>`` (lower-cased, fits the 64-character column)."""
        return f"{cls.DENIED.value}:{why.lower()}"[:64]

    @classmethod
    def held_for(cls, mode: PrinterMode) -> StatusReason:
        """The reason a job of a hold or ticket printer waits with."""
        return cls.TICKET if mode is PrinterMode.TICKET else cls.HOLD


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


class ReversalState(StrEnum):
    """How much of a print-out (or of one transaction) was given back by reversals."""

    NONE = "none"
    PARTIAL = "partial"  # a print-out some of whose transactions were reversed
    FULL = "full"

    @classmethod
    def of(cls, reversed_count: int, count: int) -> ReversalState:
        """Of a print-out whose ``reversed_count`` of ``count`` transactions were reversed."""
        if reversed_count == 0:
            return cls.NONE
        return cls.FULL if reversed_count >= count else cls.PARTIAL


class OutboxStatus(IntEnum):
    PENDING = 0
    DONE = 1
    FAILED = 2  # gave up permanently; an admin looks


class Provisioning(StrEnum):
    """How the OfficeRnD sync gets its users into PaperCut (``[papercut] provisioning``)."""

    USER_SOURCE = "user-source"  # PaperCut's directory is `papercut user-source`: it imports them
    INTERNAL = "internal"  # the sync creates PaperCut internal users (addNewInternalUser)


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
