"""Rights to charge: the delegate right and access lists of accounts

Revision ID: i15_rights
Revises: i15_admin
Create Date: 2026-12-03 09:30:00.000000

``users.can_delegate`` and ``groups.can_delegate``: the ``delegate`` right
(charge others than oneself), off for existing rows. ``accounts.access_restricted``
(False = open, as before) with the access list tables ``account_access_users``
and ``account_access_groups``. Existing set-ups keep their accounts open; users
who delegate need the right granted (``proxyprint user edit NAME --delegate``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i15_rights"
down_revision: str | None = "i15_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _bigid() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    for table in ("users", "groups"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("can_delegate", sa.Boolean(), server_default=sa.false(), nullable=False)
            )
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("access_restricted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "account_access_users",
        sa.Column("account_id", _bigid(), nullable=False),
        sa.Column("user_id", _bigid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_access_users_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_account_access_users_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "user_id", name=op.f("pk_account_access_users")),
    )
    op.create_table(
        "account_access_groups",
        sa.Column("account_id", _bigid(), nullable=False),
        sa.Column("group_id", _bigid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_access_groups_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_account_access_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "group_id", name=op.f("pk_account_access_groups")),
    )


def downgrade() -> None:
    op.drop_table("account_access_groups")
    op.drop_table("account_access_users")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("access_restricted")
    for table in ("groups", "users"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("can_delegate")
