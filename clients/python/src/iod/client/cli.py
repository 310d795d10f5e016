"""Customer commands: `iod login`, `iod connections …`, `iod bandwidth …`, on the SDK.

Unlike the admin commands they use the API, never the database. Credentials come from the
profile `iod login` saved, overridden by IOD_URL, IOD_CLIENT_ID and IOD_CLIENT_SECRET.

This module is the `iod` command of the iod-client distribution (`main`); the server's `iod`
adds the same commands to its own (`register`). It must stay quick to import: nothing of the
server, and only what the customer commands need.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from iod.client.terminal import clean, safe

if TYPE_CHECKING:  # the SDK (httpx, pydantic) is imported when a command runs, not for --help
    from iod.client import Client, Connection, IodError
    from iod.client.events import Follower
    from iod.client.models import BandwidthChange, BandwidthUpdateResult

connections_app = typer.Typer(
    help="Your connections, through the API (customer commands; see `iod login`).",
    no_args_is_help=True,
)
bandwidth_app = typer.Typer(
    help="Change a connection's bandwidth, now or later.", no_args_is_help=True
)

# Piped output (no terminal) would be cut to 80 columns, ids included: tables get room.
# No highlighting or emoji codes: what the API returns is printed as it is (see `safe`).
out = Console(
    highlight=False,
    emoji=False,
    width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "240")),
)
err = Console(stderr=True, highlight=False, emoji=False)

# Exit codes (also in the README).
EXIT_REFUSED = 1  # the API refused the request (400, other 4xx), or a wait cannot succeed
EXIT_USAGE = 2  # bad option, not logged in (Click uses 2 for usage errors too)
EXIT_AUTH = 3  # 401, 403: credentials refused, token rejected, missing scope
EXIT_NOT_FOUND = 4  # 404
EXIT_CONFLICT = 5  # 409: capacity, the connection's state
EXIT_UNAVAILABLE = 6  # unreachable, 5xx, an answer that is not the API's
EXIT_TIMEOUT = 7  # --wait ran out of time
EXIT_INTERRUPTED = 130  # Ctrl-C while waiting

ENV = {"url": "IOD_URL", "client_id": "IOD_CLIENT_ID", "client_secret": "IOD_CLIENT_SECRET"}
DEFAULT_URL = "http://127.0.0.1:8080"

ConnectionId = Annotated[str, typer.Argument(help="The connection's id (con_…).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
WaitFlag = Annotated[bool, typer.Option("--wait", help="Wait until it is done (a spinner).")]


# -- failures -------------------------------------------------------------------------------


def fail(code: int, message: str) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    line = " ".join(message.split())  # one line, then every control character shown
    err.print(f"[red]error:[/red] {safe(line)}", soft_wrap=True)
    raise typer.Exit(code)


def explain(exc: IodError) -> tuple[int, str]:
    """The exit code and the one-line message of an expected failure."""
    from iod.client import (
        ApiError,
        ConfigurationError,
        Conflict,
        Forbidden,
        NotFound,
        ServerError,
        TransportError,
        Unauthorized,
        UnexpectedResponse,
        WaitTimeout,
    )

    if isinstance(exc, Unauthorized):
        if exc.oauth_error:
            return EXIT_AUTH, (
                f"the credentials were refused ({exc.oauth_error}: {exc.detail}); "
                "check the client id and secret, or run `iod login` again"
            )
        return EXIT_AUTH, f"not authorized: {exc.detail}"
    if isinstance(exc, Forbidden):
        return EXIT_AUTH, f"not allowed: {exc.detail}"
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND, exc.detail
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT, exc.detail
    if isinstance(exc, ServerError):
        where = f"; request id {exc.request_id}" if exc.request_id else ""
        return EXIT_UNAVAILABLE, f"the server failed (HTTP {exc.status}{where}): {exc.detail}"
    if isinstance(exc, ApiError):
        return EXIT_REFUSED, exc.detail
    if isinstance(exc, TransportError):
        return EXIT_UNAVAILABLE, f"{exc}; is the server running and the URL right?"
    if isinstance(exc, UnexpectedResponse):
        return EXIT_UNAVAILABLE, f"{exc}; is the URL that of the API?"
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT, f"{exc}; it continues on the server"
    return EXIT_REFUSED, str(exc)


@contextmanager
def handled() -> Iterator[None]:
    """Expected failures become a message and an exit code, never a traceback."""
    from iod.client import IodError

    try:
        yield
    except IodError as exc:
        code, message = explain(exc)
        fail(code, message)


# -- the profile ----------------------------------------------------------------------------


def profile_path() -> Path:
    """`$XDG_CONFIG_HOME/iod/profile.json`, else `~/.config/iod/profile.json`."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "iod" / "profile.json"


