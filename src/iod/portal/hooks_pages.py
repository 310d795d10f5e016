"""The portal's webhook endpoint pages and a connection's schedule page.

Like the other pages (endpoints.py, whose helpers these use): every write calls the API's
services (`webhooks.service`, `schedules.service`) in one transaction as the signed-in
user's doing; errors are the API's problem details shown next to their field. Reading is
for every role; webhook endpoints are changed by admins, schedules by operators.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import Field
from sqlalchemy.orm import Session

from iod.connections import service as connections
from iod.domain.bandwidth import format_bandwidth
from iod.infra.errors import (
    FieldError,
    Forbidden,
    NotFound,
    ProblemError,
    ValidationFailed,
    shown,
)
from iod.infra.ids import looks_like_id
from iod.locations import repository as locations
from iod.portal import schemas, views
from iod.portal import service as people
from iod.portal.endpoints import (
    PortalRoute,
    _read,
    _services,
    _write,
    current_user,
    errors_by_pointer,
    form_of,
    render,
    user_actor,
)
from iod.portal.service import CurrentUser
from iod.schedules import service as schedules
from iod.schedules.schemas import SchedulePatch, ScheduleRequest
from iod.webhooks import delivery as webhook_delivery
from iod.webhooks import service as webhooks
from iod.webhooks.schemas import (
    EVENT_TYPE_CHOICES,
    WebhookEndpointRequest,
    WebhookEndpointUpdate,
)

router = APIRouter(prefix="/portal", route_class=PortalRoute, include_in_schema=False)
DELIVERIES_PAGE = 25
DELIVERY_STATUSES = ("", "pending", "succeeded", "failed")
MAX_RULE_LINES = 20


class WebhookForm(schemas.Form):
    url: str = Field(max_length=2048)
    eventTypes: str = Field(default="", max_length=2000)
    description: str = Field(default="", max_length=255)


class ScheduleForm(schemas.Form):
    timeZone: str = Field(default="UTC", max_length=64)
    defaultBandwidth: str = Field(max_length=32)
    rules: str = Field(default="", max_length=2000)
    description: str = Field(default="", max_length=255)


def folded(exc: ProblemError, name: str, entry: str) -> dict[str, str]:
    """Errors by pointer; those inside the list field `name` (`/eventTypes/1`,
    `/rules/0/bandwidth`) are shown at the form's one field for it, naming the entry
    (`rule 1 bandwidth: …`)."""
    found: dict[str, str] = {}
    head = f"/{name}/"
    for pointer, detail in errors_by_pointer(exc).items():
        if pointer.startswith(head):
            index, _, rest = pointer[len(head) :].partition("/")
            which = f"{entry} {int(index) + 1}" if index.isdigit() else index
            detail = f"{which}{' ' + rest if rest else ''}: {detail}"
            pointer = f"/{name}"
        found[pointer] = f"{found[pointer]}; {detail}" if pointer in found else detail
    return found


async def _button(request: Request, role: str) -> CurrentUser:
    """A button's POST: the signed-in user, its CSRF token checked, no other field, the role."""
    user = await current_user(request)
    schemas.parse(schemas.Empty, await form_of(request, user.csrf_token))
    people.require_role(user, role)
    return user


