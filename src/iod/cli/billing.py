"""`iod prices`: the price book (operators). Server modules are imported inside commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from iod.cli.admin import JsonFlag, _audit, _db, _fail, _print, clock
from iod.cli.common import console, err
from iod.client.terminal import safe
from iod.infra.errors import ProblemError

prices_app = typer.Typer(help="The price book: hourly rates per location and tier.",
                         no_args_is_help=True)  # fmt: skip


@prices_app.command("import")
def prices_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    as_json: JsonFlag = False,
) -> None:
    """Add price versions from a CSV (header: locationId,bandwidth,currency,hourlyRate,
    monthlyCap,effectiveFrom) or JSON file (a list of objects with those fields). Amounts are
    decimals ("0.46"); effectiveFrom defaults to now. Nothing is stored if any row is bad."""
    from iod.billing import service

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        err.print(f"[red]error:[/red] {safe(file)} is not UTF-8 text: {safe(exc)}")
        raise typer.Exit(1) from exc
    try:
        with _db().write() as session:
            rows = service.read_price_file(file.name, text)
            added, unchanged = service.import_prices(session, clock, rows)
            _audit(session, "price.import", "prices", file.name,
                   details={"added": added, "unchanged": unchanged})  # fmt: skip
    except ProblemError as exc:
        raise _fail(exc) from exc
    _print({"added": added, "unchanged": unchanged}, as_json,
           f"{added} price versions added, {unchanged} unchanged")  # fmt: skip


@prices_app.command("list")
def prices_list(
    as_json: JsonFlag = False,
    location: Annotated[str | None, typer.Option(help="Only this location id.")] = None,
    all_versions: Annotated[
        bool, typer.Option("--all", help="Every version, not only those in force now or later.")
    ] = False,
) -> None:
    """The price book: per location and tier, the version in force now and any later ones."""
    from iod.billing import repository, service

    now = clock.now()
    with _db().read() as session:
        prices = repository.all_prices(session)
        current = {p.id for p in service.in_force(prices, now).values()}
        rows = [
            service.describe_price(p)
            for p in prices
            if (location is None or p.location_id == location)
            and (all_versions or p.id in current or p.effective_from > now)
        ]
    if as_json:
        typer.echo(json.dumps({"prices": rows}))
        return
    table = Table("location", "tier", "hourly", "monthly cap", "currency", "from")
    for row in rows:
        table.add_row(safe(row["locationId"]), row["bandwidth"], row["hourlyRate"],
                      row["monthlyCap"] or "-", row["currency"], row["effectiveFrom"])  # fmt: skip
    console.print(table)