def load_profile() -> dict[str, str]:
    path = profile_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot read the profile {path}: {exc.strerror}")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        fail(EXIT_USAGE, f"the profile {path} is damaged; run `iod login` again")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        err.print(f"warning: {safe(path)} is readable by others; chmod 600 it", soft_wrap=True)
    return {key: value for key, value in data.items() if key in ENV and isinstance(value, str)}


def save_profile(values: dict[str, str]) -> Path:
    """Writes the profile with mode 0600 (its directory 0700), atomically."""
    path = profile_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2)
        handle.write("\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def settings() -> dict[str, str]:
    """The profile, each value overridden by its environment variable."""
    values = load_profile()
    for key, name in ENV.items():
        if os.environ.get(name):
            values[key] = os.environ[name]
    return values


def client() -> Client:
    from iod.client import Client

    values = settings()
    missing = [ENV[key] for key in ENV if not values.get(key)]
    if missing:
        fail(
            EXIT_USAGE,
            "not logged in: run `iod login`, or set IOD_URL, IOD_CLIENT_ID and "
            f"IOD_CLIENT_SECRET (missing: {', '.join(missing)})",
        )
    with handled():
        return Client(values["url"], values["client_id"], values["client_secret"])


# -- output ---------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data))


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def pending_text(connection: Connection) -> str:
    return "; ".join(
        f"{p.bandwidth} {p.status} for {when(p.effective_date)}"
        for p in connection.pending_bandwidth_changes
    )


def show_connection(connection: Connection) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("id", connection.id),
        ("status", connection.status),
        ("bandwidth", connection.bandwidth),
        ("location", connection.location),
        ("ipv4 block", connection.ipv4_block or ""),
        ("description", connection.description or ""),
        ("created", when(connection.created_at)),
        ("updated", when(connection.updated_at)),
    ]
    for name, value in rows:
        table.add_row(name, safe(value))
    out.print(table)
    if connection.pending_bandwidth_changes:
        width = max(len(change.id) for change in connection.pending_bandwidth_changes)
        pending = Table(
            Column("pending change", no_wrap=True, min_width=width),
            "bandwidth",
            "effective",
            "status",
        )
        for change in connection.pending_bandwidth_changes:
            pending.add_row(
                safe(change.id),
                safe(change.bandwidth),
                when(change.effective_date),
                safe(change.status),
            )
        out.print(pending)


class Spinner:
    """A spinner on stderr while waiting, when stderr is a terminal; silent otherwise."""

    def __init__(self, message: str) -> None:
        self.status = err.status(safe(message)) if err.is_terminal else None

    def __enter__(self) -> Spinner:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def update(self, message: str) -> None:
        if self.status is not None:
            self.status.update(safe(message))


@contextmanager
def waiting(message: str, afterwards: str) -> Iterator[Spinner]:
    """A spinner; Ctrl-C ends the wait (not the work on the server) with `afterwards`."""
    try:
        with Spinner(message) as spinner:
            yield spinner
    except KeyboardInterrupt:
        fail(EXIT_INTERRUPTED, f"stopped waiting; {afterwards}")


# -- login ----------------------------------------------------------------------------------


