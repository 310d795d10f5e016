"""`iod`: serve, work, migrate and administer. Admin commands use the database directly.

`iod --help` and the customer commands must start quickly (under 300 ms): the modules this
one imports hold only the command definitions, and each command imports the server's modules
(FastAPI, SQLAlchemy, the settings) when it runs. tests/unit/test_cli_imports.py checks it.
"""

from __future__ import annotations

import gc
import threading
from typing import Annotated

import typer

from iod.cli import admin, edge
from iod.cli.billing import prices_app
from iod.cli.common import console, err, open_db_or_exit
from iod.cli.jobs import jobs_app
from iod.cli.network import network_app
from iod.cli.users import users_app
from iod.client import cli as customer
from iod.client.terminal import safe

app = typer.Typer(
    help="Internet On-Demand: the service and its admin tools.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
app.callback()(customer.root)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin.customers_app, name="customers")
app.add_typer(admin.clients_app, name="clients")
app.add_typer(admin.locations_app, name="locations")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.audit_app, name="audit")
app.command("demo")(admin.demo)
customer.register(app)
app.add_typer(network_app, name="network")
app.add_typer(jobs_app, name="jobs")
app.add_typer(users_app, name="users")
app.add_typer(prices_app, name="prices")
app.command("edge-agent")(edge.edge_agent)
network_app.command("agents")(edge.agents_list)
network_app.command("agent-add")(edge.agent_add)
network_app.command("agent-remove")(edge.agent_remove)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run the job worker in each API process.")
    ] = True,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Number of API processes.")
    ] = 1,
) -> None:
    """Serve the API (and, by default, the worker) on HOST:PORT."""
    from iod.cli.processes import serve as run

    run(host, port, worker, workers)


@app.command("worker")
def run_worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Jobs run at once.")
    ] = 1,
) -> None:
    """Run job workers alone (production runs several next to `iod serve --no-worker`);
    SIGTERM lets the jobs in hand finish."""
    from iod.cli.processes import work

    work(concurrency)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this release's schema."""
    from iod.infra import migrate

    db = open_db_or_exit(auto_migrate=True)
    console.print(f"schema at {migrate.current_revision(db.engine)}")


@db_app.command("check-capacity")
def db_check_capacity(
    repair: Annotated[
        bool, typer.Option("--repair", help="Rewrite the figures that differ.")
    ] = False,
) -> None:
    """Compare the maintained committed-capacity figures (per connection and per location)
    with their recomputation from the connections; exit 1 if any differ (and were not
    repaired)."""
    from iod.connections import capacity

    db = open_db_or_exit()
    with db.write() as session:
        found = capacity.check(session, repair=repair)
    for m in found:
        console.print(
            f"{m.kind} {safe(m.id)}: stored {m.stored} Mbps, recomputed {m.expected} Mbps"
        )
    verdict = "repaired" if repair else "differ"
    console.print(f"{len(found)} figures {verdict}" if found else "capacity figures agree")
    if found and not repair:
        raise typer.Exit(1)


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and of this release."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    from iod.infra import migrate
    from iod.infra.config import get_settings
    from iod.infra.db import make_engine

    settings = get_settings()
    try:  # read only: neither migrated nor refused for being behind (that is what it shows)
        engine = make_engine(settings.effective_database_url)
        current = migrate.current_revision(engine)
    except (OperationalError, ArgumentError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        err.print(f"[red]error:[/red] cannot use the database: {safe(reason)}", highlight=False)
        raise typer.Exit(2) from exc
    console.print(f"database: {current or 'empty'}; release: {migrate.head_revision()}")


# How long a command runs before the cyclic garbage collector is back on (see main).
GC_PAUSE_SECONDS = 5.0


def main() -> None:
    """The `iod` command (and `python -m iod`). The cyclic garbage collector is off while it
    starts: importing the server's modules (SQLAlchemy, pydantic, FastAPI, the models)
    allocates hundreds of thousands of objects, and the collections that triggers walk them
    again and again, about a seventh of a command's start-up CPU (3.2 to 2.7 s of user time
    on a slow 2-core VM: docs/performance.md, "Test suite time"). A timer turns it back on
    after GC_PAUSE_SECONDS, so the commands that run long (worker, edge-agent, events
    tail, webhooks listen) collect as always; a short command has ended by then. A served
    app turns it on as soon as it has started (app.py's lifespan), before its first request.
    Tests that call `app` in-process are not affected."""
    gc.disable()
    timer = threading.Timer(GC_PAUSE_SECONDS, gc.enable)
    timer.daemon = True  # never keeps a finished command alive
    timer.start()
    app()
