"""unknown_taps: unknown cards tapped lately, for card self-association in the web app

Revision ID: i16rest
Revises: i15_rights
Create Date: 2026-12-03 15:00:00.000000

A reader's tap of a card no one owns is remembered for a few minutes
(``proxy.nfc_admin.CLAIM_MINUTES``) so that the signed-in user can claim it on
her "My cards" page. In the database, so that every instance sees it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billing.db

revision: str = "i16rest"
down_revision: str | None = "i15_rights"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "unknown_taps",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("reader_id", _ID, nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("tapped_at", billing.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reader_id"],
            ["readers.id"],
            name=op.f("fk_unknown_taps_reader_id_readers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unknown_taps")),
    )
    op.create_index(op.f("ix_unknown_taps_tapped_at"), "unknown_taps", ["tapped_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_unknown_taps_tapped_at"), table_name="unknown_taps")
    op.drop_table("unknown_taps")