def login(
    url: Annotated[
        str | None, typer.Option("--url", help="The API, e.g. https://iod.example.com.")
    ] = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="Your client id.")] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(
            "--client-secret",
            help="Your client secret; asked when missing (options show in `ps`).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check your API credentials and save them for the customer commands.

    Missing values come from IOD_URL, IOD_CLIENT_ID and IOD_CLIENT_SECRET, or are asked. The
    profile ($XDG_CONFIG_HOME/iod/profile.json, else ~/.config/iod/profile.json) has mode 0600;
    the variables override it.
    """
    saved = load_profile()
    url = url or os.environ.get(ENV["url"])
    client_id = client_id or os.environ.get(ENV["client_id"])
    client_secret = client_secret or os.environ.get(ENV["client_secret"])
    try:
        if not (url and client_id and client_secret) and not sys.stdin.isatty():
            raise typer.Abort  # nobody to ask
        url = url or typer.prompt("API URL", default=saved.get("url", DEFAULT_URL), err=True)
        client_id = client_id or typer.prompt("Client id", default=saved.get("client_id"), err=True)
        client_secret = client_secret or typer.prompt("Client secret", hide_input=True, err=True)
    except typer.Abort:
        fail(
            EXIT_USAGE,
            "login needs a URL, a client id and a secret: pass --url, --client-id and "
            "--client-secret, or set IOD_URL, IOD_CLIENT_ID and IOD_CLIENT_SECRET",
        )
    assert url and client_id and client_secret
    from iod.client import Client

    with handled():
        with Client(url, client_id, client_secret) as api:
            token = api.authenticate()
        url = api.url
    path = save_profile({"url": url, "client_id": client_id, "client_secret": client_secret})
    if as_json:
        print_json({"url": url, "client_id": client_id, "scope": token.scope, "profile": str(path)})
        return
    out.print(
        f"logged in to {safe(url)} as {safe(client_id)} (scopes: {safe(token.scope)}); "
        f"profile saved to {safe(path)}",
        soft_wrap=True,
    )


# -- connections ----------------------------------------------------------------------------


@connections_app.command("list")
def connections_list(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", help="Only these statuses (repeatable); terminated ones only when asked."
        ),
    ] = None,
    location: Annotated[str | None, typer.Option("--location", help="Only this location.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List your connections (all but terminated ones, unless --status says otherwise)."""
    with handled(), client() as api:
        rows = list(api.list_connections(status=status, location=location))
    if as_json:
        print_json({"connections": [row.to_json() for row in rows]})
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    fixed = 0
    for name in ("id", "status", "bandwidth", "location"):
        widest = max([len(name)] + [len(clean(getattr(row, name))) for row in rows])
        table.add_column(name, no_wrap=True, min_width=widest)
        fixed += widest
    # The two free-text columns share what the others leave (a space at each edge, two
    # between columns), cut short with an ellipsis: left unbounded, a long pending list made
    # rich drop the other columns instead. On a narrow terminal the description goes.
    room = out.width - fixed - 2 * 4 - 2
    described = room - 2 >= 2 * len("description")
    pending_room = (room - 2) * 3 // 5 if described else room
    table.add_column("pending", no_wrap=True, overflow="ellipsis", max_width=max(pending_room, 7))
    if described:
        table.add_column("description", no_wrap=True, overflow="ellipsis",
                         max_width=room - 2 - pending_room)  # fmt: skip
    for row in rows:
        table.add_row(
            safe(row.id),
            safe(row.status),
            safe(row.bandwidth),
            safe(row.location),
            safe(
                ", ".join(
                    f"{p.bandwidth} {p.effective_date.astimezone():%m-%d %H:%M}"
                    for p in row.pending_bandwidth_changes
                )
            ),
            *([safe(row.description or "")] if described else []),
        )
    out.print(table)


@connections_app.command("get")
def connections_get(connection_id: ConnectionId, as_json: JsonFlag = False) -> None:
    """Show one connection and its pending bandwidth changes."""
    with handled(), client() as api:
        connection = api.get_connection(connection_id)
    if as_json:
        print_json(connection.to_json())
    else:
        show_connection(connection)


@connections_app.command("create")
def connections_create(
    location: Annotated[str, typer.Option("--location", help="A location id.")],
    bandwidth: Annotated[str, typer.Option("--bandwidth", help='e.g. "1 Gbps".')],
    description: Annotated[
        str | None, typer.Option("--description", help="Your own reference.")
    ] = None,
    wait: WaitFlag = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds --wait waits at most.", min=0)
    ] = 300.0,
    as_json: JsonFlag = False,
) -> None:
    """Order a connection at a location; with --wait, return once it is active."""
    with handled(), client() as api:
        connection = api.create_connection(location, bandwidth, description)
        if wait:
            afterwards = f"follow it with `iod connections watch {connection.id}`"
            with waiting(f"provisioning {connection.id}…", afterwards) as spinner:
                connection = api.wait_until(
                    connection.id,
                    "active",
                    timeout=timeout,
                    on_poll=lambda c: spinner.update(f"{c.id} is {c.status}…"),
                )
    if as_json:
        print_json(connection.to_json())
        return
    out.print(f"connection {safe(connection.id)} is {safe(connection.status)}", soft_wrap=True)
    show_connection(connection)


