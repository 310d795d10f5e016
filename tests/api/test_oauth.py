"""OAuth 2.0 through the real ASGI app: the token endpoint (RFC 6749 §4.4, §5.2), its
metadata and keys (RFC 8414, RFC 7517), and bearer tokens on the resource endpoints
(RFC 6750)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from iod.app import Services
from iod.auth.tokens import TokenService
from iod.customers import service as customers
from iod.infra import middleware
from iod.infra.clock import FrozenClock
from iod.infra.ids import new_id
from iod.models import Client
from tests.conftest import Tenant, get_token, nothing_written

BASE = "/internet-on-demand/connections"
TOKEN = "/oauth2/token"
LOC = "PL0001247634"
GRANT = {"grant_type": "client_credentials"}

# --- helpers ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value).encode())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    # RFC 6749 §2.3.1: each part is form-urlencoded before base64.
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """RFC 6749 §5.2: JSON with `error` (and a description), never cached."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["x-request-id"]
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str) and body["error_description"]
    assert set(body) <= {"error", "error_description", "error_uri"}
    if status == 401:
        assert response.headers["www-authenticate"].lower().startswith("basic ")
        assert 'realm="' in response.headers["www-authenticate"]
    return body


def assert_token(response: httpx.Response, scope: str) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] == 86400
    assert body["scope"] == scope
    assert claims_of(body["access_token"])["scope"] == scope
    return str(body["access_token"])


ANY_ERROR = "*"


