"""`iod users …`: the customer portal's people (iod.portal). A new user gets a one-time
sign-in link to choose a password; no mail server is needed: the command prints it."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from iod.cli.common import console, err, open_db_or_exit
from iod.client.terminal import safe
from iod.infra.clock import SystemClock

users_app = typer.Typer(help="People of the customer portal.", no_args_is_help=True)
clock = SystemClock()


def portal_url(url: str | None) -> str:
    """Where the portal is served: --url, else IOD_ISSUER (the service's public URL) when
    set, else the URL `iod demo --url` remembered (`make run PORT=8090` gives it), else
    IOD_ISSUER's default."""
    import json

    from iod.cli.admin import demo_secret_file
    from iod.infra.config import get_settings

    settings = get_settings()
    if url is None and "issuer" not in settings.model_fields_set:
        try:
            remembered = json.loads(demo_secret_file().read_text(encoding="utf-8")).get("url")
        except (OSError, ValueError, AttributeError):
            remembered = None
        url = remembered if isinstance(remembered, str) else None
    return (url or settings.issuer).rstrip("/")


def sign_in_link(base: str, token: str) -> str:
    return f"{base}/portal/welcome?token={token}"


@users_app.command("create")
def users_create(
    customer: Annotated[str, typer.Option("--customer", help="The customer's id.")],
    email: Annotated[str, typer.Option("--email", help="The person's email address.")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")] = "viewer",
    url: Annotated[
        str | None, typer.Option(help="The service's public URL (default IOD_ISSUER).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create a portal user and print their one-time sign-in link."""
    from iod.audit import service as audit
    from iod.cli.admin import _fail, _hasher
    from iod.infra.config import get_settings
    from iod.infra.errors import ProblemError
    from iod.portal import service

    db = open_db_or_exit()
    policy = service.PortalPolicy.of(get_settings())
    hasher = _hasher()
    try:
        with db.write() as session:
            audit.act_for(session, audit.operator())
            user = service.create_user(session, clock, customer, email, role)
            token = service.issue_link(session, clock, hasher, user, policy)
            data: dict[str, Any] = {
                "id": user.id,
                "customer_id": user.customer_id,
                "email": user.email,
                "role": user.role,
                "sign_in_link": sign_in_link(portal_url(url), token),
                "link_valid_seconds": int(policy.link.total_seconds()),
            }
    except ProblemError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(data))
        return
    console.print(
        f"portal user {safe(data['id'])} {safe(data['email'])} ({data['role']}); "
        f"sign-in link, valid once for {data['link_valid_seconds'] // 60} minutes:",
        highlight=False,
    )
    print(data["sign_in_link"])


@users_app.command("link")
def users_link(
    email: Annotated[str, typer.Argument(help="The user's email address.")],
    url: Annotated[
        str | None, typer.Option(help="The service's public URL (default IOD_ISSUER).")
    ] = None,
) -> None:
    """A new one-time sign-in link for a user (a forgotten password)."""
    from iod.audit import service as audit
    from iod.cli.admin import _hasher
    from iod.infra.config import get_settings
    from iod.portal import repository, service

    db = open_db_or_exit()
    policy = service.PortalPolicy.of(get_settings())
    with db.write() as session:
        audit.act_for(session, audit.operator())
        user = repository.user_by_email(session, email.strip().lower())
        if user is None:
            err.print(f"[red]error:[/red] no portal user {safe(email)}")
            raise typer.Exit(4)
        token = service.issue_link(session, clock, _hasher(), user, policy)
    print(sign_in_link(portal_url(url), token))


@users_app.command("list")
def users_list(
    customer: Annotated[str | None, typer.Option("--customer", help="Only this one's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Portal users, by email."""
    from sqlalchemy import select

    from iod.models import PortalUser

    db = open_db_or_exit()
    with db.read() as session:
        query = select(PortalUser).order_by(PortalUser.email)
        if customer:
            query = query.where(PortalUser.customer_id == customer)
        rows = [
            {
                "id": u.id,
                "customer_id": u.customer_id,
                "email": u.email,
                "role": u.role,
                "state": (
                    "disabled" if u.disabled_at else "active" if u.password_hash else "invited"
                ),
            }
            for u in session.scalars(query)
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        console.print(
            f"{safe(row['id'])}  {safe(row['email'])}  {row['role']}  {row['state']}  "
            f"{safe(row['customer_id'])}",
            highlight=False,
        )
