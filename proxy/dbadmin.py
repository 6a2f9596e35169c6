"""Schema management through Alembic: the only way the schema changes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.db import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


def _on(connection: Connection, url: str) -> AlembicConfig:
    cfg = alembic_config(url)
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    url = engine.url.render_as_string(hide_password=False)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(_on(c, url), revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    url = engine.url.render_as_string(hide_password=False)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(_on(c, url), revision))


async def drift(engine: AsyncEngine) -> list[object]:
    """Differences between the models and the migrated schema (empty = in sync)."""

    def _compare(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "target_metadata": Base.metadata},
        )
        return list(compare_metadata(ctx, Base.metadata))

    async with engine.connect() as conn:
        return await conn.run_sync(_compare)
