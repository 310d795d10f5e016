"""The customer portal: server-rendered pages under /portal, for people with a session.

Every write goes through the services the API uses (connections.service, lifecycle,
customers.service), in one transaction, as the signed-in user's doing (events and audit).
Each page is plain HTML that works without JavaScript; portal.js only adds live updates.
Errors are the API's problem details, shown next to their field (`errors[].pointer`).
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from iod.audit import service as audit
from iod.connections import lifecycle
from iod.connections import service as connections
from iod.connections.schemas import BandwidthUpdate, ConnectionRequest
from iod.domain.bandwidth import format_bandwidth
from iod.domain.status import Action, ChangeStatus, ConnectionStatus
from iod.events import repository as events_repository
from iod.events import service as events_service
from iod.infra.errors import (
    FieldError,
    Forbidden,
    NotFound,
    ProblemError,
    ValidationFailed,
    shown,
)
from iod.infra.ids import looks_like_id
from iod.infra.ratelimit import Rate, TokenBuckets
from iod.locations import repository as locations
from iod.portal import clients as portal_clients
from iod.portal import once, quotes, schemas, views
from iod.portal import service as people
from iod.portal.service import CurrentUser, PortalPolicy

if TYPE_CHECKING:
    from iod.app import Services

T = TypeVar("T")
SESSION_COOKIE = "iod_portal"
PRE_COOKIE = "iod_portal_pre"  # an anonymous browser's CSRF secret (sign-in forms)
PAGE_SIZE = 25
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class PortalRoute(APIRoute):
    """Problems are pages here, not problem+json: the same status, title and detail."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = request.url.path
                if request.method == "GET" and request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse(f"/portal/sign-in?next={quote(target)}", status_code=303)
            except ProblemError as exc:
                return problem_page(request, exc)

        return route


router = APIRouter(prefix="/portal", route_class=PortalRoute, include_in_schema=False)


# Control characters HTML may not carry (a NUL above all): a refused form's value shown back,
# or a row stored before the forms refused them, is shown with U+FFFD, as a browser would.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(value: Any) -> Any:
    if isinstance(value, str) and _UNPRINTABLE.search(value):  # rare: most values pass here
        # `replace` keeps the type: escaped text (Markup) stays escaped, plain text plain.
        for char in set(_UNPRINTABLE.findall(value)):
            value = value.replace(char, "\ufffd")
    return value


@cache
def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("iod.portal", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_printable,
    )
    env.filters["bandwidth"] = format_bandwidth
    env.filters["local"] = views.local
    env.globals["new_once"] = once.new_value  # a fresh value for every form (macros.html)
    return env


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _policy(request: Request) -> PortalPolicy:
    return PortalPolicy.of(_services(request).settings)


