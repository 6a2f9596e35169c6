"""print_outs.printer_impressions: the printer's own count beside ours

Revision ID: i12_printer_count
Revises: i13_reprint
Create Date: 2026-12-03 09:30:00.000000

What the target reported as ``job-impressions-completed`` when the job
completed (``[charging] trust`` says whether it or our count is charged).
Nullable, no data change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i12_printer_count"
down_revision: str | None = "i13_reprint"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("print_outs") as batch:
        batch.add_column(sa.Column("printer_impressions", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("print_outs") as batch:
        batch.drop_column("printer_impressions")
