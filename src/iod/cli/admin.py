"""Admin commands: customers, clients, locations and the demo data."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from iod.cli.common import console, err, open_db_or_exit
from iod.clock import SystemClock
from iod.config import get_settings
from iod.customers import repository as customers_repo
from iod.customers import service as customers
from iod.db import Database
from iod.domain.bandwidth import format_bandwidth
from iod.errors import ProblemError
from iod.locations import catalog
from iod.locations import repository as locations_repo
from iod.locations import service as locations

customers_app = typer.Typer(help="Customers: who owns connections.", no_args_is_help=True)
clients_app = typer.Typer(help="API clients of customers.", no_args_is_help=True)
locations_app = typer.Typer(help="The location catalog.", no_args_is_help=True)

clock = SystemClock()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _db() -> Database:
    return open_db_or_exit()


def _fail(exc: ProblemError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.detail}")
    for item in exc.errors:
        err.print(f"  {item.pointer or '/'}: {item.detail}")
    return typer.Exit(1)


def _print(data: dict[str, Any], as_json: bool, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(data))
    else:
        console.print(human)


@customers_app.command("create")
def customers_create(name: str, as_json: JsonFlag = False) -> None:
    """Create a customer."""
    try:
        with _db().write() as session:
            customer = customers.create_customer(session, clock, name)
    except ProblemError as exc:
        raise _fail(exc) from exc
    _print({"id": customer.id, "name": customer.name}, as_json, f"customer {customer.id}")


@customers_app.command("list")
def customers_list(as_json: JsonFlag = False) -> None:
    """List customers."""
    with _db().read() as session:
        rows = [{"id": c.id, "name": c.name} for c in customers_repo.list_customers(session)]
    if as_json:
        typer.echo(json.dumps({"customers": rows}))
        return
    table = Table("id", "name")
    for row in rows:
        table.add_row(row["id"], row["name"])
    console.print(table)


@clients_app.command("create")
def clients_create(
    customer: Annotated[str, typer.Option(help="The customer id.")],
    scopes: Annotated[str, typer.Option(help="Space-separated: read, write.")] = "read write",
    name: Annotated[str, typer.Option(help="A label for the client.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create an API client; its secret is shown only now."""
    try:
        with _db().write() as session:
            new = customers.create_client(session, clock, customer, scopes, name=name)
    except ProblemError as exc:
        raise _fail(exc) from exc
    data = {"client_id": new.client_id, "client_secret": new.client_secret,
            "customer_id": new.customer_id, "scopes": " ".join(new.scopes)}  # fmt: skip
    _print(
        data,
        as_json,
        f"client_id:     {new.client_id}\nclient_secret: {new.client_secret}\n"
        "(the secret is not stored in clear and cannot be shown again)",
    )


def _set_enabled(client_id: str, enabled: bool, as_json: bool) -> None:
    try:
        with _db().write() as session:
            customers.set_client_enabled(session, clock, client_id, enabled)
    except ProblemError as exc:
        raise _fail(exc) from exc
    state = "enabled" if enabled else "disabled"
    _print({"client_id": client_id, "enabled": enabled}, as_json, f"client {client_id} {state}")


@clients_app.command("disable")
def clients_disable(client_id: str, as_json: JsonFlag = False) -> None:
    """Disable a client: new tokens are refused and existing ones stop within seconds."""
    _set_enabled(client_id, False, as_json)


@clients_app.command("enable")
def clients_enable(client_id: str, as_json: JsonFlag = False) -> None:
    """Enable a disabled client again."""
    _set_enabled(client_id, True, as_json)


@clients_app.command("list")
def clients_list(
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List clients (never their secrets)."""
    with _db().read() as session:
        rows = [
            {
                "client_id": c.id,
                "customer_id": c.customer_id,
                "scopes": c.scopes,
                "enabled": c.enabled,
            }
            for c in customers_repo.list_clients(session, customer)
        ]
    if as_json:
        typer.echo(json.dumps({"clients": rows}))
        return
    table = Table("client_id", "customer_id", "scopes", "enabled")
    for row in rows:
        table.add_row(
            str(row["client_id"]), str(row["customer_id"]), str(row["scopes"]), str(row["enabled"])
        )
    console.print(table)


@locations_app.command("list")
def locations_list(as_json: JsonFlag = False) -> None:
    """List the catalog."""
    with _db().read() as session:
        rows = [locations.describe(loc) for loc in locations_repo.list_all(session)]
    if as_json:
        typer.echo(json.dumps({"locations": rows}))
        return
    table = Table("id", "name", "address", "capacity", "tiers", "ipv4 pool")
    for row in rows:
        table.add_row(row["id"], row["name"], row["address"], row["capacity"],
                      ", ".join(row["tiers"]), row["ipv4Pool"])  # fmt: skip
    console.print(table)


@locations_app.command("import")
def locations_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    as_json: JsonFlag = False,
) -> None:
    """Create or update locations from a JSON file: a list of {id, name, address, capacity,
    tiers?}, with capacity and tiers as bandwidth strings."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/red] {file} is not JSON: {exc}")
        raise typer.Exit(1) from exc
    try:
        entries = locations.parse_catalog(data)
        with _db().write() as session:
            created, updated = locations.upsert(session, clock, entries)
    except ProblemError as exc:
        raise _fail(exc) from exc
    _print({"created": created, "updated": updated}, as_json,
           f"{created} created, {updated} updated")  # fmt: skip


