"""history indexes: two-filter print-out walks, a small account's print-outs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 08:00:00.000000

Indexes only (no data change). Each serves one history query plan:

- ix_print_outs_delegate_status_created (delegate, status, created_at, id):
  ``GET /printouts?user=&status=`` (and every user token with ``status=``)
  walks it in order; before, the walk went over one of the one-column indexes
  and filtered the other column, reading every row of that user (or status)
  to fill a page when the combination is rare.
- ix_print_outs_printer_status_created (printer_id, status, created_at, id):
  the same for ``?printer=&status=``.
- ix_account_transactions_account_print_out (account_id, print_out_id):
  ``?account=`` on a small account starts from the account's transactions;
  with this index their print-out ids come from the index alone (a covering
  / index-only scan) instead of one table row each.

``IF NOT EXISTS``: on a large PostgreSQL history, an operator may build them
beforehand without blocking writes (``CREATE INDEX CONCURRENTLY`` with the
same names and columns); this revision then only records the step. At
1,000,000 print-outs each takes seconds to build.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_print_outs_delegate_status_created",
        "print_outs",
        ["delegate", "status", "created_at", "id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        "ix_print_outs_printer_status_created",
        "print_outs",
        ["printer_id", "status", "created_at", "id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_index(
        "ix_account_transactions_account_print_out",
        "account_transactions",
        ["account_id", "print_out_id"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_account_transactions_account_print_out",
        table_name="account_transactions",
        if_exists=True,
    )
    op.drop_index("ix_print_outs_printer_status_created", table_name="print_outs", if_exists=True)
    op.drop_index("ix_print_outs_delegate_status_created", table_name="print_outs", if_exists=True)
