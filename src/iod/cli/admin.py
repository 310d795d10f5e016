"""Admin commands: customers, clients, signing keys, locations, the audit log, the demo data.

Every change is recorded in the audit log in its own transaction, as operator = the OS user,
source "cli". The server's modules are imported inside the commands, so that `iod --help` and
the customer commands do not pay for them (see main.py). Everything printed that came from the
database goes through `safe()`: names, descriptions and details are customers' text.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from iod.cli.common import console, err, open_db_or_exit
from iod.client.terminal import safe
from iod.domain.bandwidth import format_bandwidth
from iod.infra.clock import SystemClock, rfc3339
from iod.infra.errors import ProblemError
from iod.locations import catalog

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from iod.auth import keys
    from iod.auth.passwords import SecretHasher
    from iod.customers import service as customers
    from iod.infra.db import Database
    from iod.models import Customer

customers_app = typer.Typer(help="Customers: who owns connections.", no_args_is_help=True)
clients_app = typer.Typer(help="API clients of customers.", no_args_is_help=True)
locations_app = typer.Typer(help="The location catalog.", no_args_is_help=True)

clock = SystemClock()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
MAX_GRACE = timedelta(days=30)


def _db() -> Database:
    return open_db_or_exit()


def _stored_key_ids() -> set[str]:
    from iod.customers import repository as customers_repo

    db = _db()
    try:
        return customers_repo.secret_hash_key_ids(db)
    finally:
        db.dispose()


def _hasher() -> SecretHasher:
    """The key the API processes verify client secrets with (IOD_SECRET_HASH_KEY_FILE)."""
    from iod.auth.passwords import SecretHashKeyError, open_hasher
    from iod.infra.config import get_settings
    from iod.infra.logging import configure_logging

    settings = get_settings()
    # Its logs (a key created, a key file others may read) on stderr, and only warnings at
    # the default level: stdout is the command's own output (--json), as `iod network` does.
    level = "WARNING" if settings.log_level.upper() == "INFO" else settings.log_level
    configure_logging(level, settings.log_json)
    try:
        return open_hasher(
            settings.effective_secret_hash_key_file,
            stored_key_ids=_stored_key_ids,
        )
    except SecretHashKeyError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc


_DURATION = re.compile(
    r"(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m(?:in)?)?\s*"
    r"(?:(?P<s>\d+)\s*s)?",
    re.IGNORECASE,
)


def _duration(text: str, option: str) -> timedelta:
    """90s, 15m, 24h, 1d2h, or 0."""
    match = _DURATION.fullmatch(text.strip())
    if text.strip() == "0":
        return timedelta(0)
    if match is None or not any(match.groupdict().values()):
        raise typer.BadParameter(
            f"{text!r} is not a duration such as 90s, 15m, 24h or 1d2h", param_hint=option
        )
    parts = {key: int(value or 0) for key, value in match.groupdict().items()}
    try:
        return timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"],
                         seconds=parts["s"])  # fmt: skip
    except OverflowError:
        raise typer.BadParameter(f"{text!r} is longer than any duration here",
                                 param_hint=option) from None  # fmt: skip


def _audit(
    session: Session,
    action: str,
    target_type: str,
    target_id: str,
    *,
    customer_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """The audit record of an operator's change, in the transaction of the change."""
    from iod.audit import service as audit

    audit.record(session, clock, audit.operator(), action, target_type, target_id,
                 customer_id=customer_id, details=details)  # fmt: skip


def _when(value: datetime | None) -> str:
    return rfc3339(value.replace(microsecond=0)) if value is not None else ""


def _fail(exc: ProblemError) -> typer.Exit:
    if len(exc.errors) == 1:  # the detail already says it: "pointer: what is wrong"
        item = exc.errors[0]
        err.print(f"[red]error:[/red] {safe(item.pointer or '/')}: {safe(item.detail)}")
        return typer.Exit(1)
    err.print(f"[red]error:[/red] {safe(exc.detail)}")
    for item in exc.errors:
        err.print(f"  {safe(item.pointer or '/')}: {safe(item.detail)}")
    return typer.Exit(1)


