"""`iod`: serve, work, migrate and administer. Admin commands use the database directly."""

from __future__ import annotations

from typing import Annotated

import typer

from iod.cli import admin
from iod.cli.common import console, open_db_or_exit
from iod.config import get_settings

app = typer.Typer(
    help="Internet On-Demand: the service and its admin tools.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin.customers_app, name="customers")
app.add_typer(admin.clients_app, name="clients")
app.add_typer(admin.locations_app, name="locations")
app.command("demo")(admin.demo)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run the job worker in this process.")
    ] = True,
) -> None:
    """Serve the API (and, by default, the worker) on HOST:PORT."""
    import uvicorn

    from iod.app import build_services, create_app
    from iod.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    db = open_db_or_exit()
    services = build_services(settings, db=db)
    application = create_app(services, run_worker=worker)
    console.print(
        f"serving http://{host}:{port} (docs: /docs; worker: {'in-process' if worker else 'off'})"
        "; Ctrl-C stops gracefully",
        highlight=False,
    )
    uvicorn.run(
        application, host=host, port=port, access_log=False, log_level="warning",
        server_header=False, timeout_graceful_shutdown=10,
    )  # fmt: skip


@app.command("worker")
def run_worker() -> None:
    """Run the job worker alone (production runs several next to `iod serve --no-worker`)."""
    import signal
    import threading

    from iod.app import build_services
    from iod.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    db = open_db_or_exit()
    services = build_services(settings, db=db)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()
        services.wakeup.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    services.worker().run_forever(stop)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this release's schema."""
    from iod import migrate

    db = open_db_or_exit(auto_migrate=True)
    console.print(f"schema at {migrate.current_revision(db.engine)}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and of this release."""
    from iod import migrate
    from iod.db import make_engine

    settings = get_settings()
    engine = make_engine(settings.effective_database_url)
    console.print(
        f"database: {migrate.current_revision(engine) or 'empty'}; "
        f"release: {migrate.head_revision()}"
    )
