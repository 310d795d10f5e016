"""Schema migrations, driven from code so `iod db upgrade` and `iod serve` share them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"
# Revision ids are the files' date-and-number prefixes (20261130_0014_lumen_quotes.py is
# revision 20261130_0014), one chain, so the newest file name is the head.
_REVISION_FILE = re.compile(r"(\d{8}_\d{4})_\w+\.py")


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def newest_file_revision() -> str | None:
    """The head by the files' names alone (alembic's own reading of the scripts costs a
    third of a CLI command's start)."""
    found = (_REVISION_FILE.fullmatch(p.name) for p in (MIGRATIONS_DIR / "versions").iterdir())
    return max((m.group(1) for m in found if m), default=None)


def is_up_to_date(engine: Engine) -> bool:
    """Whether the schema is at the head. The common answer, yes, comes from one SELECT and
    the file names; anything else is decided by alembic."""
    try:
        with engine.connect() as conn:
            stamped = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        stamped = []  # no table yet: alembic says what that means
    if len(stamped) == 1 and stamped[0][0] == newest_file_revision():
        return True
    return current_revision(engine) == head_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
