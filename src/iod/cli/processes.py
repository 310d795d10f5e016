"""The long-running commands: `iod serve` (API processes) and `iod worker` (job workers)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import threading
from typing import Any

import typer

from iod.app import build_services, create_app
from iod.cli.common import console, err, open_db_or_exit
from iod.infra import server
from iod.infra.config import Settings, get_settings
from iod.infra.logging import configure_logging


def app_from_environment() -> Any:
    """The ASGI app of one API process, as `uvicorn --workers N` starts it in each child."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    db = open_db_or_exit()
    return create_app(
        build_services(settings, db=db), run_worker=settings.inprocess_worker, freeze_heap=True
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What every `iod serve` passes to uvicorn: quiet, and guarded against slow or greedy
    clients (see iod/server.py and docs/operations.md)."""
    return {
        "access_log": False,
        "log_level": "warning",
        "server_header": False,
        # X-Forwarded-* are believed only from IOD_TRUSTED_PROXIES, by the app itself
        # (uvicorn's default trusts them from the loopback, as FORWARDED_ALLOW_IPS says).
        "proxy_headers": False,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        "http": server.IMPORT_PATH,
        "loop": settings.http_loop,
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        # uvicorn's supervisor pings each of --workers N; one that has not answered within
        # 5 s (its default) it kills, with every request it has in hand. A process merely
        # saturated, its pong thread waiting for the GIL and a CPU, could miss that: only a
        # hung one should be killed (a precaution; not seen in the surge benchmark).
        "timeout_worker_healthcheck": settings.http_worker_healthcheck_seconds,
        # iod/server.py limits requests in progress, connections per address and in all;
        # uvicorn's limit counted idle connections and answered in plain text.
        "limit_concurrency": None,
    }


def serve(host: str, port: int, worker: bool, processes: int) -> None:
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    _raise_open_files_limit()
    _exit_if_address_taken(host, port)
    open_db_or_exit().dispose()  # migrate (SQLite) or check (PostgreSQL) once, up front
    console.print(
        f"serving http://{host}:{port} with {processes} API process(es) "
        f"(docs: /docs; worker: {'in-process' if worker else 'off'}); Ctrl-C stops gracefully",
        highlight=False,
    )
    # On SIGTERM or Ctrl-C uvicorn stops accepting, lets in-flight requests finish (for up to
    # IOD_SHUTDOWN_TIMEOUT seconds), then runs the lifespan's end: the in-process worker
    # finishes its job in hand and hands the rest of its batch back to the queue.
    if processes == 1:
        services = build_services(settings, db=open_db_or_exit())
        app = create_app(services, run_worker=worker, freeze_heap=True)
        _exit_zero_after_graceful_stop()
        uvicorn.run(app, host=host, port=port, **uvicorn_options(settings))
        return
    # Children build their own app from the environment; this is how they learn the flag.
    os.environ["IOD_INPROCESS_WORKER"] = "true" if worker else "false"
    uvicorn.run(
        "iod.cli.processes:app_from_environment", factory=True, workers=processes,
        host=host, port=port, **uvicorn_options(settings),
    )  # fmt: skip


def _exit_if_address_taken(host: str, port: int) -> None:
    """Binds the address once, as uvicorn will, before anything starts: a port another process
    holds is a one-line error and exit 1, not "serving…", a migration and a network
    reconciliation followed by uvicorn's own error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            err.print(
                f"[red]error:[/red] cannot listen on {host}:{port}: {exc.strerror or exc} "
                f"(another `iod serve` or `make run`?); stop it or use --port",
                highlight=False,
            )
            raise typer.Exit(1) from exc


def _raise_open_files_limit() -> None:
    """Every connection is a file descriptor: the soft limit (often 1024) would refuse
    connections long before IOD_HTTP_MAX_CONNECTIONS; children inherit the raised one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # a platform that refuses: keep it
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _exit_zero_after_graceful_stop() -> None:
    """uvicorn, once it has shut down gracefully, raises the signal again for the handler
    that was there before its own; the default one would end the process as killed by
    SIGTERM although it stopped cleanly. With these no-op handlers `iod serve` returns and
    exits 0 (uvicorn's own handlers are in place while it serves)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: None)


def work(concurrency: int) -> None:
    """Runs `concurrency` worker loops until SIGTERM or SIGINT; each finishes its job first."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    services = build_services(settings, db=open_db_or_exit())
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()
        services.wakeup.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    services.reconcile_network()
    threads = [
        threading.Thread(target=services.worker().run_forever, args=(stop,), name=f"iod-worker-{n}")
        for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