def _source(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def user_actor(request: Request, user: CurrentUser) -> audit.Actor:
    """The signed-in user as the actor of audit rows and events, from this request."""
    return people.actor(user.user_id, _source(request), _request_id(request))


def render(
    request: Request,
    template: str,
    user: CurrentUser | None = None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    body = (
        _templates()
        .get_template(template)
        .render(user=user, path=request.url.path, csrf=user.csrf_token if user else "", **context)
    )
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def problem_page(request: Request, exc: ProblemError, user: CurrentUser | None = None) -> Response:
    page = render(
        request,
        "problem.html",
        user,
        status=exc.status,
        problem=exc,
        request_id=_request_id(request),
        back=_came_from(request),
    )
    for name, value in exc.headers.items():
        if name.lower() != "www-authenticate":
            page.headers[name] = value
    return page


def errors_by_pointer(exc: ProblemError) -> dict[str, str]:
    """`/bandwidth` → its message; anything without a field of its own under ""."""
    found: dict[str, str] = {}
    for error in exc.errors:
        found[error.pointer or ""] = error.detail
    if not exc.errors:
        found[""] = exc.detail
    return found


# -- sessions -------------------------------------------------------------------------------


def session_ids(request: Request) -> list[str]:
    """Every session cookie the browser sent: a cookie planted for a wider path or domain
    (by a sibling site, say) comes with ours under the same name, and must neither win
    nor sign the user out. At most three are tried."""
    found = []
    for part in request.headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and 0 < len(value) <= 100:
            found.append(value.strip('"'))
    return found[:3]


async def current_user(request: Request) -> CurrentUser:
    services = _services(request)

    def resolve() -> CurrentUser | None:
        for raw in session_ids(request):
            user = people.resolve(
                services.db, services.clock, services.secret_hasher, raw, _policy(request)
            )
            if user is not None:
                return user
        return None

    user = await run_in_threadpool(resolve)
    if user is None:
        raise SignInRequired
    return user


def _came_from(request: Request) -> str | None:
    """The portal page a form was posted from (its Referer, this site's only), for a link
    back from a problem page; None when unknown, another site's or not the portal's."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc != request.headers.get("host", "") or not referer.path:
        return None
    path = referer.path + (f"?{referer.query}" if referer.query else "")
    return path if _safe_next(path) == path else None


def _same_origin(request: Request) -> bool:
    """A browser says where a form was posted from; another site's is refused outright."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


class FormRefused(Forbidden):
    """A portal form refused before reading it: another site's, a missing or stale CSRF
    token, no cookies (not a matter of the user's role)."""

    type_name = "form-refused"
    title = "Form refused"


async def form_of(request: Request, expected_csrf: str) -> dict[str, str]:
    """The form's fields once its CSRF token matched the session's (403 otherwise)."""
    if not _same_origin(request):
        raise FormRefused("this form was posted from another site")
    form: FormData = await request.form(max_files=0, max_fields=50, max_part_size=10_000)
    fields, token = schemas.fields_of(form.multi_items())
    if not expected_csrf or not token or not hmac.compare_digest(expected_csrf, token):
        raise FormRefused(
            "the form's security token is missing or stale: reload the page and retry"
        )
    request.state.form_once = once.checked(fields.pop(once.FIELD, None))
    return fields


def _cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/portal",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def _pre_token(request: Request, pre: str) -> str:
    """The sign-in forms' CSRF token: the keyed hash of the anonymous cookie's secret."""
    return people.keyed(_services(request).secret_hasher, pre) or ""


def _anonymous_form(request: Request) -> tuple[str, bool]:
    pre = request.cookies.get(PRE_COOKIE) or ""
    if people.keyed(_services(request).secret_hasher, pre) is None:
        return secrets.token_urlsafe(32), True
    return pre, False


async def anonymous_form_of(request: Request) -> dict[str, str]:
    pre = request.cookies.get(PRE_COOKIE) or ""
    if people.keyed(_services(request).secret_hasher, pre) is None:
        raise FormRefused("cookies are needed to sign in: allow them for this site and reload")
    return await form_of(request, _pre_token(request, pre))


async def _write(request: Request, user: CurrentUser | None, work: Callable[[Session], T]) -> T:
    """`work` in one write transaction, as the user's doing (events, audit); the form's
    `once` value is recorded in it first (portal/once.py: a reloaded POST does nothing)."""
    services = _services(request)
    sent = getattr(request.state, "form_once", None)

    def run() -> T:
        with services.db.write() as session:
            if user is not None:
                audit.act_for(session, user_actor(request, user))
                if sent is not None:
                    once.record(session, services.clock.now(), user.customer_id, sent)
            return work(session)

    try:
        return await run_in_threadpool(run)
    finally:
        # Recorded with the work, or refused with it (rolled back, so not used up): either
        # way a second write in this request (a fresh quote after a refused confirm) does
        # not record the form.
        request.state.form_once = None


async def _read(request: Request, work: Callable[[Session], T]) -> T:
    services = _services(request)

    def run() -> T:
        with services.db.read() as session:
            return work(session)

    return await run_in_threadpool(run)


def _safe_next(target: str) -> str:
    """Only a path of the portal itself (never another site: no open redirect)."""
    if target.startswith("/portal") and not target.startswith("//") and "\\" not in target:
        return target
    return "/portal/connections"


def _sign_in_buckets(request: Request) -> TokenBuckets | None:
    """Sign-in attempts per source address, in this process (infra/ratelimit.py's token
    buckets); the lockout per account is in the database, across processes."""
    state = request.app.state
    if not hasattr(state, "portal_sign_ins"):
        settings = _services(request).settings
        rate = Rate(settings.portal_sign_ins_per_minute / 60, settings.portal_sign_ins_burst)
        state.portal_sign_ins = TokenBuckets(rate) if rate.enabled else None
    buckets: TokenBuckets | None = state.portal_sign_ins
    return buckets


@router.get("", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    return RedirectResponse("/portal/connections", status_code=303)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, next: str = "", signed_out: str = "") -> Response:
    pre, new = _anonymous_form(request)
    page = render(
        request,
        "sign_in.html",
        form_csrf=_pre_token(request, pre),
        next=_safe_next(next),
        signed_out=bool(signed_out),
    )
    if new:
        _cookie(request, page, PRE_COOKIE, pre, 3600)
    return page


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    services = _services(request)
    fields = await anonymous_form_of(request)
    pre = request.cookies.get(PRE_COOKIE, "")
    form = schemas.parse(schemas.SignInForm, fields)
    bucket = _sign_in_buckets(request)
    if bucket is not None:
        decision = bucket.take(_source(request))
        if not decision.allowed:
            page = render(
                request,
                "sign_in.html",
                status=429,
                form_csrf=_pre_token(request, pre),
                next=_safe_next(form.next),
                email=form.email,
                errors={"": f"too many sign-in attempts; retry in {decision.retry_after} s"},
            )
            page.headers["Retry-After"] = str(decision.retry_after)
            return page
    outcome = await _write(
        request,
        None,
        lambda session: people.sign_in(
            session, services.clock, services.secret_hasher, form.email, form.password,
            _policy(request), _source(request), session_ids(request),
            _request_id(request),
        ),
    )  # fmt: skip
    if outcome.session is None:
        return render(
            request,
            "sign_in.html",
            status=429 if outcome.locked else 400,
            form_csrf=_pre_token(request, pre),
            next=_safe_next(form.next),
            email=form.email,
            errors={"/password": outcome.error},
        )
    response = RedirectResponse(_safe_next(form.next), status_code=303)
    _cookie(
        request,
        response,
        SESSION_COOKIE,
        outcome.session.session_id,
        services.settings.portal_session_absolute_seconds,
    )
    return response


# The link's token is a query parameter, not a path segment: the access log and the metrics
# record the path only, so the token never reaches a log.
@router.get("/welcome", response_class=HTMLResponse)
async def welcome_page(request: Request, token: str = "") -> Response:
    services = _services(request)
    user = await _read(
        request,
        lambda session: people.link_user(session, services.clock, services.secret_hasher, token),
    )
    pre, new = _anonymous_form(request)
    page = render(
        request,
        "welcome.html",
        form_csrf=_pre_token(request, pre),
        email=user.email,
        token=token,
        min_length=services.settings.portal_password_min_length,
    )
    if new:
        _cookie(request, page, PRE_COOKIE, pre, 3600)
    return page


@router.post("/welcome", response_class=HTMLResponse)
async def welcome(request: Request, token: str = "") -> Response:
    services = _services(request)
    policy = _policy(request)
    fields = await anonymous_form_of(request)
    form = schemas.parse(schemas.PasswordForm, fields)

    def work(session: Session) -> people.NewSession:
        user = people.link_user(session, services.clock, services.secret_hasher, token)
        audit.act_for(session, people.actor(user.id, _source(request), _request_id(request)))
        if form.password != form.passwordAgain:
            raise ValidationFailed.field("/passwordAgain", "the two passwords differ")
        user = people.redeem_link(
            session, services.clock, services.secret_hasher, token, form.password, policy
        )
        return people.start_session(
            session, services.clock, services.secret_hasher, user, policy, _source(request),
            session_ids(request),
        )  # fmt: skip

    try:
        new = await _write(request, None, work)
    except ValidationFailed as exc:
        email = await _read(
            request,
            lambda s: people.link_user(s, services.clock, services.secret_hasher, token).email,
        )
        pre = request.cookies.get(PRE_COOKIE, "")
        return render(
            request,
            "welcome.html",
            status=400,
            form_csrf=_pre_token(request, pre),
            email=email,
            token=token,
            min_length=services.settings.portal_password_min_length,
            errors=errors_by_pointer(exc),
        )
    response = RedirectResponse("/portal/connections", status_code=303)
    _cookie(request, response, SESSION_COOKIE, new.session_id, int(policy.absolute.total_seconds()))
    return response


@router.post("/sign-out", response_class=HTMLResponse)
async def sign_out(request: Request) -> Response:
    return await _sign_out(request, everywhere=False)


@router.post("/sign-out-everywhere", response_class=HTMLResponse)
async def sign_out_everywhere(request: Request) -> Response:
    return await _sign_out(request, everywhere=True)


async def _sign_out(request: Request, *, everywhere: bool) -> Response:
    user = await current_user(request)
    schemas.parse(schemas.Empty, await form_of(request, user.csrf_token))
    services = _services(request)
    await _write(
        request,
        user,
        lambda session: people.sign_out(session, services.clock, user, everywhere=everywhere),
    )
    response = RedirectResponse("/portal/sign-in?signed_out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/portal")
    return response


# -- connections ----------------------------------------------------------------------------

STATUS_FILTERS = ["", *(s.value for s in ConnectionStatus)]


@router.get("/connections", response_class=HTMLResponse)
async def connections_page(
    request: Request, status: str = "", location: str = "", cursor: str = ""
) -> Response:
    user = await current_user(request)
    services = _services(request)
    if status not in STATUS_FILTERS:
        raise ValidationFailed.field("/status", f"must be one of {', '.join(STATUS_FILTERS[1:])}")
    if location and not (len(location) <= 64 and location.replace("-", "").isalnum()):
        raise ValidationFailed.field("/location", "is not a location id")
    if cursor and not looks_like_id(cursor):
        raise ValidationFailed.field("/cursor", "is not a cursor: use the page links")

    def page() -> tuple[list[dict[str, Any]], str | None]:
        return connections.list_connections(
            services.db,
            user.principal,
            statuses=[ConnectionStatus(status)] if status else (),
            location_id=location or None,
            cursor=cursor or None,
            limit=PAGE_SIZE,
        )

    rows, next_cursor = await run_in_threadpool(page)
    all_locations = await _read(request, lambda s: [(x.id, x.name) for x in locations.list_all(s)])
    query = {"status": status, "location": location}
    return render(
        request,
        "connections.html",
        user,
        rows=rows,
        next_cursor=next_cursor,
        first=not cursor,
        filters=query,
        statuses=STATUS_FILTERS[1:],
        locations=all_locations,
        query="&".join(f"{k}={quote(v)}" for k, v in query.items() if v),
        live=any(r["pendingBandwidthChanges"] or r.get("targetStatus") for r in rows)
        or any(r["status"] == "provisioning" for r in rows),
    )


CHANGES_SHOWN = 200


def _connection_context(
    services: Services, session: Session, user: CurrentUser, connection_id: str
) -> dict[str, Any]:
    view = connections.view(services.db, user.principal, connection_id)
    changes = list(connections.changes_of(session, view.id))
    history = lifecycle.history(session, view.id)
    location = locations.get(session, view.location)
    tiers = list(location.tiers_mbps) if location is not None else []
    applied = sorted(
        (c for c in changes if c.status == ChangeStatus.APPLIED.value and c.applied_at),
        key=lambda c: c.applied_at or c.effective_at,
    )
    start = applied[0].from_mbps if applied and applied[0].from_mbps else None
    first_mbps = start or _mbps(view.bandwidth)
    steps = [views.Step(view.createdAt, first_mbps)]
    steps += [views.Step(c.applied_at or c.effective_at, c.to_mbps) for c in applied]
    pending = [
        c
        for c in changes
        if c.status in (ChangeStatus.SCHEDULED.value, ChangeStatus.APPLYING.value)
    ]
    steps += [views.Step(c.effective_at, c.to_mbps, planned=True) for c in pending]
    bands = [views.Band(t.at, t.to_status) for t in history]
    now = services.clock.now()
    return {
        "c": view,
        "version": connections.etag_of(view),
        # The latest first, at most CHANGES_SHOWN: every pending change (at most 100 a
        # connection) and the latest others; a schedule makes thousands over the years.
        "changes": sorted(changes, key=lambda c: (c.effective_at, c.id), reverse=True)[
            :CHANGES_SHOWN
        ],
        "older_changes": max(0, len(changes) - CHANGES_SHOWN),
        "history": history,
        "tiers": [format_bandwidth(t) for t in tiers],
        "location": location,
        "chart": views.timeline_svg(steps, bands, now, user.time_zone),
        "pending": pending,
        "now": now,
        "live": bool(pending) or view.status == "provisioning" or bool(view.targetStatus),
    }


def _mbps(text: str) -> int:
    from iod.domain.bandwidth import parse_bandwidth

    return parse_bandwidth(text)


async def _connection_page(
    request: Request,
    user: CurrentUser,
    connection_id: str,
    status: int = 200,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    notice: str = "",
) -> Response:
    services = _services(request)
    context = await _read(
        request, lambda session: _connection_context(services, session, user, connection_id)
    )
    return render(
        request,
        "connection.html",
        user,
        status=status,
        errors=errors or {},
        form=form or {},
        notice=notice,
        **context,
    )


@router.get("/connections/{connection_id}", response_class=HTMLResponse)
async def connection_page(request: Request, connection_id: str, notice: str = "") -> Response:
    user = await current_user(request)
    return await _connection_page(request, user, connection_id, notice=notice[:100])


@router.get("/connections/{connection_id}/version", response_class=PlainTextResponse)
async def connection_version(request: Request, connection_id: str) -> Response:
    """What the live update polls: the connection's ETag (changes when anything shown
    changes: status, bandwidth, pending changes)."""
    user = await current_user(request)
    services = _services(request)
    view = await run_in_threadpool(connections.view, services.db, user.principal, connection_id)
    return PlainTextResponse(connections.etag_of(view), headers={"Cache-Control": "no-store"})


def _change_request(form: schemas.ChangeForm, zone: str) -> BandwidthUpdate:
    body: dict[str, Any] = {"bandwidth": form.bandwidth}
    if form.when == "at":
        if not form.effectiveDate:
            raise ValidationFailed.field("/effectiveDate", "is required to change at a time")
        body["effectiveDate"] = views.parse_local(form.effectiveDate, zone, "/effectiveDate")
    elif form.when == "boost":
        if not form.revertAt:
            raise ValidationFailed.field("/revertAt", "is required for a boost")
        if form.effectiveDate:
            body["effectiveDate"] = views.parse_local(form.effectiveDate, zone, "/effectiveDate")
        body["revertAt"] = views.parse_local(form.revertAt, zone, "/revertAt")
    if form.quoteId:
        body["quoteId"] = form.quoteId
    try:
        return BandwidthUpdate.model_validate(
            {k: v.isoformat() if isinstance(v, datetime) else v for k, v in body.items()}
        )
    except Exception as exc:  # pydantic's ValidationError: the API's messages
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        errors = [
            FieldError("/" + "/".join(str(p) for p in e["loc"]), str(e["msg"]))
            for e in exc.errors()
        ]
        raise ValidationFailed("; ".join(e.detail for e in errors), errors=errors) from None


@router.post("/connections/{connection_id}/bandwidth", response_class=HTMLResponse)
async def change_bandwidth(request: Request, connection_id: str) -> Response:
    user = await current_user(request)
    fields = await form_of(request, user.csrf_token)
    people.require_role(user, "operator")
    services = _services(request)
    update: BandwidthUpdate | None = None
    try:
        form = schemas.parse(schemas.ChangeForm, fields)
        zone = views.check_zone(form.timeZone)
        update = _change_request(form, zone)
        if form.step == "review":
            return await _change_review(request, user, connection_id, form, update)

        def work(session: Session) -> str:
            people.set_time_zone(session, user, zone)
            if form.quoteId:
                quotes.check_usable(session, services.clock, user, form.quoteId)
            _, change, _, _ = connections.update_bandwidth(
                session, services.clock, user.principal, connection_id, update, services.policy
            )
            return "change-recorded" if change is not None else "no-change"

        notice = await _write(request, user, work)
    except (ValidationFailed, ProblemError) as exc:
        if isinstance(exc, NotFound | Forbidden):
            raise
        errors = errors_by_pointer(exc)
        if update is not None and quotes.is_quote_problem(errors):  # a fresh price to confirm
            return await _change_review(
                request, user, connection_id, form, update, exc.status, errors
            )
        return await _connection_page(request, user, connection_id, exc.status, errors, fields)
    return RedirectResponse(
        f"/portal/connections/{quote(connection_id)}?notice={notice}", status_code=303
    )


async def _change_review(
    request: Request, user: CurrentUser, connection_id: str, form: schemas.ChangeForm,
    update: BandwidthUpdate, status: int = 200, errors: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    """The change and its price (a new quote), to confirm."""
    services = _services(request)
    zone = views.check_zone(form.timeZone)
    price = await _write(
        request, user, lambda s: quotes.for_change(s, services, user, connection_id, update, zone)
    )
    view = await run_in_threadpool(connections.view, services.db, user.principal, connection_id)
    return render(
        request, "change_review.html", user, status=status, c=view, form=form, update=update,
        price=price, errors=errors or {}, zone=zone,
    )  # fmt: skip


@router.post("/connections/{connection_id}/changes/{change_id}/cancel", response_class=HTMLResponse)
async def cancel_change(request: Request, connection_id: str, change_id: str) -> Response:
    user = await current_user(request)
    schemas.parse(schemas.Empty, await form_of(request, user.csrf_token))
    people.require_role(user, "operator")
    services = _services(request)
    try:
        await _write(
            request,
            user,
            lambda session: connections.cancel_change(
                session, services.clock, user.principal, connection_id, change_id
            ),
        )
    except ProblemError as exc:
        if isinstance(exc, NotFound):
            raise
        return await _connection_page(request, user, connection_id, exc.status, {"": exc.detail})
    return RedirectResponse(
        f"/portal/connections/{quote(connection_id)}?notice=change-cancelled", status_code=303
    )


@router.post("/connections/{connection_id}/{action}", response_class=HTMLResponse)
async def lifecycle_action(request: Request, connection_id: str, action: str) -> Response:
    user = await current_user(request)
    if action not in {a.value for a in Action}:
        raise NotFound(f"no action {shown(action, 40)}")
    schemas.parse(schemas.Empty, await form_of(request, user.csrf_token))
    people.require_role(user, "operator")
    services = _services(request)

    def work(session: Session) -> None:
        connection = connections.get_connection(session, user.principal, connection_id, lock=True)
        lifecycle.request_action(
            session, services.clock, user.principal, connection, Action(action),
            services.policy.max_attempts, locked=True,
        )  # fmt: skip

    try:
        await _write(request, user, work)
    except ProblemError as exc:
        if isinstance(exc, NotFound):
            raise
        return await _connection_page(request, user, connection_id, exc.status, {"": exc.detail})
    return RedirectResponse(
        f"/portal/connections/{quote(connection_id)}?notice={action}-requested", status_code=303
    )


# -- ordering -------------------------------------------------------------------------------


def _catalog(session: Session) -> list[dict[str, Any]]:
    return [
        {
            "id": x.id,
            "name": x.name,
            "address": x.address,
            "tiers": [format_bandwidth(t) for t in x.tiers_mbps],
        }
        for x in locations.list_all(session)
    ]


@router.get("/order", response_class=HTMLResponse)
async def order_page(request: Request, location: str = "") -> Response:
    user = await current_user(request)
    people.require_role(user, "operator")
    catalog = await _read(request, _catalog)
    chosen = next((x for x in catalog if x["id"] == location), catalog[0] if catalog else None)
    return render(request, "order.html", user, catalog=catalog, chosen=chosen, form={}, errors={})


@router.post("/order", response_class=HTMLResponse)
async def order(request: Request) -> Response:
    user = await current_user(request)
    fields = await form_of(request, user.csrf_token)
    people.require_role(user, "operator")
    services = _services(request)
    catalog = await _read(request, _catalog)
    chosen = next((x for x in catalog if x["id"] == fields.get("locationId")), None)
    order_request: ConnectionRequest | None = None
    try:
        form = schemas.parse(schemas.OrderForm, fields)
        body: dict[str, Any] = {"bandwidth": form.bandwidth, "locationId": form.locationId}
        if form.description.strip():
            body["description"] = form.description.strip()
        if form.quoteId:
            body["quoteId"] = form.quoteId
        try:
            order_request = ConnectionRequest.model_validate(body)
        except Exception as exc:
            from pydantic import ValidationError

            if not isinstance(exc, ValidationError):
                raise
            errors = [
                FieldError("/" + "/".join(str(p) for p in e["loc"]), str(e["msg"]))
                for e in exc.errors()
            ]
            raise ValidationFailed("; ".join(e.detail for e in errors), errors=errors) from None
        if form.step == "review":
            # Checked as the order would be, without ordering: location and tier.
            location = next((x for x in catalog if x["id"] == form.locationId), None)
            if location is None:
                raise ValidationFailed.field("/locationId", "choose a location of the list")
            if order_request.bandwidth not in location["tiers"]:
                raise ValidationFailed.field(
                    "/bandwidth",
                    f"{order_request.bandwidth} is not offered at {location['id']}; offered: "
                    + ", ".join(location["tiers"]),
                )
            return await _order_review(request, user, order_request, location)

        def work(session: Session) -> str:
            if form.quoteId:
                quotes.check_usable(session, services.clock, user, form.quoteId)
            created = connections.create_connection(
                session, services.clock, user.principal, order_request, services.policy
            )
            return created.id

        connection_id = await _write(request, user, work)
    except ProblemError as exc:
        if isinstance(exc, Forbidden):
            raise
        shown = errors_by_pointer(exc)
        if order_request and chosen and quotes.is_quote_problem(shown):  # a fresh price
            return await _order_review(request, user, order_request, chosen, exc.status, shown)
        return render(
            request,
            "order.html",
            user,
            status=exc.status,
            catalog=catalog,
            chosen=chosen or (catalog[0] if catalog else None),
            form=fields,
            errors=shown,
        )
    return RedirectResponse(f"/portal/connections/{connection_id}?notice=ordered", status_code=303)


async def _order_review(
    request: Request, user: CurrentUser, order_request: ConnectionRequest,
    location: dict[str, Any], status: int = 200, errors: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    """The order and its price (a new quote), to confirm."""
    services = _services(request)
    price = await _write(
        request, user, lambda s: quotes.for_order(s, services, user, order_request)
    )
    return render(
        request, "order_review.html", user, status=status, order=order_request,
        location=location, price=price, errors=errors or {},
    )  # fmt: skip


# -- events ---------------------------------------------------------------------------------


@router.get("/events", response_class=HTMLResponse)
async def events_page(request: Request, before: str = "") -> Response:
    """The customer's events, newest first, 50 a page (the API's feed, read backwards)."""
    user = await current_user(request)
    if before and not (before.isdigit() and len(before) <= 18):
        raise ValidationFailed.field("/before", "is not a position: use the page links")
    services = _services(request)
    last = await _read(request, lambda s: events_repository.last_position(s, user.customer_id))
    upto = min(int(before), last) if before and int(before) > 0 else last
    after = max(0, upto - 50)

    def read() -> events_service.Page:
        return events_service.read_page(
            services.db, user.customer_id, after=after, explicit=False, limit=50
        )

    page = await run_in_threadpool(read)
    rows = [e for e in page.events if events_service.decode_cursor(e["id"]) <= upto]
    return render(
        request,
        "events.html",
        user,
        events=list(reversed(rows)),
        older=after if after > 0 else None,
        position=events_service.decode_cursor,
    )


# -- API clients (admin) --------------------------------------------------------------------


async def _clients_page(
    request: Request,
    user: CurrentUser,
    status: int = 200,
    errors: dict[str, str] | None = None,
    secret: dict[str, str] | None = None,
) -> Response:
    rows = await _read(request, lambda s: list(portal_clients.clients_of(s, user.customer_id)))
    return render(
        request,
        "clients.html",
        user,
        status=status,
        clients=rows,
        errors=errors or {},
        secret=secret,
    )


@router.get("/api-clients", response_class=HTMLResponse)
async def clients_page(request: Request) -> Response:
    user = await current_user(request)
    people.require_role(user, "admin")
    return await _clients_page(request, user)


@router.post("/api-clients", response_class=HTMLResponse)
async def create_client(request: Request) -> Response:
    user = await current_user(request)
    fields = await form_of(request, user.csrf_token)
    people.require_role(user, "admin")
    services = _services(request)
    actor = user_actor(request, user)
    try:
        form = schemas.parse(schemas.ClientForm, fields)
        new = await _write(
            request,
            user,
            lambda s: portal_clients.create(
                s, services.clock, services.secret_hasher, actor, user.customer_id,
                form.name, form.scopes,
            ),
        )  # fmt: skip
    except ValidationFailed as exc:
        return await _clients_page(request, user, 400, errors_by_pointer(exc))
    return await _clients_page(
        request,
        user,
        201,
        secret={"client_id": new.client_id, "client_secret": new.client_secret, "new": "1"},
    )


@router.post("/api-clients/{client_id}/rotate", response_class=HTMLResponse)
async def rotate_client(request: Request, client_id: str) -> Response:
    user = await current_user(request)
    fields = await form_of(request, user.csrf_token)
    people.require_role(user, "admin")
    services = _services(request)
    actor = user_actor(request, user)
    form = schemas.parse(schemas.RotateForm, fields)
    rotated = await _write(
        request,
        user,
        lambda s: portal_clients.rotate(
            s, services.clock, services.secret_hasher, actor, user.customer_id, client_id,
            form.grace,
        ),
    )  # fmt: skip
    secret = {"client_id": client_id, "client_secret": rotated.client_secret}
    if rotated.previous_valid_until is not None:
        secret["until"] = views.local(rotated.previous_valid_until, user.time_zone)
    return await _clients_page(request, user, 200, secret=secret)


@router.post("/api-clients/{client_id}/{what}", response_class=HTMLResponse)
async def enable_client(request: Request, client_id: str, what: str) -> Response:
    user = await current_user(request)
    if what not in ("disable", "enable"):
        raise NotFound(f"no action {shown(what, 40)}")
    schemas.parse(schemas.Empty, await form_of(request, user.csrf_token))
    people.require_role(user, "admin")
    services = _services(request)
    actor = user_actor(request, user)
    await _write(
        request,
        user,
        lambda s: portal_clients.set_enabled(
            s, services.clock, actor, user.customer_id, client_id, what == "enable"
        ),
    )
    return RedirectResponse("/portal/api-clients", status_code=303)


# -- users (admin) --------------------------------------------------------------------------


def sign_in_link(request: Request, token: str) -> str:
    base = str(request.base_url).rstrip("/")
    return f"{base}/portal/welcome?token={token}"


async def _users_page(
    request: Request,
    user: CurrentUser,
    status: int = 200,
    errors: dict[str, str] | None = None,
    link: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    rows = await _read(request, lambda s: list(people.users_of(s, user.customer_id)))
    return render(
        request,
        "users.html",
        user,
        status=status,
        users=rows,
        roles=people.ROLES,
        errors=errors or {},
        link=link,
        form=form or {},
    )


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request) -> Response:
    user = await current_user(request)
    people.require_role(user, "admin")
    return await _users_page(request, user)


@router.post("/users", response_class=HTMLResponse)
async def create_user(request: Request) -> Response:
    user = await current_user(request)
    fields = await form_of(request, user.csrf_token)
    people.require_role(user, "admin")
    services = _services(request)
    policy = _policy(request)
    try:
        form = schemas.parse(schemas.UserForm, fields)

        def work(session: Session) -> tuple[str, str]:
            new = people.create_user(
                session, services.clock, user.customer_id, form.email, form.role
            )
            token = people.issue_link(session, services.clock, services.secret_hasher, new, policy)
            return new.email, token

        email, token = await _write(request, user, work)
    except ValidationFailed as exc:
        return await _users_page(request, user, 400, errors_by_pointer(exc), form=fields)
    return await _users_page(
        request, user, 201, link={"email": email, "url": sign_in_link(request, token)}
    )


@router.post("/users/{user_id}/{what}", response_class=HTMLResponse)
async def change_user(request: Request, user_id: str, what: str) -> Response:
    user = await current_user(request)
    if what not in ("role", "disable", "enable", "link"):
        raise NotFound(f"no action {shown(what, 40)}")
    fields = await form_of(request, user.csrf_token)
    people.require_role(user, "admin")
    services = _services(request)
    policy = _policy(request)
    try:
        if what == "role":
            form = schemas.parse(schemas.RoleForm, fields)
            await _write(
                request,
                user,
                lambda s: people.set_role(s, services.clock, user, user_id, form.role),
            )
        elif what in ("disable", "enable"):
            schemas.parse(schemas.Empty, fields)
            await _write(
                request,
                user,
                lambda s: people.set_disabled(s, services.clock, user, user_id, what == "disable"),
            )
        else:
            schemas.parse(schemas.Empty, fields)

            def work(session: Session) -> tuple[str, str]:
                target = people.user_of(session, user.customer_id, user_id)
                token = people.issue_link(
                    session, services.clock, services.secret_hasher, target, policy
                )
                return target.email, token

            email, token = await _write(request, user, work)
            return await _users_page(
                request, user, link={"email": email, "url": sign_in_link(request, token)}
            )
    except ValidationFailed as exc:
        return await _users_page(request, user, 400, errors_by_pointer(exc))
    return RedirectResponse("/portal/users", status_code=303)


# -- static files ---------------------------------------------------------------------------

_STATIC = {
    "portal.css": "text/css",
    "portal.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}


@cache
def _static(name: str) -> bytes:
    return resources.files("iod.portal").joinpath("static", name).read_bytes()


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:
        raise NotFound(f"no file {shown(name, 40)}")
    return Response(
        _static(name),
        media_type=_STATIC[name],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