def state_of(connection: Connection) -> tuple[Any, ...]:
    pending = tuple((p.id, p.status, p.bandwidth) for p in connection.pending_bandwidth_changes)
    return connection.status, connection.bandwidth, pending


@connections_app.command("watch")
def connections_watch(
    connection_id: ConnectionId,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Stop after so many seconds.", min=0)
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between polls.", min=0.2)
    ] = 1.0,
    as_json: JsonFlag = False,
) -> None:
    """Follow a connection's status, bandwidth and pending changes live, one line per change
    (--json: one JSON document per line), until Ctrl-C, --timeout or termination."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[Any, ...] | None = None
    with handled(), client() as api, Spinner(f"watching {connection_id}; Ctrl-C stops") as spin:
        from iod.client.events import READ_TIMEOUT, StreamUnavailable

        # Woken by the connection's events on the stream; polls where it is unavailable.
        stream: Follower | None = api.follower(
            connection_id=connection_id,
            read_timeout=max(1.0, min(READ_TIMEOUT, timeout if timeout is not None else 1e9)),
        )
        try:
            assert stream is not None
            stream.open()
        except StreamUnavailable:
            stream = None
        try:
            while True:
                connection = api.get_connection(connection_id)
                state = state_of(connection)
                if state != last:
                    last = state
                    if as_json:
                        print_json(connection.to_json())
                    else:
                        pending = pending_text(connection)
                        out.print(
                            f"{datetime.now().strftime('%H:%M:%S')} {safe(connection.id)}: "
                            f"{safe(connection.status)}, {safe(connection.bandwidth)}"
                            + (f" (pending: {safe(pending)})" if pending else ""),
                            soft_wrap=True,
                        )
                spin.update(
                    f"watching {connection.id}: {connection.status}, {connection.bandwidth}; "
                    "Ctrl-C stops"
                )
                if connection.status == "terminated":
                    return
                pause = interval
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        return
                if stream is None:
                    time.sleep(pause)
                    continue
                try:
                    stream.next()
                except StreamUnavailable:
                    stream = None
        except KeyboardInterrupt:
            return
        finally:
            if stream is not None:
                stream.close()


# -- events ---------------------------------------------------------------------------------

events_app = typer.Typer(
    help="The customer's events (what happened to its connections).", no_args_is_help=True
)


@events_app.command("tail")
def events_tail(
    types: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only types starting with this (repeatable)."),
    ] = None,
    connection_id: Annotated[
        str | None, typer.Option("--connection", help="Only this connection's events.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--after", help="Start after this event id (default: from now on)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the customer's events as they happen (--json: one JSON document per line),
    until Ctrl-C. Follows the event stream, or long-polls the feed where it is unavailable."""
    with handled(), client() as api:
        try:
            for event in api.events(
                after=since or "now", types=types or (), connection_id=connection_id
            ):
                if as_json:
                    print_json(event)
                    continue
                data = event.get("data") or {}
                details = ", ".join(
                    f"{safe(k)}={safe(v)}"
                    for k, v in data.items()
                    if k != "connectionId" and v is not None
                )
                out.print(
                    f"{safe(event.get('occurredAt', ''))} {safe(event.get('type', ''))} "
                    f"{safe(event.get('connectionId', ''))} {details}".rstrip(),
                    soft_wrap=True,
                    highlight=False,
                )
        except KeyboardInterrupt:
            return


