"""`iod edge-agent` (on an edge host) and `iod network agents|agent-add|agent-remove` (on
the controller). The server's modules are imported when a command runs (see main.py)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.table import Table

from iod.cli.common import console, err, open_db_or_exit
from iod.client.terminal import safe

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def agents_list(as_json: JsonFlag = False) -> None:
    """The edge agents: location, version, last contact and lag (changes not yet applied,
    and how long the oldest unacknowledged operation has waited)."""
    from iod.edge import repository
    from iod.infra.clock import SystemClock

    db = open_db_or_exit()
    now = SystemClock().now()
    with db.read() as session:
        rows = repository.agents(session)
        pending = repository.pending_summary(session)
        out = []
        for agent in rows:
            count, oldest = pending.get(agent.location_id, (0, None))
            out.append({
                "locationId": agent.location_id, "clientId": agent.client_id,
                "version": agent.version, "hostname": agent.hostname,
                "lastContact": agent.last_contact_at.isoformat()
                if agent.last_contact_at else None,
                "lastContactSecondsAgo": (now - agent.last_contact_at).total_seconds()
                if agent.last_contact_at else None,
                "cursor": agent.cursor, "ackedCursor": agent.acked_cursor,
                "lagChanges": agent.cursor - agent.acked_cursor, "pendingOperations": count,
                "oldestPendingSeconds": (now - oldest).total_seconds() if oldest else None,
                "connections": agent.actual_count, "drift": agent.drift,
            })  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"agents": out}))
        return
    table = Table("location", "version", "host", "last contact", "lag", "connections", "drift")
    for a in out:
        lag = f"{a['lagChanges']} changes, {a['pendingOperations']} ops"
        if a["oldestPendingSeconds"] is not None:
            lag += f" (oldest {a['oldestPendingSeconds']:.0f} s)"
        table.add_row(
            safe(a["locationId"]), safe(a["version"] or "-"), safe(a["hostname"] or "-"),
            _ago(cast("float | None", a["lastContactSecondsAgo"])), lag, str(a["connections"] or 0),
            "-" if a["drift"] is None else str(a["drift"]),
        )  # fmt: skip
    console.print(table)


def agent_add(
    location: Annotated[str, typer.Argument(help="The location the agent serves.")],
    as_json: JsonFlag = False,
) -> None:
    """Register the agent of LOCATION: prints its client credentials (scope `edge`, shown
    once). From now on the location's network operations go to its agent."""
    from iod.audit import service as audit
    from iod.cli.admin import _hasher
    from iod.edge import service
    from iod.infra.clock import SystemClock
    from iod.infra.errors import ProblemError

    db = open_db_or_exit()
    clock = SystemClock()
    try:
        with db.write() as session:
            done = service.register_agent(session, clock, location, _hasher())
            audit.record(
                session, clock, audit.operator(), "edge_agent.add", "location", location,
                details={"clientId": done.client.client_id, "seeded": done.seeded},
            )  # fmt: skip
    except ProblemError as exc:
        err.print(f"[red]error:[/red] {safe(exc)}", highlight=False)
        raise typer.Exit(1) from exc
    answer = {"locationId": location, "clientId": done.client.client_id,
              "clientSecret": done.client.client_secret, "seeded": done.seeded}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(answer))
        return
    console.print(f"agent of {safe(location)}: {done.seeded} connections handed to it")
    console.print(f"IOD_EDGE_CLIENT_ID={done.client.client_id}")
    console.print(f"IOD_EDGE_CLIENT_SECRET={done.client.client_secret}")


def agent_remove(
    location: Annotated[str, typer.Argument(help="The location whose agent goes.")],
) -> None:
    """The location goes back to the in-process driver; its agent's client is disabled."""
    from iod.audit import service as audit
    from iod.edge import service
    from iod.infra.clock import SystemClock
    from iod.infra.errors import ProblemError

    db = open_db_or_exit()
    clock = SystemClock()
    try:
        with db.write() as session:
            agent = service.remove_agent(session, clock, location)
            audit.record(session, clock, audit.operator(), "edge_agent.remove", "location",
                         location, details={"clientId": agent.client_id})  # fmt: skip
    except ProblemError as exc:
        err.print(f"[red]error:[/red] {safe(exc)}", highlight=False)
        raise typer.Exit(1) from exc
    console.print(f"location {safe(location)} has no agent now")


def edge_agent(
    location: Annotated[str, typer.Option("--location", help="The location this edge serves.")],
    controller: Annotated[str, typer.Option("--controller", help="The controller's URL.")],
    state_file: Annotated[
        Path | None,
        typer.Option("--state-file", help="Default: /var/lib/iod-edge/<location>.json"),
    ] = None,
    mode: Annotated[
        str, typer.Option("--mode", help="`edge`: one uplink, one HTB tree; `lab`: namespaces.")
    ] = "edge",
    uplink: Annotated[
        str, typer.Option("--uplink", help="Edge mode: the interface towards the customers.")
    ] = "eth0",
    ifb: Annotated[str, typer.Option("--ifb", help="Edge mode: the IFB device for upload.")] = (
        "ifb-iod"
    ),
    prefix: Annotated[str, typer.Option("--prefix", help="Lab mode: the name prefix.")] = "iod",
    wait: Annotated[float, typer.Option("--wait", help="Long poll seconds.")] = 25,
    retry_max: Annotated[
        float, typer.Option("--retry-max", help="Longest pause between reconnection attempts.")
    ] = 10,
    sample_seconds: Annotated[
        float | None,
        typer.Option(
            "--sample-seconds", help="Counter sampling (default IOD_TRAFFIC_SAMPLE_SECONDS)."
        ),
    ] = None,
) -> None:
    """Run the agent of one location: follow its desired state from the controller, apply
    it to this host's kernel, report each operation. Credentials: IOD_EDGE_CLIENT_ID and
    IOD_EDGE_CLIENT_SECRET."""
    from iod.edge.agent import Agent, Applier
    from iod.infra.config import get_settings
    from iod.infra.logging import configure_logging
    from iod.network.base import NetworkDriver
    from iod.version import __version__

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    client_id = os.environ.get("IOD_EDGE_CLIENT_ID", "")
    secret = os.environ.get("IOD_EDGE_CLIENT_SECRET", "")
    if not client_id or not secret:
        err.print("[red]error:[/red] set IOD_EDGE_CLIENT_ID and IOD_EDGE_CLIENT_SECRET")
        raise typer.Exit(2)
    driver: NetworkDriver
    if mode == "lab":
        from iod.network.linux.driver import LinuxDriver

        driver = LinuxDriver(prefix=prefix, customer_ifname=settings.linux_customer_ifname)
    elif mode == "edge":
        from iod.network.linux.edge import EdgeShaper

        driver = EdgeShaper(uplink=uplink, ifb=ifb, location_id=location)
    else:
        err.print("[red]error:[/red] --mode is `edge` or `lab`")
        raise typer.Exit(2)
    agent = Agent(
        location_id=location, controller=controller, client_id=client_id,
        client_secret=secret, applier=Applier(driver, location),
        state_path=state_file or Path("/var/lib/iod-edge") / f"{location}.json",
        version=__version__, wait_seconds=wait, retry_max_seconds=retry_max,
        sample_seconds=sample_seconds or settings.traffic_sample_seconds,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent.run(stop)
    finally:
        agent.close()