def assert_bearer_problem(
    response: httpx.Response, status: int, error: str | None, scope: str | None = None
) -> None:
    """RFC 6750 §3: a Bearer challenge with the realm; `error` None means no error code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    assert body["requestId"] == response.headers["x-request-id"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'realm="internet-on-demand"' in challenge
    if error is None:
        assert "error=" not in challenge
    elif error != ANY_ERROR:
        assert f'error="{error}"' in challenge
    if scope is not None:
        assert f'scope="{scope}"' in challenge


def every_operation(
    api: TestClient, connection_id: str, headers: dict[str, str]
) -> dict[str, httpx.Response]:
    return {
        "list": api.get(BASE, headers=headers),
        "get": api.get(f"{BASE}/{connection_id}", headers=headers),
        "create": api.post(
            BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers
        ),
        "update": api.put(
            f"{BASE}/{connection_id}/bandwidth", json={"bandwidth": "1 Gbps"}, headers=headers
        ),
    }


def assert_all_refused(
    api: TestClient,
    services: Services,
    connection_id: str,
    headers: dict[str, str],
    error: str | None = "invalid_token",
) -> None:
    with nothing_written(services):
        responses = every_operation(api, connection_id, headers)
    for name, response in responses.items():
        assert response.status_code == 401, (name, response.text)
        assert_bearer_problem(response, 401, error)


def sign(services: Services, claims: dict[str, Any], **header: Any) -> str:
    key = services.keys.signing_key
    headers = {"typ": "at+jwt", "kid": key.kid, **header}
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers=headers)


def good_claims(services: Services, acme: Tenant, **changes: Any) -> dict[str, Any]:
    now = int(services.clock.now().timestamp())
    claims = {
        "iss": services.tokens.issuer,
        "aud": services.tokens.audience,
        "sub": acme.client_id,
        "client_id": acme.client_id,
        "customer_id": acme.customer_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": new_id("jti"),
        "scope": "read write",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


class QuietLog:
    """Stands in for the middleware's logger where a 500 is expected: rendering the
    traceback costs seconds and says nothing the assertion does not."""

    def __init__(self) -> None:
        self.exceptions: list[str] = []

    def exception(self, event: str, **kw: Any) -> None:
        self.exceptions.append(event)

    def info(self, event: str, **kw: Any) -> None:
        pass


# --- fixtures --------------------------------------------------------------------------------


SECRET = "correct-horse-battery-staple-" + "x" * 16


@functools.cache
def secret_hash() -> str:
    # A real argon2id hash, with the cheapest parameters: verifying reads them from the hash.
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(SECRET)


@pytest.fixture
def make_client(services: Services):  # type: ignore[no-untyped-def]
    """Like conftest's make_tenant, but every client's secret is SECRET, hashed once with cheap
    argon2 parameters: the production parameters are slow on purpose."""

    def make(scopes: str = "read write", name: str = "Acme") -> Tenant:
        with services.db.write() as session:
            customer = customers.create_customer(session, services.clock, name)
            client_id = new_id("cli")
            session.add(
                Client(
                    id=client_id,
                    customer_id=customer.id,
                    name="",
                    secret_hash=secret_hash(),
                    scopes=scopes,
                    enabled=True,
                    created_at=services.clock.now(),
                )
            )
        return Tenant(customer.id, client_id, SECRET)

    return make


@pytest.fixture
def acme(make_client) -> Tenant:  # type: ignore[no-untyped-def]
    return make_client()  # type: ignore[no-any-return]


def mint(services: Services, tenant: Tenant, scopes: str = "read write") -> str:
    """A token as the token endpoint would issue it, without the argon2 verify."""
    return services.tokens.issue(tenant.client_id, tenant.customer_id, scopes.split())


@pytest.fixture
def connection_id(api: TestClient, services: Services, acme: Tenant) -> str:
    headers = bearer(mint(services, acme))
    response = api.post(BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# === the token endpoint =======================================================================


def test_basic_auth_issues_a_token(api, tenant, services, clock: FrozenClock) -> None:
    response = api.post(TOKEN, data=GRANT, auth=(tenant.client_id, tenant.client_secret))
    token = assert_token(response, "read write")
    assert response.headers.get("pragma") == "no-cache"
    claims = claims_of(token)
    assert claims["iss"] == services.settings.issuer.rstrip("/")
    assert claims["aud"] == services.settings.audience
    assert claims["sub"] == claims["client_id"] == tenant.client_id
    assert claims["customer_id"] == tenant.customer_id
    assert claims["iat"] == int(clock.now().timestamp())
    assert claims["exp"] - claims["iat"] == 86400
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["typ"].lower() in ("at+jwt", "application/at+jwt")
    assert api.get(BASE, headers=bearer(token)).status_code == 200


def test_basic_auth_with_form_encoded_credentials(api, services) -> None:
    secret = "p@ss:w/rd+x %"
    with services.db.write() as session:
        customer = customers.create_customer(session, services.clock, "Encoded")
        client = customers.create_client(
            session,
            services.clock,
            customer.id,
            "read",
            hasher=services.secret_hasher,
            client_secret=secret,
        )
    response = api.post(TOKEN, data=GRANT, headers=basic(client.client_id, secret))
    assert_token(response, "read")


def test_client_secret_post_issues_a_token(api, acme) -> None:
    form = {**GRANT, "client_id": acme.client_id, "client_secret": acme.client_secret}
    token = assert_token(api.post(TOKEN, data=form), "read write")
    assert api.get(BASE, headers=bearer(token)).status_code == 200


def test_form_with_charset_is_accepted(api, acme) -> None:
    form = f"grant_type=client_credentials&client_id={acme.client_id}"
    form += f"&client_secret={acme.client_secret}"
    response = api.post(
        TOKEN,
        content=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert_token(response, "read write")


@pytest.mark.parametrize("method", ["basic", "post"])
def test_wrong_secret_is_invalid_client(api, acme, method: str) -> None:
    wrong = acme.client_secret[:-1] + ("A" if acme.client_secret[-1] != "A" else "B")
    if method == "basic":
        response = api.post(TOKEN, data=GRANT, auth=(acme.client_id, wrong))
    else:
        form = {**GRANT, "client_id": acme.client_id, "client_secret": wrong}
        response = api.post(TOKEN, data=form)
    body = assert_oauth_error(response, 401, "invalid_client")
    assert acme.client_secret not in json.dumps(body)


@pytest.mark.parametrize("method", ["basic", "post"])
@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("cli_unknown", id="unknown"),
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("x" * 5000, id="very-long"),
        pytest.param("' OR '1'='1", id="sql"),
        pytest.param("\u00e9\u20ac", id="non-ascii"),
    ],
)
def test_unknown_client_is_invalid_client(api, acme, method: str, client_id: str) -> None:
    if method == "basic":
        response = api.post(TOKEN, data=GRANT, headers=basic(client_id, acme.client_secret))
    else:
        form = {**GRANT, "client_id": client_id, "client_secret": acme.client_secret}
        response = api.post(TOKEN, data=form)
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize("method", ["basic", "post"])
def test_nul_in_client_id_is_invalid_client(
    api, acme, services, request, monkeypatch, method: str
) -> None:
    monkeypatch.setattr(middleware, "log", QuietLog())
    client_id = "cli\u0000x"
    if method == "basic":
        response = api.post(TOKEN, data=GRANT, headers=basic(client_id, acme.client_secret))
    else:
        form = {**GRANT, "client_id": client_id, "client_secret": acme.client_secret}
        response = api.post(TOKEN, data=form)
    assert_oauth_error(response, 401, "invalid_client")


def test_empty_secret_is_invalid_client(api, acme) -> None:
    response = api.post(TOKEN, data=GRANT, headers=basic(acme.client_id, ""))
    assert_oauth_error(response, 401, "invalid_client")


def test_no_client_authentication_is_invalid_client(api, acme) -> None:
    assert_oauth_error(api.post(TOKEN, data=GRANT), 401, "invalid_client")
    only_id = api.post(TOKEN, data={**GRANT, "client_id": acme.client_id})
    assert_oauth_error(only_id, 401, "invalid_client")


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic !!!not-base64!!!", id="not-base64"),
        pytest.param("Basic " + base64.b64encode(b"no-colon").decode(), id="no-colon"),
        pytest.param("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), id="not-utf8"),
        pytest.param("Basic", id="empty"),
        pytest.param("Bearer abc", id="bearer"),
        pytest.param("Digest username=x", id="digest"),
    ],
)
def test_malformed_client_authentication_is_invalid_client(api, authorization: str) -> None:
    response = api.post(TOKEN, data=GRANT, headers={"Authorization": authorization})
    assert_oauth_error(response, 401, "invalid_client")


def test_two_authentication_methods_are_invalid_request(api, acme) -> None:
    form = {**GRANT, "client_id": acme.client_id, "client_secret": acme.client_secret}
    response = api.post(TOKEN, data=form, auth=(acme.client_id, acme.client_secret))
    assert_oauth_error(response, 400, "invalid_request")


def test_client_id_differing_from_basic_is_invalid_request(api, acme, make_client) -> None:
    other = make_client(name="Other")
    response = api.post(
        TOKEN,
        data={**GRANT, "client_id": other.client_id},
        auth=(acme.client_id, acme.client_secret),
    )
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "grant_type",
    ["password", "authorization_code", "refresh_token", "implicit", "CLIENT_CREDENTIALS", "x"],
)
def test_unsupported_grant_type(api, acme, grant_type: str) -> None:
    response = api.post(
        TOKEN,
        data={"grant_type": grant_type, "username": "u", "password": "p"},
        auth=(acme.client_id, acme.client_secret),
    )
    assert_oauth_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({}, id="missing"),
        pytest.param({"grant_type": ""}, id="empty"),
        pytest.param({"scope": "read"}, id="only-scope"),
        pytest.param({"granttype": "client_credentials"}, id="misspelt"),
    ],
)
def test_missing_grant_type_is_invalid_request(api, acme, form: dict[str, str]) -> None:
    response = api.post(TOKEN, data=form, auth=(acme.client_id, acme.client_secret))
    assert_oauth_error(response, 400, "invalid_request")


def test_repeated_parameters_are_invalid_request(api, acme) -> None:
    auth = (acme.client_id, acme.client_secret)
    for body in (
        b"grant_type=client_credentials&grant_type=client_credentials",
        b"grant_type=client_credentials&scope=read&scope=write",
    ):
        response = api.post(
            TOKEN,
            content=body,
            auth=auth,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b'{"grant_type": "client_credentials"}', "application/json", id="json"),
        pytest.param(b"grant_type=client_credentials", "text/plain", id="text"),
        pytest.param(b"grant_type=client_credentials", None, id="no-content-type"),
        pytest.param(
            b"--x\r\nContent-Disposition: form-data; name=grant_type\r\n\r\n"
            b"client_credentials\r\n--x--\r\n",
            "multipart/form-data; boundary=x",
            id="multipart",
        ),
        pytest.param(
            b"grant_type=client_credentials&x=\xff",
            "application/x-www-form-urlencoded",
            id="not-utf8",
        ),
    ],
)
def test_body_that_is_not_a_form_is_invalid_request(
    api, acme, content: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.post(
        TOKEN, content=content, headers=headers, auth=(acme.client_id, acme.client_secret)
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_json_body_with_credentials_is_invalid_request(api, acme) -> None:
    body = {**GRANT, "client_id": acme.client_id, "client_secret": acme.client_secret}
    assert_oauth_error(api.post(TOKEN, json=body), 400, "invalid_request")


@pytest.mark.parametrize(
    ("client_scopes", "asked"),
    [
        pytest.param("read", "write", id="read-client-asks-write"),
        pytest.param("read", "read write", id="read-client-asks-both"),
        pytest.param("write", "read", id="write-client-asks-read"),
        pytest.param("read write", "admin", id="unknown-scope"),
        pytest.param("read write", "read admin", id="read-and-unknown"),
        pytest.param("read write", "READ", id="upper-case"),
        pytest.param("read write", "read,write", id="comma-separated"),
        pytest.param("read write", "openid", id="openid"),
    ],
)
def test_scope_the_client_may_not_have_is_invalid_scope(
    api, make_client, client_scopes: str, asked: str
) -> None:
    client = make_client(client_scopes)
    response = api.post(
        TOKEN, data={**GRANT, "scope": asked}, auth=(client.client_id, client.client_secret)
    )
    assert_oauth_error(response, 400, "invalid_scope")


@pytest.mark.parametrize(
    ("client_scopes", "asked", "granted"),
    [
        pytest.param("read write", None, "read write", id="omitted-both"),
        pytest.param("read", None, "read", id="omitted-read"),
        pytest.param("write", None, "write", id="omitted-write"),
        pytest.param("read write", "read", "read", id="read"),
        pytest.param("read write", "write", "write", id="write"),
        pytest.param("read write", "write read", "read write", id="both-any-order"),
        pytest.param("read write", "read read", "read", id="repeated"),
        pytest.param("read", "read", "read", id="read-client-read"),
    ],
)
def test_granted_scopes(
    api, make_client, client_scopes: str, asked: str | None, granted: str
) -> None:
    client = make_client(client_scopes)
    form = dict(GRANT) if asked is None else {**GRANT, "scope": asked}
    response = api.post(TOKEN, data=form, auth=(client.client_id, client.client_secret))
    assert_token(response, granted)


@pytest.mark.parametrize("method", ["basic", "post"])
def test_disabled_client_cannot_get_a_token(api, acme, services, method: str) -> None:
    with services.db.write() as session:
        customers.set_client_enabled(session, services.clock, acme.client_id, False)
    if method == "basic":
        response = api.post(TOKEN, data=GRANT, auth=(acme.client_id, acme.client_secret))
    else:
        form = {**GRANT, "client_id": acme.client_id, "client_secret": acme.client_secret}
        response = api.post(TOKEN, data=form)
    assert_oauth_error(response, 401, "invalid_client")
    with services.db.write() as session:
        customers.set_client_enabled(session, services.clock, acme.client_id, True)
    assert_token(
        api.post(TOKEN, data=GRANT, auth=(acme.client_id, acme.client_secret)), "read write"
    )


def test_token_endpoint_is_not_a_problem_document(api) -> None:
    """The token endpoint's own errors are RFC 6749 §5.2 JSON, not RFC 9457 problems."""
    response = api.post(TOKEN, data=GRANT)
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert "type" not in response.json()