# -- bandwidth ------------------------------------------------------------------------------

_DURATION = re.compile(
    r"(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m(?:in)?)?\s*"
    r"(?:(?P<s>\d+)\s*s)?",
    re.IGNORECASE,
)


def parse_duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match.groupdict().values()):
        fail(EXIT_USAGE, f"--in: {text!r} is not a duration such as 90s, 15m, 2h or 1d2h")
    parts = {key: int(value or 0) for key, value in match.groupdict().items()}
    return timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])


def parse_at(text: str, option: str = "--at") -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(
            EXIT_USAGE,
            f"{option}: {text!r} is not a date-time such as 2030-01-01T09:00 (local time) or "
            "2030-01-01T09:00:00Z",
        )
    if moment.tzinfo is not None:
        return moment
    local = moment.astimezone()  # a repeated local time (autumn): its first occurrence
    if local.replace(tzinfo=None) != moment:  # a local time the clocks skip (spring)
        fail(
            EXIT_USAGE,
            f"{option}: {text!r} does not exist in this computer's time zone (the clocks skip "
            f"it); give another time, or one with its UTC offset, such as "
            f"{moment:%Y-%m-%dT%H:%M}{local.isoformat()[-6:]}",
        )
    return local


def effective_date(at: str | None, in_: str | None) -> datetime | None:
    if at is not None and in_ is not None:
        fail(EXIT_USAGE, "give --at or --in, not both")
    if at is not None:
        return parse_at(at)
    if in_ is not None:
        try:
            return (datetime.now(UTC) + parse_duration(in_)).replace(microsecond=0)
        except OverflowError:  # past what a date holds (the year 9999)
            fail(EXIT_USAGE, f"--in: {in_!r} is too far ahead")
    return None


