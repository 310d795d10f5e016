"""`iod network`: what the network holds, and reconciling it with the database.

The server's modules are imported when a command runs (see main.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from iod.cli.common import console, open_db_or_exit
from iod.client.terminal import safe
from iod.domain.bandwidth import format_bandwidth
from iod.infra.clock import SystemClock

network_app = typer.Typer(
    help="The network the driver manages (IOD_NETWORK_DRIVER).", no_args_is_help=True
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _quiet(level: str) -> str:
    return "WARNING" if level.upper() == "INFO" else level


@network_app.command("reconcile")
def network_reconcile(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report (and print the operations), change nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Compare the network with the database and mend it: create what is missing, remove
    orphans, correct rates and suspension. Safe to run any time, as often as you like."""
    from iod.audit import service as audit
    from iod.connections.reconcile import reconcile
    from iod.infra.config import get_settings
    from iod.infra.logging import configure_logging
    from iod.network.factory import make_driver

    settings = get_settings()
    # Logs on stderr, and only warnings: the command prints its own report.
    configure_logging(_quiet(settings.log_level), settings.log_json)
    from iod.edge.driver import EdgeRouter

    db = open_db_or_exit()
    clock = SystemClock()
    # Locations with an edge agent get their desired rows corrected (the agent applies them).
    driver = EdgeRouter(db, clock, make_driver(settings), settings)
    report = reconcile(db, driver, clock, dry_run=dry_run)
    if report.changed and not dry_run:
        with db.write() as session:  # an operator changed the network: on the record
            audit.record(
                session, clock, audit.operator(), "network.reconcile", "network", driver.name,
                details={"created": report.created, "removed": report.removed,
                         "corrected": report.corrected},
            )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(asdict(report) | {"changed": report.changed, "dryRun": dry_run}))
        return
    verb = "would be" if dry_run else ""
    for title, items in (
        ("created", report.created),
        ("removed", report.removed),
        ("corrected", report.corrected),
        ("left to their jobs", report.skipped),
    ):
        for item in items:
            console.print(f"{title} {verb}: {safe(item)}".replace("  ", " "))
    console.print(
        f"{driver.name}: {len(report.created)} created, {len(report.removed)} removed, "
        f"{len(report.corrected)} corrected, {report.unchanged} unchanged, "
        f"{len(report.skipped)} left to their jobs{' (dry run)' if dry_run else ''}"
    )


@network_app.command("show")
def network_show(as_json: JsonFlag = False) -> None:
    """What the network holds now, as the driver reads it."""
    from iod.infra.config import get_settings
    from iod.infra.logging import configure_logging
    from iod.network.factory import make_driver

    settings = get_settings()
    configure_logging(_quiet(settings.log_level), settings.log_json)
    driver = make_driver(settings)
    rows = driver.inventory()
    if as_json:
        typer.echo(json.dumps({"driver": driver.name, "connections": [asdict(r) for r in rows]}))
        return
    table = Table("connection", "location", "bandwidth", "suspended", title=driver.name)
    for row in rows:
        table.add_row(
            safe(row.connection_id),
            safe(row.location_id),
            format_bandwidth(row.bandwidth_mbps),
            "yes" if row.suspended else "no",
        )
    console.print(table)
