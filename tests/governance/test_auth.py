"""Admin API authentication and authorization, with real RSA keys, real JWTs and a local
identity provider (OpenID configuration and JWKS served over HTTP by aiohttp)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from aos.api.http import error_response
from aos.errors import AuthenticationError, ConfigurationError, PermissionDeniedError
from aos.governance.auth import (
    Authenticator,
    AuthSettings,
    Caller,
    IdentityProviderUnavailableError,
    Role,
    authenticate,
    authenticator,
    authorize,
    close_authenticator,
    host_auth_level,
    require,
)
from tests.governance.identity import (
    AUDIENCE,
    CLIENT_APP,
    CLIENT_ID,
    OTHER_TENANT,
    TENANT,
    USER_OID,
    V1_ISSUER,
    IdentityProvider,
    bearer,
    claims,
    sign,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def auth(clock: Clock) -> AsyncIterator[Authenticator]:
    authn = Authenticator(validator_options={"clock": clock})
    yield authn
    await authn.close()


def entra_env(idp: IdentityProvider, **extra: str) -> dict[str, str]:
    return {
        "AOS_ADMIN_AUTH": "entra",
        "AOS_AUTH_TENANT_ID": TENANT,
        "AOS_AUTH_AUDIENCE": f"{AUDIENCE},{CLIENT_ID}",
        "AOS_AUTH_AUTHORITY": idp.url,
        **extra,
    }


@pytest.fixture
def settings(idp: IdentityProvider) -> AuthSettings:
    return AuthSettings.from_env(entra_env(idp))


def assert_not_leaked(secret: str, *texts: str) -> None:
    """Neither the credential nor any of its dot-separated parts appears in any text."""
    parts = [secret, *(part for part in secret.split(".") if len(part) >= 8)]
    for text in texts:
        for part in parts:
            assert part not in text


async def rejected(
    auth: Authenticator, settings: AuthSettings, headers: dict[str, str], **params: str
) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        await auth.authenticate(headers, params, settings)
    return caught.value


# -- valid tokens -----------------------------------------------------------------------------


async def test_valid_token_gives_operator_and_reader(
    auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    caller = await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)
    assert caller == Caller(
        kind="entra",
        subject=USER_OID,
        name="alice@contoso.com",
        tenant=TENANT,
        roles=frozenset({Role.READER, Role.OPERATOR}),
        app_id=CLIENT_APP,
        app_only=False,
        username="alice@contoso.com",
    )
    assert caller.role is Role.OPERATOR
    assert caller.actor == "entra:alice@contoso.com"
    authorize(caller, Role.READER)
    authorize(caller, Role.OPERATOR)
    with pytest.raises(PermissionDeniedError) as denied:
        authorize(caller, Role.ADMIN)
    assert "has role operator; this route needs admin" in denied.value.message
    answer = error_response(denied.value)
    assert answer.status == 403
    assert answer.body["error"]["code"] == "forbidden"
    assert "WWW-Authenticate" not in answer.headers


async def test_second_accepted_audience_and_bearer_scheme_case(
    auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    token = sign(keys["k1"], aud=CLIENT_ID)
    caller = await auth.authenticate({"authorization": f"bearer  {token}"}, {}, settings)
    assert caller.role is Role.OPERATOR


async def test_v1_token_is_accepted(
    auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    token = sign(
        keys["k1"],
        iss=V1_ISSUER,
        ver="1.0",
        preferred_username=None,
        name=None,
        azp=None,
        upn="bob@contoso.com",
        appid=CLIENT_APP,
        roles=["AOS.Admin"],
    )
    caller = await auth.authenticate(bearer(token), {}, settings)
    assert caller.name == "bob@contoso.com"
    assert caller.app_id == CLIENT_APP
    assert caller.roles == frozenset(Role)
    assert caller.actor == "entra:bob@contoso.com"


async def test_app_only_token_actor_uses_the_app_id(
    auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    service_principal = str(uuid.uuid4())
    token = sign(
        keys["k1"],
        oid=service_principal,
        sub=service_principal,
        preferred_username=None,
        name=None,
        scp=None,
        roles=["AOS.Admin"],
    )
    caller = await auth.authenticate(bearer(token), {}, settings)
    assert caller.app_only
    assert caller.subject == service_principal
    assert caller.actor == f"entra:app:{CLIENT_APP}"
    assert caller.role is Role.ADMIN


async def test_templated_discovery_issuer_is_filled_in(
    idp: IdentityProvider, auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    idp.issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
    caller = await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)
    assert caller.tenant == TENANT


async def test_roles_map_unknown_ignored_and_none_means_forbidden(
    auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    token = sign(keys["k1"], roles=["Something.Else", "AOS.Reader"])
    caller = await auth.authenticate(bearer(token), {}, settings)
    assert caller.roles == frozenset({Role.READER})

    caller = await auth.authenticate(bearer(sign(keys["k1"], roles=None)), {}, settings)
    assert caller.roles == frozenset() and caller.role is None
    with pytest.raises(PermissionDeniedError) as denied:
        authorize(caller, Role.READER)
    assert "has no AOS role; this route needs reader" in denied.value.message


async def test_custom_role_map_replaces_the_default(
    idp: IdentityProvider, auth: Authenticator, keys: dict
) -> None:
    settings = AuthSettings.from_env(
        entra_env(idp, AOS_AUTH_ROLE_MAP="Contoso.Admin=admin, Contoso.Viewer=Reader")
    )
    admin = await auth.authenticate(bearer(sign(keys["k1"], roles=["Contoso.Admin"])), {}, settings)
    assert admin.role is Role.ADMIN
    viewer = await auth.authenticate(
        bearer(sign(keys["k1"], roles=["Contoso.Viewer"])), {}, settings
    )
    assert viewer.role is Role.READER
    default_name = await auth.authenticate(
        bearer(sign(keys["k1"], roles=["AOS.Admin"])), {}, settings
    )
    assert default_name.role is None


# -- rejected tokens --------------------------------------------------------------------------


async def test_expired_token(auth: Authenticator, settings: AuthSettings, keys: dict) -> None:
    now = int(time.time())
    token = sign(keys["k1"], iat=now - 7200, nbf=now - 7200, exp=now - 600)
    error = await rejected(auth, settings, bearer(token))
    assert "the bearer token expired at" in error.message and "get a new one" in error.message
    answer = error_response(error)
    assert answer.status == 401
    assert answer.body["error"]["code"] == "unauthenticated"
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith(
        'Bearer error="invalid_token", error_description="the bearer token expired at'
    )
    assert_not_leaked(token, error.message, challenge)


async def test_expired_within_leeway_is_accepted(
    auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    now = int(time.time())
    token = sign(keys["k1"], iat=now - 3600, nbf=now - 3600, exp=now - 20)
    assert (await auth.authenticate(bearer(token), {}, settings)).role is Role.OPERATOR


async def test_token_not_yet_valid(auth: Authenticator, settings: AuthSettings, keys: dict) -> None:
    now = int(time.time())
    token = sign(keys["k1"], iat=now, nbf=now + 600, exp=now + 3600)
    error = await rejected(auth, settings, bearer(token))
    assert "not valid before" in error.message
    issued_later = sign(keys["k1"], iat=now + 600, nbf=None)
    error = await rejected(auth, settings, bearer(issued_later))
    assert "not valid before 20" in error.message


async def test_wrong_audience(auth: Authenticator, settings: AuthSettings, keys: dict) -> None:
    error = await rejected(auth, settings, bearer(sign(keys["k1"], aud="api://someone-else")))
    assert error.message.startswith("audience 'api://someone-else' is not accepted")
    assert f"request a token for {AUDIENCE}" in error.message


async def test_wrong_issuer(auth: Authenticator, settings: AuthSettings, keys: dict) -> None:
    token = sign(keys["k1"], iss=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0")
    error = await rejected(auth, settings, bearer(token))
    assert "is not accepted; request a token from tenant" in error.message
    assert error.message.startswith("issuer ")


async def test_wrong_tenant(auth: Authenticator, settings: AuthSettings, keys: dict) -> None:
    error = await rejected(auth, settings, bearer(sign(keys["k1"], tid=OTHER_TENANT)))
    assert f"is from tenant '{OTHER_TENANT}'" in error.message


async def test_missing_expiry(auth: Authenticator, settings: AuthSettings, keys: dict) -> None:
    error = await rejected(auth, settings, bearer(sign(keys["k1"], exp=None)))
    assert "has no 'exp' claim" in error.message


async def test_signed_by_another_key(
    idp: IdentityProvider, auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    # Claims a published key ID, but signed with a key the tenant never published.
    error = await rejected(auth, settings, bearer(sign(keys["rogue"], kid="k1")))
    assert "signature does not verify" in error.message
    # A key ID the tenant does not publish at all (the key set is fetched again, once).
    error = await rejected(auth, settings, bearer(sign(keys["rogue"], kid="rogue")))
    assert f"is not signed by a key of tenant {TENANT}" in error.message
    # No key ID.
    error = await rejected(auth, settings, bearer(sign(keys["k1"], kid=None)))
    assert "names no signing key" in error.message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_hs256_and_none_are_rejected(
    auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    hs256 = jwt.encode(
        claims(), "a shared secret of at least 32 bytes", algorithm="HS256", headers={"kid": "k1"}
    )
    none = jwt.encode(claims(), None, algorithm="none", headers={"kid": "k1"})
    # The classic key-confusion forgery: HMAC keyed with the tenant's public key.
    public_pem = (
        keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
        + "."
        + _b64(json.dumps(claims()).encode())
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{_b64(mac)}"
    for token, alg in ((hs256, "HS256"), (none, "none"), (confused, "HS256")):
        error = await rejected(auth, settings, bearer(token))
        assert f"signed with '{alg}'; only RS256" in error.message
        assert_not_leaked(token, error.message)


async def test_missing_credentials_get_a_plain_bearer_challenge(
    auth: Authenticator, settings: AuthSettings
) -> None:
    error = await rejected(auth, settings, {})
    assert error.bearer_error is None
    assert "carries no credentials" in error.message and AUDIENCE in error.message
    answer = error_response(error)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("authorization", "expected", "challenge"),
    [
        ("Bearer", "malformed", "invalid_token"),
        ("Bearer    ", "malformed", "invalid_token"),
        ("Bearer one two", "malformed", "invalid_token"),
        ("Bearer not-a-jwt", "is not a JWT", "invalid_token"),
        ("Bearer a.b.c", "is not a JWT", "invalid_token"),
        ("Basic YWxpY2U6c2VjcmV0", "does not hold a bearer token", None),
        ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "does not hold a bearer token", None),
    ],
)
async def test_malformed_authorization_header(
    auth: Authenticator,
    settings: AuthSettings,
    authorization: str,
    expected: str,
    challenge: str | None,
) -> None:
    error = await rejected(auth, settings, {"authorization": authorization})
    assert expected in error.message
    assert error.bearer_error == challenge
    credential = authorization.partition(" ")[2] or authorization
    if len(credential.strip()) >= 8:
        assert credential.strip() not in error.message
        assert credential.strip() not in error_response(error).headers["WWW-Authenticate"]


async def test_key_rotation_is_picked_up_at_most_every_five_minutes(
    idp: IdentityProvider,
    auth: Authenticator,
    settings: AuthSettings,
    keys: dict,
    clock: Clock,
) -> None:
    await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)
    assert (idp.discovery_requests, idp.jwks_requests) == (1, 1)

    # Cached: no more requests.
    await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)
    assert (idp.discovery_requests, idp.jwks_requests) == (1, 1)

    # The tenant rolls over to k2; a token signed with it makes the validator fetch the keys.
    idp.published = ["k1", "k2"]
    clock.now += 301
    await auth.authenticate(bearer(sign(keys["k2"], kid="k2")), {}, settings)
    assert (idp.discovery_requests, idp.jwks_requests) == (1, 2)

    # Another new key within five minutes of that fetch: not fetched again, so not accepted.
    idp.published = ["k2", "k3"]
    clock.now += 60
    error = await rejected(auth, settings, bearer(sign(keys["k3"], kid="k3")))
    assert "is not signed by a key of tenant" in error.message
    assert idp.jwks_requests == 2

    # Five minutes on, it is.
    clock.now += 241
    caller = await auth.authenticate(bearer(sign(keys["k3"], kid="k3")), {}, settings)
    assert caller.role is Role.OPERATOR
    assert (idp.discovery_requests, idp.jwks_requests) == (1, 3)

    # After a day, discovery and keys are loaded afresh; k1 is gone by then.
    clock.now += 24 * 3600
    error = await rejected(auth, settings, bearer(sign(keys["k1"])))
    assert "is not signed by a key of tenant" in error.message
    assert (idp.discovery_requests, idp.jwks_requests) == (2, 4)


async def test_concurrent_requests_share_one_fetch(
    idp: IdentityProvider, auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    import asyncio

    tokens = [sign(keys["k1"], oid=str(uuid.uuid4())) for _ in range(10)]
    callers = await asyncio.gather(
        *(auth.authenticate(bearer(token), {}, settings) for token in tokens)
    )
    assert len({caller.subject for caller in callers}) == 10
    assert (idp.discovery_requests, idp.jwks_requests) == (1, 1)


async def test_concurrent_requests_share_one_failed_fetch(
    idp: IdentityProvider, auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    import asyncio

    idp.up = False
    results = await asyncio.gather(
        *(auth.authenticate(bearer(sign(keys["k1"])), {}, settings) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, IdentityProviderUnavailableError) for r in results)
    assert idp.discovery_requests == 1
    # The next request tries again, and succeeds once the provider is back.
    idp.up = True
    assert (await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)).role
    assert idp.discovery_requests == 2


async def test_cached_keys_outlive_an_unreachable_provider(
    idp: IdentityProvider, auth: Authenticator, settings: AuthSettings, keys: dict, clock: Clock
) -> None:
    await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)
    idp.up = False
    clock.now += 24 * 3600 + 1
    await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)
    assert idp.discovery_requests == 2
    # The failed refresh is not retried on every request.
    await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)
    assert idp.discovery_requests == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_provider_is_503_not_401(
    idp: IdentityProvider, auth: Authenticator, keys: dict
) -> None:
    settings = AuthSettings.from_env(
        entra_env(idp, AOS_AUTH_AUTHORITY=f"http://127.0.0.1:{_closed_port()}")
    )
    token = sign(keys["k1"])
    with pytest.raises(IdentityProviderUnavailableError) as caught:
        await auth.authenticate(bearer(token), {}, settings)
    assert isinstance(caught.value, ConfigurationError)
    assert "could not fetch the OpenID configuration" in caught.value.message
    assert "AOS_AUTH_AUTHORITY" in caught.value.message
    answer = error_response(caught.value)
    assert answer.status == 503
    assert_not_leaked(token, caught.value.message)

    # A provider that answers with an error: 503 too, naming the settings to check.
    idp.up = False
    with pytest.raises(IdentityProviderUnavailableError) as caught:
        await auth.authenticate(bearer(token), {}, AuthSettings.from_env(entra_env(idp)))
    assert "answered HTTP 503" in caught.value.message
    assert "AOS_AUTH_TENANT_ID" in caught.value.message


async def test_unknown_tenant_at_the_provider_is_503(
    idp: IdentityProvider, auth: Authenticator, keys: dict
) -> None:
    settings = AuthSettings.from_env(entra_env(idp, AOS_AUTH_TENANT_ID=OTHER_TENANT))
    with pytest.raises(IdentityProviderUnavailableError) as caught:
        await auth.authenticate(bearer(sign(keys["k1"])), {}, settings)
    assert "answered HTTP 400" in caught.value.message


# -- App Service authentication ---------------------------------------------------------------


def principal_header(roles: list[str], **extra: str) -> str:
    claim_list = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": USER_OID},
        {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": TENANT},
        {"typ": "preferred_username", "val": "carol@contoso.com"},
        {"typ": "name", "val": "Carol"},
        *({"typ": "roles", "val": role} for role in roles),
        *({"typ": typ, "val": val} for typ, val in extra.items()),
    ]
    principal = {
        "auth_typ": "aad",
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        "claims": claim_list,
    }
    return base64.b64encode(json.dumps(principal).encode()).decode()


@pytest.mark.parametrize("enabled", ["True", "true"])
async def test_app_service_principal_when_platform_auth_is_on(
    idp: IdentityProvider, auth: Authenticator, enabled: str
) -> None:
    settings = AuthSettings.from_env(entra_env(idp, WEBSITE_AUTH_ENABLED=enabled))
    headers = {"x-ms-client-principal": principal_header(["AOS.Admin", "Other"])}
    caller = await auth.authenticate(headers, {}, settings)
    assert caller.kind == "appservice"
    assert caller.subject == USER_OID
    assert caller.name == "carol@contoso.com"
    assert caller.tenant == TENANT
    assert caller.role is Role.ADMIN
    assert caller.actor == "appservice:carol@contoso.com"
    assert idp.discovery_requests == 0  # the platform validated the token


async def test_app_service_principal_from_another_tenant_or_unreadable(
    idp: IdentityProvider, auth: Authenticator
) -> None:
    settings = AuthSettings.from_env(entra_env(idp, WEBSITE_AUTH_ENABLED="True"))
    foreign = principal_header(["AOS.Admin"])
    foreign = base64.b64encode(
        base64.b64decode(foreign).replace(TENANT.encode(), OTHER_TENANT.encode())
    ).decode()
    error = await rejected(auth, settings, {"x-ms-client-principal": foreign})
    assert "from tenant" in error.message
    error = await rejected(auth, settings, {"x-ms-client-principal": "%%% not base64"})
    assert "could not be read" in error.message


@pytest.mark.parametrize("enabled", [None, "False", "1"])
async def test_app_service_principal_ignored_without_platform_auth(
    idp: IdentityProvider, auth: Authenticator, enabled: str | None
) -> None:
    env = entra_env(idp) if enabled is None else entra_env(idp, WEBSITE_AUTH_ENABLED=enabled)
    settings = AuthSettings.from_env(env)
    headers = {"x-ms-client-principal": principal_header(["AOS.Admin"])}
    error = await rejected(auth, settings, headers)
    assert "is ignored because App Service authentication is not enabled" in error.message
    assert error_response(error).headers["WWW-Authenticate"] == "Bearer"


# -- keys mode, and keys in entra mode --------------------------------------------------------

SECRET_KEY = "s3cr3t-Function-Key-value-0123456789=="


async def test_keys_mode_with_a_key(auth: Authenticator) -> None:
    settings = AuthSettings.from_env({})
    assert settings.mode == "keys"
    caller = await auth.authenticate({"x-functions-key": SECRET_KEY}, {}, settings)
    assert caller == Caller(kind="key", subject="key", roles=frozenset(Role))
    assert caller.actor == "key" and caller.role is Role.ADMIN

    by_query = await auth.authenticate({}, {"code": SECRET_KEY}, settings)
    assert by_query.role is Role.ADMIN

    reader = AuthSettings.from_env({"AOS_ADMIN_AUTH": "keys", "AOS_AUTH_KEY_ROLE": "reader"})
    caller = await auth.authenticate({"x-functions-key": SECRET_KEY}, {}, reader)
    assert caller.roles == frozenset({Role.READER})
    with pytest.raises(PermissionDeniedError):
        authorize(caller, Role.OPERATOR)


async def test_keys_mode_without_a_key(auth: Authenticator) -> None:
    error = await rejected(auth, AuthSettings.from_env({"AOS_ADMIN_AUTH": "keys"}), {})
    assert "carries no function key" in error.message and "x-functions-key" in error.message
    answer = error_response(error)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_key_in_entra_mode_is_refused_with_the_reason(
    auth: Authenticator, settings: AuthSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for headers, params in (({"x-functions-key": SECRET_KEY}, {}), ({}, {"code": SECRET_KEY})):
        error = await rejected(auth, settings, headers, **params)
        assert "function keys are not accepted when AOS_ADMIN_AUTH=entra" in error.message
        assert error.bearer_error is None
        answer = error_response(error)
        assert_not_leaked(SECRET_KEY, error.message, json.dumps(answer.body), str(answer.headers))
    assert_not_leaked(SECRET_KEY, caplog.text)


# -- nothing leaks ----------------------------------------------------------------------------


async def test_no_token_text_in_any_message_header_or_log(
    auth: Authenticator,
    settings: AuthSettings,
    keys: dict,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    now = int(time.time())
    failures: list[Callable[[], str]] = [
        lambda: sign(keys["k1"], exp=now - 600, nbf=now - 7200, iat=now - 7200),
        lambda: sign(keys["k1"], nbf=now + 600),
        lambda: sign(keys["k1"], aud="api://other"),
        lambda: sign(keys["k1"], iss="https://evil.example/"),
        lambda: sign(keys["k1"], tid=OTHER_TENANT),
        lambda: sign(keys["rogue"], kid="k1"),
        lambda: sign(keys["rogue"], kid="rogue"),
        lambda: jwt.encode(claims(), "x" * 32, algorithm="HS256", headers={"kid": "k1"}),
        lambda: sign(keys["k1"])[:-10],
        lambda: sign(keys["k1"]) + "x",
    ]
    for make in failures:
        token = make()
        error = await rejected(auth, settings, bearer(token))
        answer = error_response(error)
        assert answer.status == 401
        assert_not_leaked(
            token, error.message, str(error), json.dumps(answer.body), str(answer.headers)
        )
        assert_not_leaked(token, caplog.text)
    # And a valid one is not logged either.
    token = sign(keys["k1"])
    await auth.authenticate(bearer(token), {}, settings)
    assert_not_leaked(token, caplog.text)


async def test_challenge_is_a_safe_header_value(
    auth: Authenticator, settings: AuthSettings, keys: dict
) -> None:
    token = sign(keys["k1"], aud='x"\r\nSet-Cookie: stolen=1\\ é')
    challenge = error_response(await rejected(auth, settings, bearer(token))).headers[
        "WWW-Authenticate"
    ]
    assert challenge.isascii() and "\r" not in challenge and "\n" not in challenge
    description = challenge.split('error_description="', 1)[1]
    assert description.endswith('"') and '"' not in description[:-1]
    assert "\\" not in description


# -- the per-loop authenticator, settings, roles, host auth level ------------------------------


async def test_shared_authenticator_and_require(settings: AuthSettings, keys: dict) -> None:
    try:
        assert authenticator() is authenticator()
        caller = await authenticate(bearer(sign(keys["k1"])), {}, settings)
        assert caller.role is Role.OPERATOR
        assert (await require(bearer(sign(keys["k1"])), {}, Role.READER, settings)) == caller
        with pytest.raises(PermissionDeniedError):
            await require(bearer(sign(keys["k1"])), {}, Role.ADMIN, settings)
    finally:
        await close_authenticator()


def test_roles_are_ordered() -> None:
    assert Role.READER < Role.OPERATOR < Role.ADMIN
    assert max([Role.OPERATOR, Role.ADMIN, Role.READER]) is Role.ADMIN
    assert Role.ADMIN.includes(Role.READER) and not Role.READER.includes(Role.OPERATOR)
    assert Role("operator") is Role.OPERATOR


def test_host_auth_level() -> None:
    assert host_auth_level({}) == "FUNCTION"
    assert host_auth_level({"AOS_ADMIN_AUTH": "keys"}) == "FUNCTION"
    assert host_auth_level({"AOS_ADMIN_AUTH": " Entra "}) == "ANONYMOUS"
    with pytest.raises(ConfigurationError) as caught:
        host_auth_level({"AOS_ADMIN_AUTH": "oauth"})
    message = caught.value.message
    assert "AOS_ADMIN_AUTH" in message and "'keys'" in message and "'entra'" in message
    assert caught.value.field == "AOS_ADMIN_AUTH"


def test_auth_module_imports_no_heavy_packages() -> None:
    import subprocess
    import sys

    code = (
        "import sys, aos.governance.auth as a; a.host_auth_level({});"
        "print(sorted(m for m in ('jwt', 'aiohttp', 'cryptography', 'pydantic')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_settings_defaults() -> None:
    settings = AuthSettings.from_env({})
    assert settings.mode == "keys"
    assert settings.authority == "https://login.microsoftonline.com"
    assert settings.key_role is Role.ADMIN
    assert dict(settings.role_map) == {
        "AOS.Reader": Role.READER,
        "AOS.Operator": Role.OPERATOR,
        "AOS.Admin": Role.ADMIN,
    }
    assert not settings.platform_auth_enabled


@pytest.mark.parametrize(
    ("env", "setting", "words"),
    [
        (
            {"AOS_ADMIN_AUTH": "entra", "AOS_AUTH_AUDIENCE": AUDIENCE},
            "AOS_AUTH_TENANT_ID",
            "required",
        ),
        (
            {"AOS_ADMIN_AUTH": "entra", "AOS_AUTH_TENANT_ID": TENANT},
            "AOS_AUTH_AUDIENCE",
            "required",
        ),
        (
            {"AOS_ADMIN_AUTH": "entra", "AOS_AUTH_TENANT_ID": "common", "AOS_AUTH_AUDIENCE": "a"},
            "AOS_AUTH_TENANT_ID",
            "GUID",
        ),
        ({"AOS_AUTH_ROLE_MAP": "Contoso.Admin"}, "AOS_AUTH_ROLE_MAP", "AppRole=role"),
        ({"AOS_AUTH_ROLE_MAP": "Contoso.Admin=superuser"}, "AOS_AUTH_ROLE_MAP", "reader"),
        ({"AOS_AUTH_ROLE_MAP": "A=admin,A=reader"}, "AOS_AUTH_ROLE_MAP", "twice"),
        ({"AOS_AUTH_ROLE_MAP": " , "}, "AOS_AUTH_ROLE_MAP", "no entries"),
        ({"AOS_AUTH_KEY_ROLE": "root"}, "AOS_AUTH_KEY_ROLE", "operator"),
        ({"AOS_AUTH_AUTHORITY": "http://login.example.com"}, "AOS_AUTH_AUTHORITY", "https"),
        ({"AOS_AUTH_AUTHORITY": "not a url"}, "AOS_AUTH_AUTHORITY", "https"),
    ],
)
def test_settings_errors_name_the_setting(env: dict[str, str], setting: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AuthSettings.from_env(env)
    assert setting in caught.value.message and words in caught.value.message
    assert caught.value.field == setting


def test_entra_settings_parse() -> None:
    settings = AuthSettings.from_env(
        {
            "AOS_ADMIN_AUTH": "ENTRA",
            "AOS_AUTH_TENANT_ID": TENANT.upper(),
            "AOS_AUTH_AUDIENCE": f" {AUDIENCE} , {CLIENT_ID} ,",
            "AOS_AUTH_AUTHORITY": "https://login.microsoftonline.us/",
            "WEBSITE_AUTH_ENABLED": "True",
        }
    )
    assert settings.mode == "entra"
    assert settings.tenant_id == TENANT
    assert settings.audiences == (AUDIENCE, CLIENT_ID)
    assert settings.authority == "https://login.microsoftonline.us"
    assert settings.platform_auth_enabled
