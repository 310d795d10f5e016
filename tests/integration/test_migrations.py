"""Migrations run on both databases and match the models (what `alembic check` checks)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from iod.infra import migrate
from iod.infra.db import Base, Database


def test_schema_matches_models(database: Database) -> None:
    assert migrate.is_up_to_date(database.engine)
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_again(database: Database) -> None:
    head = migrate.head_revision()
    assert head is not None and head[:8].isdigit(), "revisions are date-named"
    config = migrate.alembic_config()
    from alembic import command

    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert migrate.current_revision(database.engine) is None
    migrate.upgrade(database.engine)
    assert migrate.current_revision(database.engine) == head
