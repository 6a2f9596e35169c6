"""print_ins.origin_key: one print-in per job that came without a job-uuid;
printers.require_tap, tap_window_secs: authenticated direct print

Revision ID: i13ctl
Revises: i16_web
Create Date: 2026-12-03 09:30:00.000000

Non-CUPS senders on the TCP intake may send no ``job-uuid``; such a job is
keyed by sha256(sending host, printer, job id, time-at-creation) so that the
same request twice is recorded once. Nullable and unique (NULLs do not
collide), no data change.

A direct printer may require its job's owner to tap a card before the job
prints (``printer add --require-tap --tap-window-secs 60``): existing printers
do not (false, 60 s).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i13ctl"
down_revision: str | None = "i16_web"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("print_ins") as batch:
        batch.add_column(sa.Column("origin_key", sa.String(length=64), nullable=True))
        batch.create_unique_constraint("uq_print_ins_origin_key", ["origin_key"])
    with op.batch_alter_table("printers") as batch:
        batch.add_column(
            sa.Column("require_tap", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(
            sa.Column("tap_window_secs", sa.Integer(), server_default="60", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("printers") as batch:
        batch.drop_column("tap_window_secs")
        batch.drop_column("require_tap")
    with op.batch_alter_table("print_ins") as batch:
        batch.drop_constraint("uq_print_ins_origin_key", type_="unique")
        batch.drop_column("origin_key")
