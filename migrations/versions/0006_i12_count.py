"""print_ins.count_method, color_pages, document_copies: how pages were counted

Revision ID: i12_count
Revises: i12_printer_count
Create Date: 2026-12-03 09:30:00.000000

``count_method``: which counter gave ``pages`` (``pdf-page-tree``, ``dsc``,
``ghostscript``, ``raster-headers``, ``pclxl-operators``, ``estimate``,
``empty``); NULL for jobs recorded before it was kept. ``color_pages``: pages
that carry colour, when measured (NULL: not measured). ``document_copies``:
the copies a PostScript document sets itself (``NumCopies``/``#copies``);
charged on top of the print-out's copies. Existing rows get 1.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i12_count"
down_revision: str | None = "i12_printer_count"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("print_ins") as batch:
        batch.add_column(sa.Column("count_method", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("color_pages", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("document_copies", sa.Integer(), nullable=False, server_default="1")
        )


def downgrade() -> None:
    with op.batch_alter_table("print_ins") as batch:
        batch.drop_column("document_copies")
        batch.drop_column("color_pages")
        batch.drop_column("count_method")