def _print(data: dict[str, Any], as_json: bool, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(data))
    else:
        console.print(human, highlight=False)


CustomerNumberOption = Annotated[
    str | None,
    typer.Option(
        "--customer-number",
        help="Its Lumen customer number (x-customer-number), e.g. 1-ABCDE. Default: a new one.",
    ),
]


@customers_app.command("create")
def customers_create(
    name: str, customer_number: CustomerNumberOption = None, as_json: JsonFlag = False
) -> None:
    """Create a customer."""
    from iod.customers import service as customers

    try:
        with _db().write() as session:
            customer = customers.create_customer(session, clock, name, customer_number)
            _audit_customer_created(session, customer)
    except ProblemError as exc:
        raise _fail(exc) from exc
    _print(
        {"id": customer.id, "name": customer.name, "customer_number": customer.customer_number},
        as_json,
        f"customer {safe(customer.id)} (customer number {safe(customer.customer_number or '')})",
    )


@customers_app.command("set-number")
def customers_set_number(customer_id: str, customer_number: str, as_json: JsonFlag = False) -> None:
    """Set a customer's Lumen customer number: its clients send it as x-customer-number on
    the Lumen-compatible paths (docs/lumen.md)."""
    from iod.customers import service as customers

    try:
        with _db().write() as session:
            before = _customer_number(session, customer_id)
            customer = customers.set_customer_number(session, customer_id, customer_number)
            _audit(
                session,
                "customer.set_number",
                "customer",
                customer.id,
                customer_id=customer.id,
                details={"from": before, "to": customer.customer_number},
            )
    except ProblemError as exc:
        raise _fail(exc) from exc
    _print(
        {"id": customer.id, "customer_number": customer.customer_number},
        as_json,
        f"customer {safe(customer.id)}: customer number {safe(customer_number)}",
    )


def _customer_number(session: Session, customer_id: str) -> str | None:
    from iod.customers import repository as customers_repo

    customer = customers_repo.get_customer(session, customer_id)
    return customer.customer_number if customer is not None else None


@customers_app.command("list")
def customers_list(as_json: JsonFlag = False) -> None:
    """List customers."""
    from iod.customers import repository as customers_repo

    with _db().read() as session:
        rows = [
            {"id": c.id, "name": c.name, "customer_number": c.customer_number}
            for c in customers_repo.list_customers(session)
        ]
    if as_json:
        typer.echo(json.dumps({"customers": rows}))
        return
    table = Table("id", "name", "customer_number")
    for row in rows:
        table.add_row(safe(row["id"]), safe(row["name"]), safe(row["customer_number"] or ""))
    console.print(table)


