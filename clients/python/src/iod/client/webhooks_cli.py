"""`iod webhooks …`: manage webhook endpoints through the API, and `listen`, which follows
the event stream and forwards each event, signed as the service would sign it, to a local
URL (to develop a receiver without a public address).

Imported by `iod.client.cli.register`; the SDK (httpx, pydantic) only when a command runs.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from iod.client.cli import JsonFlag, client, err, handled, out, print_json
from iod.client.terminal import safe

webhooks_app = typer.Typer(
    help="Webhook endpoints: where the service POSTs your events, signed.",
    no_args_is_help=True,
)
PATH = "/internet-on-demand/webhook-endpoints"
EndpointId = Annotated[str, typer.Argument(help="The webhook endpoint's id (whe_…).")]
Types = Annotated[
    list[str] | None,
    typer.Option(
        "--type", help="Only these event types or prefixes, e.g. `connection.` (repeatable)."
    ),
]


def _show(endpoint: dict[str, Any]) -> None:
    rows = [
        ("id", endpoint.get("id")),
        ("url", endpoint.get("url")),
        ("event types", ", ".join(endpoint.get("eventTypes") or []) or "(all)"),
        ("enabled", "yes" if endpoint.get("enabled") else "no"),
        ("disabled because", endpoint.get("disabledReason")),
        ("description", endpoint.get("description")),
        ("previous secret until", endpoint.get("previousSecretExpiresAt")),
        ("created", endpoint.get("createdAt")),
    ]
    for name, value in rows:
        if value is not None:
            out.print(f"{name:>22}: {safe(value)}", highlight=False, soft_wrap=True)
    if "secret" in endpoint:
        out.print(
            f"{'secret':>22}: {safe(endpoint['secret'])}\n"
            "Keep the secret now: it is not shown again (verify with "
            "iod.client.webhooks.verify).",
            highlight=False,
            soft_wrap=True,
        )


@webhooks_app.command("create")
def webhooks_create(
    url: Annotated[str, typer.Argument(help="Where to POST the events (https://…).")],
    types: Types = None,
    description: Annotated[str | None, typer.Option(help="Free text for yourself.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Register an endpoint; prints its secret (shown only this once)."""
    body: dict[str, Any] = {"url": url, "eventTypes": types or [], "enabled": not disabled}
    if description is not None:
        body["description"] = description
    with handled(), client() as api:
        endpoint = api.request("POST", PATH, json=body)
    print_json(endpoint) if as_json else _show(endpoint)


@webhooks_app.command("list")
def webhooks_list(as_json: JsonFlag = False) -> None:
    """Your webhook endpoints."""
    endpoints: list[dict[str, Any]] = []
    with handled(), client() as api:
        cursor: str | None = None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = api.request("GET", PATH, params=params)
            endpoints += page["webhookEndpoints"]
            cursor = page.get("nextCursor")
            if not cursor:
                break
    if as_json:
        print_json(endpoints)
        return
    table = Table("id", "url", "types", "enabled", "note", box=box.SIMPLE)
    for e in endpoints:
        table.add_row(
            safe(e["id"]),
            safe(e["url"]),
            safe(", ".join(e.get("eventTypes") or []) or "(all)"),
            "yes" if e.get("enabled") else "no",
            safe(e.get("disabledReason") or e.get("description") or ""),
        )
    out.print(table)


@webhooks_app.command("get")
def webhooks_get(endpoint_id: EndpointId, as_json: JsonFlag = False) -> None:
    """One webhook endpoint."""
    with handled(), client() as api:
        endpoint = api.request("GET", f"{PATH}/{endpoint_id}")
    print_json(endpoint) if as_json else _show(endpoint)


@webhooks_app.command("delete")
def webhooks_delete(endpoint_id: EndpointId) -> None:
    """Delete an endpoint (and its deliveries)."""
    with handled(), client() as api:
        api.request("DELETE", f"{PATH}/{endpoint_id}")
    out.print(f"deleted {safe(endpoint_id)}", highlight=False)


