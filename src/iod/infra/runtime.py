"""Opening the database for a process: the embedded SQLite migrates itself, PostgreSQL must
already be migrated (`iod db upgrade`), so two releases never race on a shared schema."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from iod.infra import migrate
from iod.infra.config import Settings
from iod.infra.db import Database, make_engine
from iod.infra.secure import InsecureKeyStore, secure_storage


class SchemaBehind(Exception):
    """The database cannot be used as it is; the message says what to do."""


def open_database(settings: Settings, *, auto_migrate: bool | None = None) -> Database:
    try:
        secure_storage(settings)
    except InsecureKeyStore as exc:
        raise SchemaBehind(str(exc)) from exc
    try:
        return _open(settings, auto_migrate)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise SchemaBehind(f"cannot use the database: {reason}") from exc


def _open(settings: Settings, auto_migrate: bool | None) -> Database:
    engine = make_engine(settings.effective_database_url, **settings.engine_options)
    db = Database(engine)
    if auto_migrate is None:
        auto_migrate = db.is_sqlite
    if auto_migrate:
        if not migrate.is_up_to_date(engine):
            migrate.upgrade(engine)
    elif not migrate.is_up_to_date(engine):
        current = migrate.current_revision(engine) or "empty"
        engine.dispose()
        raise SchemaBehind(
            f"the database schema is at {current}, this release needs {migrate.head_revision()}: "
            "run `iod db upgrade` first"
        )
    return db