def test_token_endpoint_only_accepts_post(api, acme) -> None:
    response = api.get(TOKEN, params={**GRANT}, auth=(acme.client_id, acme.client_secret))
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert "access_token" not in response.text


# === metadata and keys ========================================================================


def test_authorization_server_metadata(api, services) -> None:
    response = api.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/json"
    meta = response.json()
    issuer = services.settings.issuer.rstrip("/")
    assert meta["issuer"] == issuer
    assert urlsplit(meta["issuer"]).scheme in ("http", "https")
    assert not urlsplit(meta["issuer"]).query and not urlsplit(meta["issuer"]).fragment
    assert meta["token_endpoint"] == f"{issuer}{TOKEN}"
    assert meta["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert "client_credentials" in meta["grant_types_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    assert {"read", "write"} <= set(meta["scopes_supported"])
    # The advertised endpoints are served here.
    assert api.get(urlsplit(meta["jwks_uri"]).path).status_code == 200
    assert api.post(urlsplit(meta["token_endpoint"]).path, data=GRANT).status_code == 401


def test_jwks_publishes_the_signing_key_and_no_secrets(api, acme) -> None:
    response = api.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "EC" and key["crv"] == "P-256"
        assert key["alg"] == "ES256" and key["use"] == "sig"
        assert key["kid"] and key["x"] and key["y"]
        assert "d" not in key, "a private key part is published"
    token = get_token(api, acme)
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in keys if k["kid"] == kid]
    meta = api.get("/.well-known/oauth-authorization-server").json()
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=claims_of(token)["aud"],
        issuer=meta["issuer"],
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["client_id"] == acme.client_id


