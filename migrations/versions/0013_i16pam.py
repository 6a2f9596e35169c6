"""web pages at 1,000,000 print-outs: balances from an index, a user's held queue

Revision ID: i16pam
Revises: i15rest
Create Date: 2026-12-03 16:20:00.000000

Indexes only (no data change). ``ix_ledger_entries_account_sums
(account_id, amount, pages)`` covers ``billing.ledger.balance`` and
``page_count`` (sums over one account's entries), so they read the index
alone (an index-only scan) instead of one table row per entry. At
1,000,000 print-outs the busiest user's 143,000 entries made the web Balance
page take about a second on PostgreSQL (benchmarks/bench_history.py).

``ix_print_outs_delegate_held (delegate, status, mode, id)``: a user's held
jobs, or her job tickets, in queue order (``proxy.api.jobs.held_page``, the
My jobs page): before, her job tickets were filtered out of all her held
print-outs (135 ms at 5,000 held).

``IF NOT EXISTS``: on a large PostgreSQL database an operator may build them
beforehand with ``CREATE INDEX CONCURRENTLY`` under the same names.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "i16pam"
down_revision: str | None = "i15rest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_ledger_entries_account_sums",
        "ledger_entries",
        ["account_id", "amount", "pages"],
        unique=False,
        if_not_exists=True,
    )

    op.create_index(
        "ix_print_outs_delegate_held",
        "print_outs",
        ["delegate", "status", "mode", "id"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_print_outs_delegate_held", table_name="print_outs", if_exists=True)
    op.drop_index("ix_ledger_entries_account_sums", table_name="ledger_entries", if_exists=True)
