"""cards: soft delete, and a number unique among live cards only

Revision ID: i15soft
Revises: i16pam
Create Date: 2026-12-03 16:10:00.000000

``cards.deleted_at``: deleting a card keeps its row (who owned it, since when)
next to its events. ``uq_cards_number`` becomes the partial unique index
``uq_cards_number_live (number) WHERE deleted_at IS NULL`` so that a deleted
card can be registered again (to the same or another user) while two live
cards still cannot share a number. Existing rows are all live: no data change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import billing.db

revision: str = "i15soft"
down_revision: str | None = "i16pam"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("cards") as batch:
        batch.add_column(
            sa.Column("deleted_at", billing.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.drop_constraint("uq_cards_number", type_="unique")
    op.create_index(
        "uq_cards_number_live",
        "cards",
        ["number"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    # Deleted rows would break the old, total uniqueness: they go (their events stay).
    op.execute("DELETE FROM cards WHERE deleted_at IS NOT NULL")
    op.drop_index("uq_cards_number_live", table_name="cards")
    with op.batch_alter_table("cards") as batch:
        batch.create_unique_constraint("uq_cards_number", ["number"])
        batch.drop_column("deleted_at")