@bandwidth_app.command("set")
def bandwidth_set(
    connection_id: ConnectionId,
    bandwidth: Annotated[str, typer.Argument(help='The new bandwidth, e.g. "500 Mbps".')],
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="When: 2030-01-01T09:00 (local time) or with an offset (Z, +02:00)."
        ),
    ] = None,
    in_: Annotated[
        str | None, typer.Option("--in", help="When, from now: 90s, 15m, 2h, 1d2h.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="A boost: go back to the bandwidth before it at this time (like --at).",
        ),
    ] = None,
    wait: WaitFlag = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Seconds --wait waits after the effective time.", min=0),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Change a connection's bandwidth now, or later with --at or --in; with --wait, return
    once it is in force."""
    effective = effective_date(at, in_)
    revert = parse_at(until, "--until") if until is not None else None
    result: BandwidthUpdateResult
    with handled(), client() as api:
        if wait:
            afterwards = f"follow it with `iod connections watch {connection_id}`"
            with waiting(f"changing {connection_id} to {bandwidth}…", afterwards) as spinner:
                budget = (
                    None
                    if timeout is None
                    else timeout
                    + max(
                        0.0, (effective - datetime.now(UTC)).total_seconds() if effective else 0.0
                    )
                )
                result = api.update_bandwidth(
                    connection_id,
                    bandwidth,
                    effective,
                    revert_at=revert,
                    wait=True,
                    timeout=budget,
                    on_poll=lambda c: spinner.update(
                        f"{c.id}: {c.bandwidth} in force"
                        + (f", pending {pending_text(c)}" if c.pending_bandwidth_changes else "")
                    ),
                )
        else:
            result = api.update_bandwidth(connection_id, bandwidth, effective, revert_at=revert)
    if as_json:
        print_json(result.to_json())
        return
    change = result.change
    if change is None:
        out.print(f"{result.id} will have {bandwidth} then anyway: no change recorded")
    elif change.status == "applied":
        out.print(
            f"{safe(change.bandwidth)} in force on {safe(result.id)} "
            f"(change {safe(change.id)} applied)",
            soft_wrap=True,
        )
    else:
        out.print(
            f"change {safe(change.id)} accepted: {safe(change.bandwidth)} on {safe(result.id)} "
            f"from {when(change.effective_date)} ({safe(change.status)}); "
            f"`iod connections watch {safe(result.id)}` follows it",
            soft_wrap=True,
        )
    show_connection(result)


def change_rows(changes: list[BandwidthChange]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("change", "bandwidth", "from", "effective", "status", "applied"):
        table.add_column(name, no_wrap=True)
    table.add_column("note", overflow="fold")
    for ch in changes:
        note = ch.failure_reason or (f"reverts {ch.revert_of}" if ch.revert_of else "")
        table.add_row(
            safe(ch.id), safe(ch.bandwidth), safe(ch.from_bandwidth or ""),
            when(ch.effective_date), safe(ch.status), when(ch.applied_at), safe(note),
        )  # fmt: skip
    return table


@bandwidth_app.command("changes")
def bandwidth_changes(connection_id: ConnectionId, as_json: JsonFlag = False) -> None:
    """List a connection's bandwidth changes, past and pending."""
    with handled(), client() as api:
        changes = api.list_bandwidth_changes(connection_id)
    if as_json:
        print_json({"bandwidthChanges": [ch.to_json() for ch in changes]})
        return
    out.print(change_rows(changes))


@bandwidth_app.command("cancel")
def bandwidth_cancel(
    connection_id: ConnectionId,
    change_id: Annotated[str, typer.Argument(help="The change id (see `iod bandwidth changes`).")],
    as_json: JsonFlag = False,
) -> None:
    """Cancel a change that is still scheduled (a boost's revert is cancelled with it)."""
    with handled(), client() as api:
        change = api.cancel_bandwidth_change(connection_id, change_id)
    if as_json:
        print_json(change.to_json())
        return
    out.print(f"change {safe(change.id)} {safe(change.status)}", soft_wrap=True)


def _act(connection_id: str, action: str, as_json: bool) -> None:
    with handled(), client() as api:
        connection = getattr(api, action)(connection_id)
    if as_json:
        print_json(connection.to_json())
        return
    out.print(
        f"{safe(connection.id)}: {action} accepted; now {safe(connection.status)}, heading to "
        f"{safe(connection.target_status or connection.status)}",
        soft_wrap=True,
    )


@connections_app.command("suspend")
def connections_suspend(connection_id: ConnectionId, as_json: JsonFlag = False) -> None:
    """Suspend a connection: traffic blocked, configuration kept."""
    _act(connection_id, "suspend", as_json)


@connections_app.command("resume")
def connections_resume(connection_id: ConnectionId, as_json: JsonFlag = False) -> None:
    """Resume a suspended connection."""
    _act(connection_id, "resume", as_json)