# === bearer tokens on the resource endpoints (RFC 6750) =======================================


def test_valid_token_reaches_every_operation(api, acme, connection_id) -> None:
    responses = every_operation(api, connection_id, bearer(get_token(api, acme)))
    assert {k: r.status_code for k, r in responses.items()} == {
        "list": 200,
        "get": 200,
        "create": 201,
        "update": 200,
    }


def test_missing_token_is_401_with_a_bare_challenge(api, services, connection_id) -> None:
    assert_all_refused(api, services, connection_id, {}, error=None)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer abc", id="not-a-jwt"),
        pytest.param("Basic xyz", id="basic"),
        pytest.param("Basic " + base64.b64encode(b"cli:secret").decode(), id="basic-creds"),
        pytest.param("Bearer ", id="bearer-space"),
        pytest.param("Bearer", id="bearer-only"),
        pytest.param("Token abc", id="other-scheme"),
        pytest.param("Bearer a.b.c", id="three-garbage-parts"),
        pytest.param("Bearer abc def", id="two-tokens"),
        pytest.param("Bearer " + "A" * 8000, id="huge"),
        pytest.param("Bearer " + b64json({"alg": "ES256"}) + "..", id="empty-parts"),
        pytest.param("Bearer e30.e30.e30", id="empty-objects"),
        pytest.param("Bearer " + b64url(b"[1]") + ".e30.AAAA", id="header-is-a-list"),
        pytest.param("Bearer " + b64url(b"\xff\xfe") + ".e30.AAAA", id="header-not-utf8"),
    ],
)
def test_malformed_authorization_is_401(api, services, connection_id, authorization: str) -> None:
    with nothing_written(services):
        responses = every_operation(api, connection_id, {"Authorization": authorization})
    for name, response in responses.items():
        assert response.status_code == 401, (name, response.text)
        # RFC 6750 leaves the error code of a malformed header to the server.
        assert_bearer_problem(response, 401, error=ANY_ERROR)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_bearer_scheme_is_case_insensitive(api, acme, scheme: str) -> None:
    token = get_token(api, acme)
    assert api.get(BASE, headers={"Authorization": f"{scheme} {token}"}).status_code == 200