@webhooks_app.command("rotate-secret")
def webhooks_rotate(endpoint_id: EndpointId, as_json: JsonFlag = False) -> None:
    """A new secret; the previous one keeps signing during the grace period."""
    with handled(), client() as api:
        endpoint = api.request("POST", f"{PATH}/{endpoint_id}/rotate-secret")
    print_json(endpoint) if as_json else _show(endpoint)


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    endpoint_id: EndpointId,
    status: Annotated[
        str | None, typer.Option(help="Only pending, succeeded or failed ones.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """An endpoint's deliveries, newest first, with their attempts."""
    params: dict[str, Any] = {"limit": max(1, min(limit, 100))}
    if status:
        params["status"] = status
    with handled(), client() as api:
        page = api.request("GET", f"{PATH}/{endpoint_id}/deliveries", params=params)
    deliveries = page["deliveries"]
    if as_json:
        print_json(deliveries)
        return
    table = Table("id (webhook-id)", "event", "status", "attempts", "last", box=box.SIMPLE)
    for d in deliveries:
        last = d.get("lastError") or (str(d["lastStatusCode"]) if d.get("lastStatusCode") else "")
        table.add_row(
            safe(d["id"]),
            safe(d["eventType"]),
            safe(d["status"]),
            str(d["attemptCount"]),
            safe(last),
        )
    out.print(table)


@webhooks_app.command("retry")
def webhooks_retry(
    endpoint_id: EndpointId,
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id (msg_…).")],
    as_json: JsonFlag = False,
) -> None:
    """Send a delivery again now (same webhook-id)."""
    with handled(), client() as api:
        delivery = api.request("POST", f"{PATH}/{endpoint_id}/deliveries/{delivery_id}/retry")
    if as_json:
        print_json(delivery)
    else:
        out.print(f"queued {safe(delivery['id'])} ({safe(delivery['eventType'])})")


def webhook_body(event: dict[str, Any]) -> bytes:
    """The body the service sends for an event of the feed (docs/api.md, "Webhooks")."""
    return json.dumps(
        {"type": event.get("type"), "timestamp": event.get("occurredAt"), "data": event},
        separators=(",", ":"),
    ).encode()


@webhooks_app.command("listen")
def webhooks_listen(
    forward_to: Annotated[
        str, typer.Option("--forward-to", help="The local URL to POST each event to.")
    ],
    types: Types = None,
    secret: Annotated[
        str | None,
        typer.Option("--secret", envvar="IOD_WEBHOOK_SECRET", help="Sign with this whsec_ secret."),
    ] = None,
) -> None:
    """Follow your events and POST each, signed like a webhook, to a local URL (until
    Ctrl-C). Prints the secret it signs with (a new one unless --secret)."""
    import httpx

    from iod.client import webhooks

    signing = secret or webhooks.new_secret()
    err.print(f"Signing with {signing}", highlight=False, soft_wrap=True)

    def opened() -> None:  # printed once the service follows from now: nothing is missed
        err.print(f"Forwarding events to {safe(forward_to)} (Ctrl-C stops)", highlight=False)

    with handled(), client() as api, httpx.Client(timeout=10, follow_redirects=False) as local:
        try:
            for event in api.events(after="now", types=types or (), on_open=opened):
                body = webhook_body(event)
                message_id = f"msg_{event.get('id', '')}"
                headers = {
                    **webhooks.headers(signing, message_id, body, int(time.time())),
                    "Content-Type": "application/json",
                }
                try:
                    answer = local.post(forward_to, content=body, headers=headers)
                    result = str(answer.status_code)
                except httpx.HTTPError as exc:
                    result = f"failed: {type(exc).__name__}: {exc}"
                out.print(
                    f"{safe(event.get('occurredAt', ''))} {safe(event.get('type', ''))} "
                    f"{safe(message_id)} -> {safe(result)}",
                    highlight=False,
                    soft_wrap=True,
                )
        except KeyboardInterrupt:
            return
