"""What every command shares: consoles, and opening the database or exiting with a reason."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from iod.client.terminal import safe

if TYPE_CHECKING:  # the server's modules are imported when a command runs (see main.py)
    from iod.infra.db import Database

# Piped output (no terminal) would be cut to 80 columns, ids included: tables get room.
# No emoji codes: customers' text is printed as it is (iod.client.terminal.safe).
WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "240"))
console = Console(width=WIDTH, emoji=False)
err = Console(stderr=True, emoji=False)


def open_db_or_exit(*, auto_migrate: bool | None = None) -> Database:
    from iod.infra.config import get_settings
    from iod.infra.runtime import SchemaBehind, open_database

    try:
        return open_database(get_settings(), auto_migrate=auto_migrate)
    except SchemaBehind as exc:
        err.print(f"[red]error:[/red] {safe(exc)}", highlight=False)
        raise typer.Exit(2) from exc