def test_expired_token_is_401_invalid_token(
    api, acme, services, clock: FrozenClock, connection_id
) -> None:
    used = get_token(api, acme)  # verified once, so the verifier has it cached
    unused = get_token(api, acme, scope="read write")
    assert api.get(BASE, headers=bearer(used)).status_code == 200
    clock.advance(timedelta(seconds=86399))
    assert api.get(BASE, headers=bearer(used)).status_code == 200
    clock.advance(timedelta(seconds=1))
    assert_all_refused(api, services, connection_id, bearer(used))
    assert_all_refused(api, services, connection_id, bearer(unused))
    fresh = get_token(api, acme)
    assert api.get(BASE, headers=bearer(fresh)).status_code == 200


def test_token_issued_in_the_future_is_401(
    api, acme, services, clock: FrozenClock, connection_id
) -> None:
    def issued_at(offset: timedelta) -> str:
        tokens = TokenService(
            services.keys,
            FrozenClock(clock.now() + offset),
            issuer=services.tokens.issuer,
            audience=services.tokens.audience,
            ttl=3600,
        )
        return tokens.issue(acme.client_id, acme.customer_id, ["read", "write"])

    assert api.get(BASE, headers=bearer(issued_at(timedelta(seconds=30)))).status_code == 200
    assert_all_refused(api, services, connection_id, bearer(issued_at(timedelta(minutes=5))))