def _entries(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


# -- webhook endpoints --------------------------------------------------------------------


def _limits(request: Request) -> webhooks.Limits:
    settings = _services(request).settings
    return webhooks.Limits.of(settings, webhook_delivery._kek(settings))


async def _webhooks_page(
    request: Request,
    user: CurrentUser,
    status: int = 200,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    secret: dict[str, str] | None = None,
    notice: str = "",
) -> Response:
    def rows(session: Session) -> list[Any]:
        found: list[Any] = []
        cursor: str | None = None
        while True:  # at most IOD_WEBHOOK_MAX_ENDPOINTS (20): one or two pages
            page, cursor = webhooks.page(session, user.principal, cursor=cursor, limit=100)
            found.extend(page)
            if cursor is None:
                return found

    return render(
        request,
        "webhooks.html",
        user,
        status=status,
        endpoints=await _read(request, rows),
        choices=EVENT_TYPE_CHOICES,
        errors=errors or {},
        form=form or {},
        secret=secret,
        notice=notice,
    )


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(request: Request, notice: str = "") -> Response:
    user = await current_user(request)
    return await _webhooks_page(request, user, notice=notice[:40])


@router.post("/webhooks", response_class=HTMLResponse)
async def create_webhook(request: Request) -> Response:
    user = await current_user(request)
    fields = await form_of(request, user.csrf_token)
    people.require_role(user, "admin")
    services = _services(request)
    try:
        form = schemas.parse(WebhookForm, fields)
        body: dict[str, Any] = {"url": form.url.strip(), "eventTypes": _entries(form.eventTypes)}
        if form.description.strip():
            body["description"] = form.description.strip()
        wanted = schemas.parse(WebhookEndpointRequest, body)
        endpoint_id, secret = await _write(
            request,
            user,
            lambda s: _created(
                webhooks.create(
                    s,
                    services.clock.now(),
                    user.principal,
                    wanted,
                    _limits(request),
                    actor=user_actor(request, user),
                )
            ),
        )
    except ProblemError as exc:
        errors = folded(exc, "eventTypes", "entry")
        return await _webhooks_page(request, user, exc.status, errors, fields)
    return await _webhooks_page(
        request, user, 201, secret={"id": endpoint_id, "secret": secret, "new": "1"}
    )


def _created(made: tuple[Any, str]) -> tuple[str, str]:
    endpoint, secret = made
    return str(endpoint.id), secret


async def _webhook_page(
    request: Request,
    user: CurrentUser,
    endpoint_id: str,
    *,
    status: int = 200,
    cursor: str = "",
    state: str = "",
    errors: dict[str, str] | None = None,
    secret: str | None = None,
    notice: str = "",
) -> Response:
    if state not in DELIVERY_STATUSES:
        raise ValidationFailed.field(
            "/status", "must be one of " + ", ".join(DELIVERY_STATUSES[1:])
        )
    if cursor and not looks_like_id(cursor):
        raise ValidationFailed.field("/cursor", "is not a cursor: use the page links")
    now = _services(request).clock.now()

    def read(session: Session) -> dict[str, Any]:
        endpoint = webhooks.get(session, user.principal, endpoint_id)
        rows, next_cursor = webhooks.deliveries(
            session, user.principal, endpoint.id, cursor=cursor or None,
            status=state or None, limit=DELIVERIES_PAGE,
        )  # fmt: skip
        return {"e": webhooks.to_schema(endpoint, now), "deliveries": rows, "next": next_cursor}

    context = await _read(request, read)
    return render(
        request,
        "webhook.html",
        user,
        status=status,
        errors=errors or {},
        secret=secret,
        notice=notice,
        state=state,
        statuses=DELIVERY_STATUSES[1:],
        first=not cursor,
        **context,
    )


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def webhook_page(
    request: Request, endpoint_id: str, cursor: str = "", status: str = "", notice: str = ""
) -> Response:
    user = await current_user(request)
    return await _webhook_page(
        request, user, endpoint_id, cursor=cursor, state=status, notice=notice[:40]
    )


@router.post("/webhooks/{endpoint_id}/{what}", response_class=HTMLResponse)
async def change_webhook(request: Request, endpoint_id: str, what: str) -> Response:
    """enable, disable, rotate (the new secret shown once), delete."""
    if what not in ("enable", "disable", "rotate", "delete"):
        raise NotFound(f"no action {shown(what, 40)}")
    user = await _button(request, "admin")
    services = _services(request)
    principal, limits = user.principal, _limits(request)
    actor = user_actor(request, user)
    if what == "rotate":
        _, secret = await _write(
            request,
            user,
            lambda s: webhooks.rotate_secret(
                s, services.clock.now(), principal, endpoint_id, limits, actor=actor
            ),
        )
        return await _webhook_page(request, user, endpoint_id, secret=secret)
    if what == "delete":
        await _write(
            request,
            user,
            lambda s: webhooks.delete(s, services.clock.now(), principal, endpoint_id, actor=actor),
        )
        return RedirectResponse("/portal/webhooks?notice=deleted", status_code=303)
    patch = WebhookEndpointUpdate.model_validate({"enabled": what == "enable"})
    await _write(
        request,
        user,
        lambda s: webhooks.update(
            s, services.clock.now(), principal, endpoint_id, patch, limits, actor=actor
        ),
    )
    return RedirectResponse(
        f"/portal/webhooks/{quote(endpoint_id)}?notice={what}d", status_code=303
    )


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry", response_class=HTMLResponse)
async def resend(request: Request, endpoint_id: str, delivery_id: str) -> Response:
    """The API's `POST …/deliveries/{id}/retry`: one more attempt now, same webhook-id."""
    user = await _button(request, "admin")
    services = _services(request)
    try:
        await _write(
            request,
            user,
            lambda s: webhooks.retry(
                s,
                services.clock.now(),
                user.principal,
                endpoint_id,
                delivery_id,
                actor=user_actor(request, user),
            ),
        )
    except ProblemError as exc:
        if isinstance(exc, NotFound):
            raise
        return await _webhook_page(
            request, user, endpoint_id, status=exc.status, errors={"": exc.detail}
        )
    return RedirectResponse(f"/portal/webhooks/{quote(endpoint_id)}?notice=resent", status_code=303)


# -- a connection's schedule --------------------------------------------------------------


def _planning(request: Request) -> schedules.Planning:
    settings = _services(request).settings
    return schedules.Planning(
        horizon=timedelta(hours=settings.schedules_horizon_hours),
        batch=settings.schedules_plan_batch,
    )


async def _schedule_page(
    request: Request,
    user: CurrentUser,
    connection_id: str,
    status: int = 200,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    notice: str = "",
) -> Response:
    services = _services(request)

    def read(session: Session) -> dict[str, Any]:
        connection = connections.get_connection(session, user.principal, connection_id)
        found = schedules.of_connection(session, user.principal, connection.id)
        location = locations.get(session, connection.location_id)
        context: dict[str, Any] = {
            "c": connection,
            "tiers": [format_bandwidth(t) for t in location.tiers_mbps] if location else [],
            "schedule": None,
            "preview": None,
        }
        if found:
            context["schedule"] = schedules.to_schema(found[0])
            context["preview"] = schedules.preview(
                session, services.clock, user.principal, connection.id, found[0].id, None, None
            )
        return context

    context = await _read(request, read)
    return render(
        request,
        "schedule.html",
        user,
        status=status,
        errors=errors or {},
        form=form or {},
        notice=notice,
        bandwidth=format_bandwidth,
        **context,
    )


@router.get("/connections/{connection_id}/schedule", response_class=HTMLResponse)
async def schedule_page(request: Request, connection_id: str, notice: str = "") -> Response:
    user = await current_user(request)
    return await _schedule_page(request, user, connection_id, notice=notice[:40])


def schedule_request(form: ScheduleForm) -> ScheduleRequest:
    """The form as the API's body: the rules, one a line, in the CLI's short grammar
    (`1 Gbps MO-FR 08:00-18:00`), read by the SDK's own parser."""
    # Imported here: the SDK's modules cost `iod serve` and every CLI command ~80 ms to
    # import, for a form few people post.
    from iod.client.schedules import RuleSyntaxError, parse_rule

    lines = [line.strip() for line in form.rules.splitlines() if line.strip()]
    if len(lines) > MAX_RULE_LINES:
        raise ValidationFailed.field("/rules", f"at most {MAX_RULE_LINES} rules, one a line")
    rules, errors = [], []
    for index, line in enumerate(lines):
        try:
            rules.append(parse_rule(line))
        except RuleSyntaxError as exc:
            errors.append(FieldError(f"/rules/{index}", str(exc)))
    if errors:
        raise ValidationFailed("; ".join(e.detail for e in errors), errors=errors)
    body: dict[str, Any] = {
        "timeZone": views.check_zone(form.timeZone),
        "defaultBandwidth": form.defaultBandwidth,
        "rules": rules,
    }
    if form.description.strip():
        body["description"] = form.description.strip()
    return schemas.parse(ScheduleRequest, body)


@router.post("/connections/{connection_id}/schedule/new", response_class=HTMLResponse)
async def create_schedule(request: Request, connection_id: str) -> Response:
    user = await current_user(request)
    fields = await form_of(request, user.csrf_token)
    people.require_role(user, "operator")
    services = _services(request)
    planning = _planning(request)
    try:
        body = schedule_request(schemas.parse(ScheduleForm, fields))

        await _write(
            request,
            user,
            lambda s: schedules.create(
                s, services.clock, user.principal, connection_id, body, services.policy, planning
            ),
        )
    except ProblemError as exc:
        if isinstance(exc, NotFound | Forbidden):
            raise
        errors = folded(exc, "rules", "rule")
        return await _schedule_page(request, user, connection_id, exc.status, errors, fields)
    return RedirectResponse(
        f"/portal/connections/{quote(connection_id)}/schedule?notice=created", status_code=303
    )


@router.post(
    "/connections/{connection_id}/schedule/{schedule_id}/{what}", response_class=HTMLResponse
)
async def change_schedule(
    request: Request, connection_id: str, schedule_id: str, what: str
) -> Response:
    """pause, resume, delete."""
    if what not in ("pause", "resume", "delete"):
        raise NotFound(f"no action {shown(what, 40)}")
    user = await _button(request, "operator")
    services = _services(request)
    planning = _planning(request)

    def work(session: Session) -> None:
        if what == "delete":
            schedules.delete(session, services.clock, user.principal, connection_id, schedule_id)
            return
        patch = SchedulePatch.model_validate({"paused": what == "pause"})
        schedules.update(
            session, services.clock, user.principal, connection_id, schedule_id, patch,
            services.policy, planning,
        )  # fmt: skip

    try:
        await _write(request, user, work)
    except ProblemError as exc:
        if isinstance(exc, NotFound):
            raise
        return await _schedule_page(request, user, connection_id, exc.status, {"": exc.detail})
    notice = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[what]
    return RedirectResponse(
        f"/portal/connections/{quote(connection_id)}/schedule?notice={notice}", status_code=303
    )
