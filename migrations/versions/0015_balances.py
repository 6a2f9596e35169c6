"""account_balances: each account's running totals, kept beside its ledger

Revision ID: balances
Revises: i15soft
Create Date: 2026-12-04 13:40:00.000000

An account's balance and page counter were sums over its ledger entries on
every read: an account with 100,000 entries cost a scan of them all on its
Balance page. ``account_balances`` keeps the sums, one row per account that
has entries, written by ``billing.ledger`` in the same transaction as each
new entry. The upgrade fills it from the ledger in its own transaction (stop
the service's instances for the upgrade, as for every migration: an entry an
old instance posted meanwhile would not be added). ``proxyprint db verify``
recomputes the sums and names any account that disagrees.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billing.db

revision: str = "balances"
down_revision: str | None = "i15soft"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_balances",
        sa.Column("account_id", billing.db.BigId, autoincrement=False, nullable=False),
        sa.Column("balance", billing.db.Money(), nullable=False),
        sa.Column("pages", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_balances_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_balances")),
    )
    op.execute(
        "INSERT INTO account_balances (account_id, balance, pages)"
        " SELECT account_id, SUM(amount), SUM(pages) FROM ledger_entries GROUP BY account_id"
    )


def downgrade() -> None:
    op.drop_table("account_balances")
