"""print_outs.dispatch_uuid: the job-uuid a dispatch sends, committed before it leaves

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 10:00:00.000000

A dispatch commits this uuid before its Print-Job; when the service dies
between the printer accepting the job and our commit, the next attempt finds
the job at the target by it instead of printing it a second time. Nullable,
no data change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("print_outs", sa.Column("dispatch_uuid", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("print_outs") as batch:
        batch.drop_column("dispatch_uuid")
