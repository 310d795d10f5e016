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
    assert not migrate.is_up_to_date(database.engine)  # no alembic_version rows
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, head)
        command.downgrade(config, "-1")
    assert not migrate.is_up_to_date(database.engine)  # one behind
    migrate.upgrade(database.engine)
    assert migrate.current_revision(database.engine) == head
    assert migrate.is_up_to_date(database.engine)


def test_the_newest_file_name_is_alembics_head() -> None:
    """is_up_to_date's shortcut: the head by file names is the head alembic computes."""
    assert migrate.newest_file_revision() == migrate.head_revision()