@connections_app.command("terminate")
def connections_terminate(
    connection_id: ConnectionId,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Terminate a connection: configuration removed, the record stays readable. It cannot be
    undone, so it asks first unless --yes (without a terminal to ask, --yes is needed)."""
    if not yes:
        if not sys.stdin.isatty():
            fail(
                EXIT_USAGE,
                f"terminating {connection_id} cannot be undone: "
                "confirm with --yes (there is no terminal to ask)",
            )
        try:
            confirmed = typer.confirm(
                f"Terminate {clean(connection_id)}? This cannot be undone", err=True
            )
        except typer.Abort:  # Ctrl-D or Ctrl-C at the question
            confirmed = False
        if not confirmed:
            fail(EXIT_REFUSED, f"{connection_id} not terminated")
    _act(connection_id, "terminate", as_json)


# -- the command ----------------------------------------------------------------------------


def version_text() -> str:
    """`iod <version> (<distribution>)`: the server's distribution when it is installed (it
    includes these commands), else the SDK's."""
    from importlib import metadata

    for distribution in ("internet-on-demand", "iod-client"):
        try:
            return f"iod {metadata.version(distribution)} ({distribution})"
        except metadata.PackageNotFoundError:
            continue
    return "iod (not installed: running from a source tree)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options of `iod` itself (the callback of the server's command too)."""


def register(target: typer.Typer) -> None:
    """Adds the customer commands to an `iod` command (this module's, or the server's)."""
    target.command("login")(login)
    target.add_typer(connections_app, name="connections")
    target.add_typer(bandwidth_app, name="bandwidth")
    target.add_typer(events_app, name="events")
    from iod.client.schedules_cli import schedules_app  # needs this module's helpers

    target.add_typer(schedules_app, name="schedules")
    from iod.client.webhooks_cli import webhooks_app

    target.add_typer(webhooks_app, name="webhooks")
    from iod.client import money_cli  # money (issue 15): catalog, quote, usage, statements

    money_cli.register(target)


app = typer.Typer(
    help="Internet On-Demand: your connections through the API (iod login first).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
app.callback()(root)
register(app)


def main() -> None:
    """The `iod` command of the iod-client distribution (the customer commands alone)."""
    app()


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[int | None], ceiling: int) -> str:
    """One character per bin, scaled to `ceiling` (the tier); a blank where no sample."""
    if ceiling <= 0:
        ceiling = max((v for v in values if v is not None), default=0) or 1
    out = []
    for value in values:
        if value is None:
            out.append(" ")
            continue
        level = min(len(SPARKS) - 1, int(value / ceiling * (len(SPARKS) - 1) + 0.5))
        out.append(SPARKS[level])
    return "".join(out)


def _rate(bps: int) -> str:
    for unit, size in (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)):
        if bps >= size:
            return f"{bps / size:.1f} {unit}"
    return f"{bps} bps"


@connections_app.command("traffic")
def connections_traffic(
    connection_id: ConnectionId,
    start: Annotated[
        str | None, typer.Option("--from", help="Start (ISO 8601 with offset); default 1 h ago.")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="End; default now.")] = None,
    step: Annotated[int | None, typer.Option("--step", min=1, help="Seconds per bin.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Measured traffic of a connection: a sparkline each way against its tier, with
    average, peak, 95th percentile and utilisation."""
    with handled(), client() as api:
        traffic = api.traffic(connection_id, start, end, step)
    if as_json:
        print_json(traffic.to_json())
        return
    tier = max((p.tier_mbps for p in traffic.points), default=0) * 1_000_000
    out.print(
        f"{safe(traffic.connection_id)}  {traffic.bandwidth}  "
        f"{traffic.start.astimezone():%m-%d %H:%M} → {traffic.to.astimezone():%m-%d %H:%M}, "
        f"{traffic.step} s bins, {traffic.samples} samples",
        highlight=False,
    )
    for label, values, summary in (
        ("in ", [p.in_bps for p in traffic.points], traffic.inbound),
        ("out", [p.out_bps for p in traffic.points], traffic.outbound),
    ):
        out.print(
            f"{label} {sparkline(values, tier)}  avg {_rate(summary.average_bps)}, "
            f"peak {_rate(summary.peak_bps)}, p95 {_rate(summary.p95_bps)}, "
            f"{summary.utilisation:.0%} of the tier",
            highlight=False,
        )