@clients_app.command("create")
def clients_create(
    customer: Annotated[str, typer.Option(help="The customer id.")],
    scopes: Annotated[str, typer.Option(help="Space-separated: read, write.")] = "read write",
    name: Annotated[str, typer.Option(help="A label for the client.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Create an API client; its secret is shown only now."""
    from iod.customers import service as customers

    try:
        with _db().write() as session:
            new = customers.create_client(
                session, clock, customer, scopes, hasher=_hasher(), name=name
            )
            _audit_client_created(session, new, name)
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


def _audit_customer_created(session: Session, customer: Customer) -> None:
    _audit(
        session,
        "customer.create",
        "customer",
        customer.id,
        customer_id=customer.id,
        details={"name": customer.name},
    )


def _audit_client_created(session: Session, new: customers.NewClient, name: str) -> None:
    _audit(
        session,
        "client.create",
        "client",
        new.client_id,
        customer_id=new.customer_id,
        details={"scopes": " ".join(new.scopes), "name": name},
    )


def _set_enabled(client_id: str, enabled: bool, as_json: bool) -> None:
    from iod.customers import service as customers

    try:
        with _db().write() as session:
            client = customers.set_client_enabled(session, clock, client_id, enabled)
            action = "client.enable" if enabled else "client.disable"
            _audit(
                session,
                action,
                "client",
                client_id,
                customer_id=client.customer_id,
            )
    except ProblemError as exc:
        raise _fail(exc) from exc
    state = "enabled" if enabled else "disabled"
    _print(
        {"client_id": client_id, "enabled": enabled}, as_json, f"client {safe(client_id)} {state}"
    )


@clients_app.command("disable")
def clients_disable(client_id: str, as_json: JsonFlag = False) -> None:
    """Disable a client: new tokens are refused and existing ones stop within seconds."""
    _set_enabled(client_id, False, as_json)


@clients_app.command("enable")
def clients_enable(client_id: str, as_json: JsonFlag = False) -> None:
    """Enable a disabled client again."""
    _set_enabled(client_id, True, as_json)


@clients_app.command("rotate-secret")
def clients_rotate_secret(
    client_id: str,
    grace: Annotated[
        str,
        typer.Option(
            help="How long the current secret (and the tokens obtained with it) keeps working: "
            "90s, 15m, 24h, 7d; 0 ends it now (a leaked secret). At most 30d."
        ),
    ] = "24h",
    as_json: JsonFlag = False,
) -> None:
    """Issue a new secret for a client and print it once; the old one works for --grace."""
    from iod.customers import repository as customers_repo
    from iod.customers import service as customers

    period = _duration(grace, "--grace")
    if period > MAX_GRACE:
        raise typer.BadParameter("at most 30d", param_hint="--grace")
    try:
        with _db().write() as session:
            rotated = customers.rotate_secret(session, clock, client_id, period, hasher=_hasher())
            client = customers_repo.get_client(session, client_id)
            assert client is not None
            _audit(
                session,
                "client.rotate_secret",
                "client",
                client_id,
                customer_id=client.customer_id,
                details={
                    "graceSeconds": int(period.total_seconds()),
                    "previousSecretValidUntil": _when(rotated.previous_valid_until) or None,
                    "secretGeneration": client.secret_generation,
                },
            )
    except ProblemError as exc:
        raise _fail(exc) from exc
    until = rotated.previous_valid_until
    data = {
        "client_id": client_id,
        "client_secret": rotated.client_secret,
        "previous_secret_valid_until": _when(until) or None,
    }
    _print(
        data,
        as_json,
        f"client_id:     {safe(client_id)}\nclient_secret: {rotated.client_secret}\n"
        "(shown only now) "
        + (
            f"the previous secret works until {_when(until)}"
            if until
            else "the previous secret no longer works"
        ),
    )


@clients_app.command("list")
def clients_list(
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List clients (never their secrets)."""
    from iod.customers import repository as customers_repo

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
            safe(row["client_id"]), safe(row["customer_id"]), safe(row["scopes"]),
            safe(row["enabled"]),
        )  # fmt: skip
    console.print(table)


@locations_app.command("list")
def locations_list(as_json: JsonFlag = False) -> None:
    """List the catalog."""
    from iod.locations import repository as locations_repo
    from iod.locations import service as locations

    with _db().read() as session:
        rows = [locations.describe(loc) for loc in locations_repo.list_all(session)]
    if as_json:
        typer.echo(json.dumps({"locations": rows}))
        return
    table = Table("id", "name", "address", "capacity", "tiers", "ipv4 pool")
    for row in rows:
        table.add_row(safe(row["id"]), safe(row["name"]), safe(row["address"]),
                      safe(row["capacity"]), safe(", ".join(row["tiers"])),
                      safe(row["ipv4Pool"]))  # fmt: skip
    console.print(table)


@locations_app.command("import")
def locations_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    as_json: JsonFlag = False,
) -> None:
    """Create or update locations from a JSON file: a list of {id, name, address, capacity,
    tiers?}, with capacity and tiers as bandwidth strings."""
    from iod.locations import service as locations

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/red] {safe(file)} is not JSON: {safe(exc)}")
        raise typer.Exit(1) from exc
    try:
        entries = locations.parse_catalog(data)
        with _db().write() as session:
            created, updated = locations.upsert(session, clock, entries)
            _audit(
                session,
                "location.import",
                "catalog",
                "locations",
                details={"created": created, "updated": updated, "ids": [e.id for e in entries]},
            )
    except ProblemError as exc:
        raise _fail(exc) from exc
    _print({"created": created, "updated": updated}, as_json,
           f"{created} created, {updated} updated")  # fmt: skip


def _demo_prices(session: Session) -> None:
    """The demo price book (money, issue 15): idempotent, versions are only added."""
    from iod.billing import demo as billing_demo
    from iod.billing import service as billing
    from iod.locations import repository as locations_repo

    demo_ids = {entry["id"] for entry in catalog.DEMO_LOCATIONS}
    places = [(loc.id, list(loc.tiers_mbps)) for loc in locations_repo.list_all(session)
              if loc.id in demo_ids]  # fmt: skip
    billing.import_prices(session, clock, billing_demo.demo_prices(places))


def demo_secret_file() -> Path:
    from iod.infra.config import get_settings

    return get_settings().data_dir / "demo-client.json"


DEMO_URL = "http://127.0.0.1:8080"


def demo(
    as_json: JsonFlag = False,
    as_env: Annotated[
        bool, typer.Option("--env", help='Print shell exports: eval "$(iod demo --env)".')
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            help="Where the API will be served. Default: what the last `iod demo --url` "
            "said (`make run PORT=…` passes it), else http://127.0.0.1:8080."
        ),
    ] = None,
) -> None:
    """Create the demo catalog, customer and client (idempotent) and print the credentials."""
    from iod.customers import repository as customers_repo
    from iod.customers import service as customers
    from iod.locations import repository as locations_repo
    from iod.locations import service as locations

    db = _db()
    secret_file = demo_secret_file()
    with db.write() as session:
        demo_catalog = locations.parse_catalog(catalog.DEMO_LOCATIONS)
        created, updated = locations.upsert(session, clock, demo_catalog)
        if created:
            _audit(
                session,
                "location.import",
                "catalog",
                "locations",
                details={
                    "created": created,
                    "updated": updated,
                    "demo": True,
                    "ids": [e.id for e in demo_catalog],
                },
            )
        _demo_prices(session)
        customer = customers_repo.find_customer_by_name(session, catalog.DEMO_CUSTOMER_NAME)
        if customer is None:
            customer = customers.create_customer(session, clock, catalog.DEMO_CUSTOMER_NAME)
            _audit_customer_created(session, customer)
        elif customer.customer_number is None:  # a demo customer older than issue 19
            customers.set_customer_number(session, customer.id, customers.new_customer_number())
        client = customers_repo.get_client(session, catalog.DEMO_CLIENT_ID)
        secret = None
        saved: dict[str, Any] = {}
        if secret_file.exists():
            saved = json.loads(secret_file.read_text(encoding="utf-8"))
        remembered = saved.get("url")
        if url is None:
            url = remembered if isinstance(remembered, str) else DEMO_URL
        if client is not None and saved:
            secret = saved.get("client_secret")
            if not isinstance(secret, str) or not customers.secret_matches(
                client, secret, _hasher()
            ):
                secret = None
        if secret is None:
            # First run, or the saved secret is gone: issue a fresh one.
            if client is None:
                new = customers.create_client(
                    session,
                    clock,
                    customer.id,
                    "read write",
                    hasher=_hasher(),
                    name="demo",
                    client_id=catalog.DEMO_CLIENT_ID,
                )
                _audit_client_created(session, new, "demo")
                secret = new.client_secret
            else:
                secret = customers.rotate_secret(
                    session, clock, catalog.DEMO_CLIENT_ID, hasher=_hasher()
                ).client_secret
                _audit(
                    session,
                    "client.rotate_secret",
                    "client",
                    catalog.DEMO_CLIENT_ID,
                    customer_id=customer.id,
                    details={"graceSeconds": 0, "demo": True},
                )
        client = customers_repo.get_client(session, catalog.DEMO_CLIENT_ID)
        if client is not None and not client.enabled:
            customers.set_client_enabled(session, clock, catalog.DEMO_CLIENT_ID, True)
            _audit(
                session,
                "client.enable",
                "client",
                catalog.DEMO_CLIENT_ID,
                customer_id=customer.id,
            )
        customer_id = customer.id
        customer_number = customer.customer_number
        location = locations_repo.get(session, catalog.DEMO_LOCATION_ID)
        assert location is not None
        tiers = [format_bandwidth(t) for t in location.tiers_mbps]
    # --env prints no link: it issues none (each link is an audit row and an event).
    portal_link = _demo_portal_user(db, customer_id, url, issue_link=not as_env)
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(
            {"client_id": catalog.DEMO_CLIENT_ID, "client_secret": secret, "url": url}, handle
        )
    data = {
        "customer_id": customer_id,
        "customer_number": customer_number,
        "client_id": catalog.DEMO_CLIENT_ID,
        "client_secret": secret,
        "location_id": catalog.DEMO_LOCATION_ID,
        "location_tiers": tiers,
        "portal_email": DEMO_PORTAL_EMAIL,
        "portal_sign_in_link": portal_link,
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
    from iod.infra.config import get_settings

    console.print(
        f"[bold]Portal[/bold] {url.rstrip('/')}/portal: the demo admin {DEMO_PORTAL_EMAIL} "
        "sets a password with this one-time link (valid for "
        f"{get_settings().portal_sign_in_link_seconds // 60} minutes):",
        highlight=False,
        soft_wrap=True,
    )
    print(f"  {portal_link}\n")


DEMO_PORTAL_EMAIL = "admin@demo.example"


def _demo_portal_user(db: Database, customer_id: str, url: str, *, issue_link: bool) -> str:
    """The demo customer's portal admin (created once) and, if asked, a fresh one-time
    sign-in link (else "")."""
    from iod.audit import service as audit
    from iod.cli.users import sign_in_link
    from iod.infra.config import get_settings
    from iod.portal import repository as portal_repo
    from iod.portal import service as portal

    with db.write() as session:
        audit.act_for(session, audit.operator())
        user = portal_repo.user_by_email(session, DEMO_PORTAL_EMAIL)
        if user is None:
            user = portal.create_user(session, clock, customer_id, DEMO_PORTAL_EMAIL, "admin")
        if not issue_link:
            return ""
        token = portal.issue_link(
            session, clock, _hasher(), user, portal.PortalPolicy.of(get_settings())
        )
    return sign_in_link(url.rstrip("/"), token)


# -- signing keys -----------------------------------------------------------------------------

keys_app = typer.Typer(help="Token signing keys: list, rotate, retire.", no_args_is_help=True)


def _key_row(info: keys.KeyInfo) -> dict[str, Any]:
    return {
        "kid": info.kid,
        "state": info.state,
        "created_at": _when(info.created_at),
        "activates_at": _when(info.activates_at),
        "retirable_at": _when(info.retirable_at) or None,
    }


@keys_app.command("list")
def keys_list(as_json: JsonFlag = False) -> None:
    """Every signing key: the one that signs, the next one, and old ones that still verify
    (until their last tokens expire) or may be retired."""
    from iod.auth import keys
    from iod.infra.config import get_settings

    settings = get_settings()
    with _db().read() as session:
        rows = [_key_row(i) for i in keys.describe(session, clock.now(), settings.token_ttl)]
    if as_json:
        typer.echo(json.dumps({"keys": rows}))
        return
    table = Table("kid", "state", "created", "signs from", "retirable from")
    for row in rows:
        table.add_row(
            safe(row["kid"]),
            safe(row["state"]),
            safe(row["created_at"]),
            safe(row["activates_at"]),
            safe(row["retirable_at"] or ""),
        )
    console.print(table)


@keys_app.command("rotate")
def keys_rotate(
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Sign with the new key at once (a compromised key). Processes that have not "
            "reloaded the keys refuse its tokens for up to a second.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Add a signing key. Every server publishes it within IOD_KEY_REFRESH_SECONDS and signs
    with it from twice that; the previous key keeps verifying its tokens until they expire."""
    from iod.auth import keys
    from iod.infra.config import get_settings
    from iod.infra.secure import key_encryption_key

    settings = get_settings()
    delay = timedelta(0) if now else timedelta(seconds=2 * settings.key_refresh_seconds)
    with _db().write() as session:
        previous = [
            i.kid
            for i in keys.describe(session, clock.now(), settings.token_ttl)
            if i.state == "signing"
        ]
        row = keys.rotate(session, clock.now(), delay, key_encryption_key(settings))
        info = next(
            i for i in keys.describe(session, clock.now(), settings.token_ttl) if i.kid == row.kid
        )
        # The replaced key's last token is issued when the new key activates.
        retirable = info.activates_at + timedelta(seconds=settings.token_ttl) + keys.CLOCK_LEEWAY
        _audit(
            session,
            "key.rotate",
            "signing_key",
            row.kid,
            details={
                "activatesAt": _when(info.activates_at),
                "replaces": previous[0] if previous else None,
            },
        )
    data = {
        **_key_row(info),
        "replaces": previous[0] if previous else None,
        "replaced_key_retirable_at": _when(retirable),
    }
    _print(
        data,
        as_json,
        f"key {row.kid} signs from {_when(info.activates_at)}; "
        + (
            f"{previous[0]} keeps verifying and may be retired from {_when(retirable)}"
            if previous
            else "there was no key before"
        ),
    )


@keys_app.command("retire")
def keys_retire(
    kid: Annotated[
        str,
        typer.Argument(
            help="The key's id, as `iod keys list` shows it. A kid is a base64url thumbprint "
            "and may start with '-': put it after '--' (iod keys retire -- -AbC...).",
        ),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Retire it even though tokens it signed may still be valid (they are "
            "refused within IOD_KEY_REFRESH_SECONDS): for a compromised key.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete a signing key that no longer signs, once no token it signed can still be valid
    (refused before that without --force). The private key is destroyed."""
    from iod.auth import keys
    from iod.infra.config import get_settings

    settings = get_settings()
    try:
        with _db().write() as session:
            info = keys.retire(session, clock.now(), kid, settings.token_ttl, force=force)
            _audit(
                session,
                "key.retire",
                "signing_key",
                kid,
                details={"forced": force, "state": info.state},
            )
    except ProblemError as exc:
        raise _fail(exc) from exc
    _print({"kid": kid, "retired": True, "forced": force}, as_json, f"key {safe(kid)} retired")


# -- audit log --------------------------------------------------------------------------------

audit_app = typer.Typer(
    help="The audit log: who changed what, when, from where.", no_args_is_help=True
)


def _since(text: str) -> datetime:
    """An RFC 3339 time (local if it has no offset) or a duration back from now (2h, 7d)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return clock.now() - _duration(text, "--since")
        except OverflowError:
            raise typer.BadParameter(f"{text!r} reaches back before the year 1",
                                     param_hint="--since") from None  # fmt: skip
    return moment if moment.tzinfo is not None else moment.astimezone()


@audit_app.command("list")
def audit_list(
    since: Annotated[
        str | None,
        typer.Option(
            help="From this time (2030-01-01T09:00, local unless it has an offset) "
            "or this long ago (90m, 24h, 7d)."
        ),
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    target: Annotated[
        str | None, typer.Option(help="Only this target: a connection, client, customer or key id.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The newest audit events first."""
    from iod.audit import service as audit

    start = _since(since) if since is not None else None
    with _db().read() as session:
        events = [
            audit.to_dict(e)
            for e in audit.query(
                session, since=start, customer_id=customer, target_id=target, limit=limit
            )
        ]
    if as_json:
        typer.echo(json.dumps({"events": events}))
        return
    table = Table("at", "actor", "source", "action", "target", "customer", "details")
    for event in events:
        who = f"{event['actor']} ({event['actorType']})"
        where = safe(event["source"]) + (
            f"\n{safe(event['requestId'])}" if event["requestId"] else ""
        )
        details = json.dumps({k: v for k, v in event["details"].items() if v is not None})
        table.add_row(
            safe(event["at"]),
            safe(who),
            where,
            safe(event["action"]),
            safe(event["target"]),
            safe(event["customerId"] or ""),
            safe(details),
        )
    console.print(table)
