"""usage report: ledger entries by time

Revision ID: i15rest
Revises: i16rest
Create Date: 2026-12-03 15:40:00.000000

An index only (no data change): ``ix_ledger_entries_created (created_at)``
serves ``GET /reports/usage?since=&until=`` (and the web Usage page), which
sums the ledger entries of a window: with it a month's report reads that
month's entries, not the whole ledger (measured by benchmarks/bench_usage.py).

``IF NOT EXISTS``: on a large PostgreSQL ledger an operator may build it
beforehand with ``CREATE INDEX CONCURRENTLY`` under the same name.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "i15rest"
down_revision: str | None = "i16rest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_ledger_entries_created",
        "ledger_entries",
        ["created_at"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_created", table_name="ledger_entries", if_exists=True)
