"""Administration: token expiry, credit limits, disable and soft delete

Revision ID: i15_admin
Revises: i13ctl
Create Date: 2026-12-03 09:10:00.000000

``api_tokens.expires_at``: a token past it answers 401 (``revoked_at`` was
already there). ``accounts.credit_limit``: how far below zero a restricted
account may go (NULL: unlimited). ``deleted_at`` on users, groups, accounts
and printers: a soft delete (the row and its history stay, the name stops
working). ``groups.active`` and ``readers.enabled``: disable without delete
(existing rows stay enabled). ``print_outs.cost_rules``: the printer's prices
as they were when the job arrived (a price change applies to later jobs;
NULL on older rows: the printer's current prices). ``account_transactions.reserved``:
a job's estimated share held against a credit limit until it is charged.
All nullable or with a server default: no data change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billing.db

revision: str = "i15_admin"
down_revision: str | None = "i13ctl"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SOFT_DELETE = ("users", "groups", "accounts", "printers")


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(
            sa.Column("expires_at", billing.db.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("credit_limit", billing.db.Money(precision=20, scale=6), nullable=True)
        )
    for table in _SOFT_DELETE:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("deleted_at", billing.db.UTCDateTime(timezone=True), nullable=True)
            )
    with op.batch_alter_table("print_outs") as batch:
        batch.add_column(sa.Column("cost_rules", sa.JSON(), nullable=True))
    with op.batch_alter_table("account_transactions") as batch:
        batch.add_column(
            sa.Column("reserved", billing.db.Money(precision=20, scale=6), nullable=True)
        )
    with op.batch_alter_table("groups") as batch:
        batch.add_column(
            sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("readers") as batch:
        batch.add_column(
            sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("readers") as batch:
        batch.drop_column("enabled")
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("active")
    with op.batch_alter_table("account_transactions") as batch:
        batch.drop_column("reserved")
    with op.batch_alter_table("print_outs") as batch:
        batch.drop_column("cost_rules")
    for table in reversed(_SOFT_DELETE):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("deleted_at")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("credit_limit")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
