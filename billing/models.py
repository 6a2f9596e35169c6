"""The whole data model. Schema changes go through Alembic (migrations/)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import Base, BigId, Money, UTCDateTime, utcnow
from .enums import AccountType, OutboxStatus, PrinterMode, PrintStatus

ZERO = Decimal(0)


def _id() -> Mapped[int]:
    return mapped_column(BigId, primary_key=True, autoincrement=True)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime, default=utcnow, nullable=False)


group_members = Table(
    "group_members",
    Base.metadata,
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_group_members_user_id", "user_id"),
)

# Access lists of group and shared accounts (SPEC §3 "Rights to charge"): who
# may charge an account whose ``access_restricted`` is set; users by name, or
# every member of a group.
account_access_users = Table(
    "account_access_users",
    Base.metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)

account_access_groups = Table(
    "account_access_groups",
    Base.metadata,
    Column("account_id", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

reader_printers = Table(
    "reader_printers",
    Base.metadata,
    Column("reader_id", ForeignKey("readers.id", ondelete="CASCADE"), primary_key=True),
    Column("printer_id", ForeignKey("printers.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    full_name: Mapped[str | None] = mapped_column(String(255))
    # OfficeRnD member id when the user is synced from there.
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The ``delegate`` right: may charge others than herself (also from a group).
    can_delegate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = _created()
    # The web app (proxy/web/): a local password (scrypt, see proxy/web/passwords.py;
    # None = no local sign-in) and the API role the user's web sessions carry.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    web_role: Mapped[str] = mapped_column(String(32), default="user", server_default="user")
    # Soft delete: the row and its history stay; the name stops working.
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    groups: Mapped[list[Group]] = relationship(
        secondary=group_members, back_populates="members", lazy="raise"
    )


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(255), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Every member has the ``delegate`` right.
    can_delegate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = _created()
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    members: Mapped[list[User]] = relationship(
        secondary=group_members, back_populates="groups", lazy="raise"
    )


class Account(Base):
    """A ledger account: one per user, one per group, and shared accounts.

    Shared accounts may have one level of sub-accounts (``parent/sub``, PaperCut
    writes ``parent\\sub``); ``path`` is the unique, human name.
    """

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("type", "path"),
        CheckConstraint("type IN ('user', 'group', 'shared')", name="type"),
    )

    id: Mapped[int] = _id()
    type: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(511))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id"), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Group and shared accounts: False = open (anyone with the delegate right may
    # charge it); True = only those on its access list (account_access_*).
    access_restricted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = _created()
    # How far below zero the balance may go (10.00: down to -10.00); None: unlimited.
    credit_limit: Mapped[Decimal | None] = mapped_column(Money)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def account_type(self) -> AccountType:
        return AccountType(self.type)


class Printer(Base):
    """A proxy printer: a CUPS queue with device ``proxyprint:…`` and our settings."""

    __tablename__ = "printers"
    __table_args__ = (
        CheckConstraint("mode IN ('direct', 'hold', 'ticket')", name="mode"),
        CheckConstraint("hold_expiry_mins > 0", name="hold_expiry_positive"),
    )

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(127), unique=True)
    mode: Mapped[str] = mapped_column(String(8), default=PrinterMode.DIRECT.value)
    target: Mapped[str] = mapped_column(String(1023))
    cost_mono: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    cost_color: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    duplex_discount: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    # {"a3": {"mono": "0.20", "color": "1.00"}}: amounts as decimal strings.
    media_costs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Per-ticket extras for job tickets: [{"name": "binding", "amount": "1.50"}].
    ticket_extras: Mapped[list[Any]] = mapped_column(JSON, default=list)
    papercut: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_expiry_mins: Mapped[int] = mapped_column(Integer, default=60)
    # Authenticated direct print: a job waits for its owner's tap at one of the
    # printer's readers for tap_window_secs, then is canceled ``not-authenticated``.
    require_tap: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    tap_window_secs: Mapped[int] = mapped_column(Integer, default=60, server_default="60")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def printer_mode(self) -> PrinterMode:
        return PrinterMode(self.mode)


class PrintIn(Base):
    """The job as received from the CUPS backend."""

    __tablename__ = "print_ins"

    id: Mapped[int] = _id()
    job_uuid: Mapped[str | None] = mapped_column(String(64), unique=True)
    # A job without a job-uuid (a non-CUPS sender): sha256 of (sender, printer, job id,
    # time-at-creation), so the same request twice is recorded once (intake.origin_key).
    origin_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    cups_job_id: Mapped[int | None] = mapped_column(Integer)
    printer_id: Mapped[int] = mapped_column(ForeignKey("printers.id"))
    delegate: Mapped[str] = mapped_column(String(255))
    delegate_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(1023))
    options: Mapped[str] = mapped_column(Text, default="")
    content_type: Mapped[str | None] = mapped_column(String(255))
    origin_host: Mapped[str | None] = mapped_column(String(255))
    copies_requested: Mapped[int] = mapped_column(Integer, default=1)
    spool_path: Mapped[str | None] = mapped_column(String(1023))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    pages: Mapped[int] = mapped_column(Integer)
    pages_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    # How ``pages`` was counted (proxy.pages.METHODS); None: recorded before it was kept.
    count_method: Mapped[str | None] = mapped_column(String(32))
    # Pages that carry colour, when measured (Ghostscript); None: not measured.
    color_pages: Mapped[int | None] = mapped_column(Integer)
    # Copies the document itself sets (PostScript NumCopies / #copies): charged
    # on top of the print-out's copies (charging.job_spec).
    document_copies: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    color: Mapped[bool] = mapped_column(Boolean, default=False)
    duplex: Mapped[bool] = mapped_column(Boolean, default=False)
    media: Mapped[str | None] = mapped_column(String(127))
    created_at: Mapped[dt.datetime] = _created()
    spool_removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class PrintOut(Base):
    """The job as sent (or to be sent) to a target; owns the transactions."""

    __tablename__ = "print_outs"
    __table_args__ = (
        Index("ix_print_outs_created", "created_at", "id"),
        Index("ix_print_outs_delegate_created", "delegate", "created_at", "id"),
        Index("ix_print_outs_printer_created", "printer_id", "created_at", "id"),
        Index("ix_print_outs_status_created", "status", "created_at", "id"),
        # History filtered on two of them (a user's held jobs, a printer's
        # failed ones): walked in order, not filtered out of a one-column walk.
        Index("ix_print_outs_delegate_status_created", "delegate", "status", "created_at", "id"),
        Index("ix_print_outs_printer_status_created", "printer_id", "status", "created_at", "id"),
        Index("ix_print_outs_work", "status", "next_action_at"),
        Index("ix_print_outs_print_in_id", "print_in_id"),
        # A user's held jobs or job tickets in queue order (My jobs, GET /jobs/held?user=).
        Index("ix_print_outs_delegate_held", "delegate", "status", "mode", "id"),
    )

    id: Mapped[int] = _id()
    print_in_id: Mapped[int] = mapped_column(ForeignKey("print_ins.id"))
    printer_id: Mapped[int] = mapped_column(ForeignKey("printers.id"))
    mode: Mapped[str] = mapped_column(String(8))
    target: Mapped[str] = mapped_column(String(1023))
    papercut: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[int] = mapped_column(Integer, default=int(PrintStatus.PENDING))
    status_reason: Mapped[str | None] = mapped_column(String(64))
    status_message: Mapped[str | None] = mapped_column(Text)
    delegate: Mapped[str] = mapped_column(String(255))
    delegate_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(1023))
    pages: Mapped[int] = mapped_column(Integer)
    copies: Mapped[int] = mapped_column(Integer)
    # job-impressions-completed as the printer reported it (None: not reported)
    printer_impressions: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[Decimal | None] = mapped_column(Money)
    cost_detail: Mapped[list[Any] | None] = mapped_column(JSON)
    # The printer's prices when the job arrived (charging.rules_json); None: its current ones.
    cost_rules: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    currency: Mapped[str] = mapped_column(String(3))
    ticket_number: Mapped[str | None] = mapped_column(String(32), unique=True)
    ticket_cost: Mapped[Decimal | None] = mapped_column(Money)
    # PaperCut: the unique document name we look up in its print log.
    document_name: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Where the job went: the target's job id / job URI.
    target_job_id: Mapped[int | None] = mapped_column(Integer)
    target_job_uri: Mapped[str | None] = mapped_column(String(1023))
    # Set before a Print-Job leaves; while set and not dispatched, a job may
    # exist at the target: the next attempt looks it up by this uuid first.
    dispatch_uuid: Mapped[str | None] = mapped_column(String(36))
    # A CUPS restart of an ended job: the print-out this one prints again.
    reprint_of: Mapped[int | None] = mapped_column(ForeignKey("print_outs.id"))
    # Since when the target has not reported this job (as ours); None: it does.
    target_missing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = _created()
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    charged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reversed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    hold_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Background work: when a worker should next look at this row, and who holds it.
    next_action_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    transactions: Mapped[list[AccountTransaction]] = relationship(
        back_populates="print_out", lazy="raise", order_by="AccountTransaction.id"
    )

    @property
    def print_status(self) -> PrintStatus:
        return PrintStatus(self.status)


class AccountTransaction(Base):
    """One account's share of one print-out; shares its status with it."""

    __tablename__ = "account_transactions"
    __table_args__ = (
        UniqueConstraint("print_out_id", "account_id"),
        Index("ix_account_transactions_account", "account_id", "id"),
        # History filtered on a small account: its print-outs from the index alone.
        Index("ix_account_transactions_account_print_out", "account_id", "print_out_id"),
        CheckConstraint("weight > 0", name="weight_positive"),
    )

    id: Mapped[int] = _id()
    print_out_id: Mapped[int] = mapped_column(ForeignKey("print_outs.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    weight: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money, default=ZERO)
    status: Mapped[int] = mapped_column(Integer, default=int(PrintStatus.PENDING))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = _created()
    # The estimated share held against a restricted account's credit limit while
    # the print-out is on its way (billing.credit); None: nothing reserved.
    reserved: Mapped[Decimal | None] = mapped_column(Money)

    print_out: Mapped[PrintOut] = relationship(back_populates="transactions", lazy="raise")
    account: Mapped[Account] = relationship(lazy="raise")


class LedgerEntry(Base):
    """Append-only: balances are sums of these; corrections are new rows."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_account", "account_id", "id"),
        # Balances and page counters are sums over an account: read from this alone.
        Index("ix_ledger_entries_account_sums", "account_id", "amount", "pages"),
        Index("ix_ledger_entries_print_out_id", "print_out_id"),
        # The usage report's window (billing.usage: since/until on created_at).
        Index("ix_ledger_entries_created", "created_at"),
        CheckConstraint(
            "kind IN ('charge', 'reversal', 'adjustment', 'topup', 'fee')", name="kind"
        ),
    )

    id: Mapped[int] = _id()
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    # Signed: a charge is negative (it lowers the balance), a reversal positive.
    amount: Mapped[Decimal] = mapped_column(Money)
    kind: Mapped[str] = mapped_column(String(16))
    # Page counter delta: pages × copies share of a charge, negated on reversal.
    pages: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    print_out_id: Mapped[int | None] = mapped_column(ForeignKey("print_outs.id"))
    transaction_id: Mapped[int | None] = mapped_column(ForeignKey("account_transactions.id"))
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    actor: Mapped[str] = mapped_column(String(255), default="system")
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class AccountBalance(Base):
    """An account's running totals: the sums of its ledger entries, kept in the
    same transaction as each entry (``billing.ledger`` is their only writer), so
    a balance is one row however long the account's ledger. No row = nothing
    posted yet (0)."""

    __tablename__ = "account_balances"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id"), primary_key=True, autoincrement=False
    )
    balance: Mapped[Decimal] = mapped_column(Money, nullable=False)
    pages: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Event(Base):
    """Every status change and notable action, with time, actor and reason."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_subject", "subject_type", "subject_id", "id"),)

    id: Mapped[int] = _id()
    at: Mapped[dt.datetime] = _created()
    actor: Mapped[str] = mapped_column(String(255))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Card(Base):
    """A user's NFC card. Deleting one is soft (``deleted_at``): the row and its owner stay
    for the history; only a live card is unique by number, so the same card may be
    registered again afterwards (to anyone)."""

    __tablename__ = "cards"
    __table_args__ = (
        Index(
            "uq_cards_number_live",
            "number",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[int] = _id()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Normalised: lower-case hex, MSB first.
    number: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created()
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class UnknownTap(Base):
    """A card no one owns, tapped at a reader lately: offered for a few minutes to the
    signed-in user who claims it (card self-association). Kept briefly, in the database
    so that every instance sees it; older rows are removed at the next unknown tap."""

    __tablename__ = "unknown_taps"

    id: Mapped[int] = _id()
    reader_id: Mapped[int] = mapped_column(ForeignKey("readers.id", ondelete="CASCADE"))
    # Normalised as Card.number.
    number: Mapped[str] = mapped_column(String(64))
    tapped_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, nullable=False, index=True
    )


class Reader(Base):
    __tablename__ = "readers"

    id: Mapped[int] = _id()
    reader_id: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    card_format: Mapped[str] = mapped_column(String(8), default="hex")
    byte_order: Mapped[str] = mapped_column(String(8), default="msb")
    created_at: Mapped[dt.datetime] = _created()
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    printers: Mapped[list[Printer]] = relationship(secondary=reader_printers, lazy="raise")


class ApiToken(Base):
    """API tokens; only a SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint(
            "role IN ('admin', 'accounts-editor', 'ticket-operator', 'reader', 'user')",
            name="role",
        ),
    )

    id: Mapped[int] = _id()
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    label: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = _created()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Delegation(Base):
    """A delegation registered ahead of a job from a client that cannot send options."""

    __tablename__ = "delegations"
    __table_args__ = (Index("ix_delegations_lookup", "delegate", "printer_id", "consumed_at"),)

    id: Mapped[int] = _id()
    delegate: Mapped[str] = mapped_column(String(255))
    printer_id: Mapped[int] = mapped_column(ForeignKey("printers.id"))
    # The same forms as the job options: {"delegators": "alice,bob:2", ...}
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = _created()
    consumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    consumed_by_print_in_id: Mapped[int | None] = mapped_column(ForeignKey("print_ins.id"))


class OutboxItem(Base):
    """A durable side effect to carry out (PaperCut adjustment, OfficeRnD fee...)."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_work", "status", "next_attempt_at"),)

    id: Mapped[int] = _id()
    kind: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[int] = mapped_column(Integer, default=int(OutboxStatus.PENDING))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    print_out_id: Mapped[int | None] = mapped_column(ForeignKey("print_outs.id"))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = _created()
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ScheduledRun(Base):
    """A periodic job's run for one period (fees per day, top-ups per period, syncs)."""

    __tablename__ = "scheduled_runs"
    __table_args__ = (UniqueConstraint("job", "period"),)

    id: Mapped[int] = _id()
    job: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="started")
    started_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class WebSession(Base):
    """A signed-in web session: the cookie holds the secret, this row its SHA-256.

    Server-side so that it can be revoked (sign-out, a disabled user) and is
    shared by every instance on the database.
    """

    __tablename__ = "web_sessions"

    id: Mapped[int] = _id()
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created()
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
