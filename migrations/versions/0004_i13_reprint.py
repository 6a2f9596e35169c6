"""print_outs.reprint_of, target_missing_since: reprints; jobs lost at the target

Revision ID: i13_reprint
Revises: 0003
Create Date: 2026-12-02 19:00:00.000000

``lp -i N -H restart`` re-sends a job whose job-uuid we know: a new print-out
of the same print-in, charged again, linked to the one it reprints. Nullable,
no data change. ``target_missing_since``: since when the target has not
reported a dispatched job as ours (the tracker aborts it ``lost-at-target``
after a while). Nullable.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billing.db

revision: str = "i13_reprint"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("print_outs") as batch:
        batch.add_column(
            sa.Column(
                "reprint_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch.create_foreign_key(
            "fk_print_outs_reprint_of_print_outs", "print_outs", ["reprint_of"], ["id"]
        )
        batch.add_column(
            sa.Column("target_missing_since", billing.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("print_outs") as batch:
        batch.drop_constraint("fk_print_outs_reprint_of_print_outs", type_="foreignkey")
        batch.drop_column("target_missing_since")
        batch.drop_column("reprint_of")