@pytest.mark.parametrize("position", [0, 20, 42, 60, -10])
def test_bad_signature_is_401(api, acme, services, connection_id, position: int) -> None:
    token = mint(services, acme)
    head, payload, signature = token.split(".")
    chars = list(signature)
    chars[position] = "A" if chars[position] != "A" else "B"
    forged = ".".join([head, payload, "".join(chars)])
    assert forged != token
    assert_all_refused(api, services, connection_id, bearer(forged))


def test_changed_claims_break_the_signature(api, acme, services, connection_id) -> None:
    token = get_token(api, acme, scope="read")
    head, _, signature = token.split(".")
    claims = claims_of(token)
    claims["scope"] = "read write"
    forged = ".".join([head, b64json(claims), signature])
    assert_all_refused(api, services, connection_id, bearer(forged))


def test_alg_none_token_is_401(api, acme, services, connection_id) -> None:
    token = mint(services, acme)
    header = {**jwt.get_unverified_header(token), "alg": "none"}
    claims = claims_of(token)
    for unsigned in (
        f"{b64json(header)}.{b64json(claims)}.",
        f"{b64json({**header, 'alg': 'None'})}.{b64json(claims)}.",
        f"{b64json(header)}.{b64json(claims)}.{token.split('.')[2]}",
    ):
        assert_all_refused(api, services, connection_id, bearer(unsigned))


def test_hs256_signed_with_the_public_key_is_401(api, acme, services, connection_id) -> None:
    """The classic algorithm confusion: an HMAC keyed with the published public key."""
    token = mint(services, acme)
    kid = jwt.get_unverified_header(token)["kid"]
    public = services.keys.public_key(kid)
    assert public is not None
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}."
    signing_input += b64json(claims_of(token))
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert_all_refused(api, services, connection_id, bearer(f"{signing_input}.{b64url(mac)}"))


def test_token_signed_by_another_key_is_401(api, acme, services, connection_id) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    claims = good_claims(services, acme)
    real_kid = services.keys.signing_key.kid
    for kid in (real_kid, "made-up-kid"):
        token = jwt.encode(
            claims, stranger, algorithm="ES256", headers={"typ": "at+jwt", "kid": kid}
        )
        assert_all_refused(api, services, connection_id, bearer(token))
    no_kid = jwt.encode(claims, stranger, algorithm="ES256", headers={"typ": "at+jwt"})
    assert_all_refused(api, services, connection_id, bearer(no_kid))


@pytest.mark.parametrize(
    ("issuer", "audience"),
    [
        pytest.param("https://evil.example", None, id="wrong-issuer"),
        pytest.param("{issuer}/", None, id="issuer-with-slash"),
        pytest.param("{issuer}/other", None, id="issuer-with-path"),
        pytest.param(None, "another-api", id="wrong-audience"),
        pytest.param("https://evil.example", "another-api", id="both"),
    ],
)
def test_wrong_issuer_or_audience_is_401(
    api, acme, services, connection_id, issuer: str | None, audience: str | None
) -> None:
    tokens = TokenService(
        services.keys,
        services.clock,
        issuer=(issuer or "{issuer}").format(issuer=services.tokens.issuer),
        audience=audience or services.tokens.audience,
        ttl=3600,
    )
    token = tokens.issue(acme.client_id, acme.customer_id, ["read", "write"])
    assert_all_refused(api, services, connection_id, bearer(token))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"customer_id": None}, id="no-customer"),
        pytest.param({"client_id": None}, id="no-client-id"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"iat": None}, id="no-iat"),
        pytest.param({"aud": None}, id="no-aud"),
        pytest.param({"iss": None}, id="no-iss"),
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"sub": None}, id="no-sub"),
        pytest.param({"scope": ["read", "write"]}, id="scope-list"),
        pytest.param({"customer_id": 42}, id="customer-number"),
        pytest.param({"exp": "9999999999"}, id="exp-string"),
        pytest.param({"exp": 1e12}, id="exp-float"),
        pytest.param({"client_id": "cli_nobody"}, id="unknown-client"),
    ],
)
def test_token_with_bad_claims_is_401(
    api, acme, services, connection_id, changes: dict[str, Any]
) -> None:
    token = sign(services, good_claims(services, acme, **changes))
    assert_all_refused(api, services, connection_id, bearer(token))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "id_token", ""])
