"""What every command shares: consoles, and opening the database or exiting with a reason."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from iod.config import get_settings
from iod.db import Database
from iod.runtime import SchemaBehind, open_database

# Piped output (no terminal) would be cut to 80 columns, ids included: tables get room.
WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "240"))
console = Console(width=WIDTH)
err = Console(stderr=True)


def open_db_or_exit(*, auto_migrate: bool | None = None) -> Database:
    try:
        return open_database(get_settings(), auto_migrate=auto_migrate)
    except SchemaBehind as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