def _demo_secret_file() -> Path:
    return get_settings().data_dir / "demo-client.json"


def demo(
    as_json: JsonFlag = False,
    as_env: Annotated[
        bool, typer.Option("--env", help='Print shell exports: eval "$(iod demo --env)".')
    ] = False,
    url: Annotated[str, typer.Option(help="Where the API will be served.")] = (
        "http://127.0.0.1:8080"
    ),
) -> None:
    """Create the demo catalog, customer and client (idempotent) and print the credentials."""
    db = _db()
    secret_file = _demo_secret_file()
    with db.write() as session:
        locations.upsert(session, clock, locations.parse_catalog(catalog.DEMO_LOCATIONS))
        customer = customers_repo.find_customer_by_name(session, catalog.DEMO_CUSTOMER_NAME)
        if customer is None:
            customer = customers.create_customer(session, clock, catalog.DEMO_CUSTOMER_NAME)
        client = customers_repo.get_client(session, catalog.DEMO_CLIENT_ID)
        secret = None
        if client is not None and secret_file.exists():
            saved = json.loads(secret_file.read_text(encoding="utf-8"))
            secret = saved.get("client_secret")
            if not isinstance(secret, str) or not customers.secret_matches(client, secret):
                secret = None
        if secret is None:
            # First run, or the saved secret is gone: issue a fresh one.
            if client is None:
                secret = customers.create_client(
                    session, clock, customer.id, "read write", name="demo",
                    client_id=catalog.DEMO_CLIENT_ID,
                ).client_secret  # fmt: skip
            else:
                secret = customers.rotate_secret(session, catalog.DEMO_CLIENT_ID)
        customers.set_client_enabled(session, clock, catalog.DEMO_CLIENT_ID, True)
        customer_id = customer.id
        location = locations_repo.get(session, catalog.DEMO_LOCATION_ID)
        assert location is not None
        tiers = [format_bandwidth(t) for t in location.tiers_mbps]
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"client_id": catalog.DEMO_CLIENT_ID, "client_secret": secret}, handle)
    data = {
        "customer_id": customer_id,
        "client_id": catalog.DEMO_CLIENT_ID,
        "client_secret": secret,
        "location_id": catalog.DEMO_LOCATION_ID,
        "location_tiers": tiers,
    }
    if as_json:
        typer.echo(json.dumps(data))
        return
    if as_env:
        exports = {
            "IOD_URL": url.rstrip("/"),
            "IOD_CLIENT_ID": catalog.DEMO_CLIENT_ID,
            "IOD_CLIENT_SECRET": secret,
            "IOD_LOCATION_ID": catalog.DEMO_LOCATION_ID,
        }
        for name, value in exports.items():
            typer.echo(f"export {name}={shlex.quote(value)}")
        return
    console.print(
        f"[bold]Demo credentials[/bold] (customer {customer_id})\n"
        f"  client_id:     {catalog.DEMO_CLIENT_ID}\n"
        f"  client_secret: {secret}\n"
        f"  location_id:   {catalog.DEMO_LOCATION_ID} (offers {', '.join(tiers)})\n\n"
        "[bold]Get a token:[/bold]",
        highlight=False,
        soft_wrap=True,
    )
    # Plain print so the command can be copied without Rich's wrapping.
    print(
        f"  TOKEN=$(curl -s -u '{catalog.DEMO_CLIENT_ID}:{secret}' "
        f"-d grant_type=client_credentials {url.rstrip('/')}/oauth2/token "
        "| python3 -c 'import sys, json; print(json.load(sys.stdin)[\"access_token\"])')\n"
    )