def test_token_that_is_not_an_access_token_is_401(
    api, acme, services, connection_id, typ: str
) -> None:
    token = sign(services, good_claims(services, acme), typ=typ)
    assert_all_refused(api, services, connection_id, bearer(token))


@pytest.mark.parametrize("typ", [123, ["at+jwt"], {"t": 1}, None])
def test_token_with_non_string_typ_is_401(api, services, connection_id, typ: Any) -> None:
    # No valid signature is needed to reach the header checks.
    token = f"{b64json({'alg': 'ES256', 'typ': typ, 'kid': 'x'})}.{b64json({})}.AAAA"
    assert_all_refused(api, services, connection_id, bearer(token))


def test_disabled_client_token_is_401_invalid_token(api, acme, services, connection_id) -> None:
    token = get_token(api, acme)
    assert api.get(BASE, headers=bearer(token)).status_code == 200  # cached as verified
    with services.db.write() as session:
        customers.set_client_enabled(session, services.clock, acme.client_id, False)
    assert_all_refused(api, services, connection_id, bearer(token))
    response = api.get(BASE, headers=bearer(token))
    assert "disabled" in response.json()["detail"]
    with services.db.write() as session:
        customers.set_client_enabled(session, services.clock, acme.client_id, True)
    assert api.get(BASE, headers=bearer(token)).status_code == 200


def test_read_scope_cannot_write(api, acme, services, connection_id) -> None:
    token = get_token(api, acme, scope="read")
    with nothing_written(services):
        responses = every_operation(api, connection_id, bearer(token))
    assert responses["list"].status_code == 200
    assert responses["get"].status_code == 200
    for name in ("create", "update"):
        assert_bearer_problem(responses[name], 403, "insufficient_scope", scope="write")
        assert responses[name].json()["type"] == "/problems/insufficient-scope"


def test_read_only_client_cannot_write(api, make_client, services) -> None:
    reader = make_client("read")
    token = get_token(api, reader)
    with nothing_written(services):
        response = api.post(
            BASE, json={"bandwidth": "100 Mbps", "locationId": LOC}, headers=bearer(token)
        )
    assert_bearer_problem(response, 403, "insufficient_scope", scope="write")


def test_write_scope_cannot_read(api, acme, services, connection_id) -> None:
    token = get_token(api, acme, scope="write")
    for url in (BASE, f"{BASE}/{connection_id}"):
        assert_bearer_problem(
            api.get(url, headers=bearer(token)), 403, "insufficient_scope", scope="read"
        )


def test_scope_is_checked_before_the_body(api, acme, services, connection_id) -> None:
    """A reader learns nothing about write bodies: 403 even for a body that would be 400."""
    token = get_token(api, acme, scope="read")
    with nothing_written(services):
        post = api.post(BASE, json={"bandwidth": "fast"}, headers=bearer(token))
        put = api.put(
            f"{BASE}/{connection_id}/bandwidth", json={"bandwidth": 1}, headers=bearer(token)
        )
    assert_bearer_problem(post, 403, "insufficient_scope")
    assert_bearer_problem(put, 403, "insufficient_scope")


def test_token_is_checked_before_the_body(api, services, connection_id) -> None:
    with nothing_written(services):
        post = api.post(BASE, json={"bandwidth": "fast"})
        put = api.put(f"{BASE}/{connection_id}/bandwidth", json={"bandwidth": 1})
    assert_bearer_problem(post, 401, None)
    assert_bearer_problem(put, 401, None)
