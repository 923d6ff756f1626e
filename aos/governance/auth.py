"""Who is calling the admin API, and may they do this.

Two modes, chosen by the app setting AOS_ADMIN_AUTH:

- ``keys`` (default): the admin routes use function-level auth, so the Functions host has
  already turned away requests without a valid function or master key. A request that presents a
  key (header ``x-functions-key`` or query ``code``) is a caller of kind "key" with the role of
  AOS_AUTH_KEY_ROLE (default admin). A request without one is refused here too (defence in depth).
- ``entra``: the admin routes are anonymous at the host and AOS authenticates in the app, with
  either ``Authorization: Bearer <access token>`` from Microsoft Entra ID (validated here: RS256
  signature against the tenant's published keys, expiry, audience, issuer, tenant), or App
  Service authentication's ``X-MS-CLIENT-PRINCIPAL`` header, believed only when the platform says
  App Service authentication is on (WEBSITE_AUTH_ENABLED), because only then does the platform
  strip that header from what clients send. Function keys are not accepted in this mode: the host
  did not check them.

Roles come from the token's ``roles`` claim (Entra app roles), mapped by AOS_AUTH_ROLE_MAP onto
AOS's three roles: reader < operator < admin, each including the ones below it.

Nothing here ever logs or quotes a credential: messages name what is wrong and what to do. This
module imports only the standard library at load time (`host_auth_level` runs when
function_app.py is imported); PyJWT, cryptography and aiohttp are imported when first needed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from aos.errors import AuthenticationError, ConfigurationError, PermissionDeniedError

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger(__name__)

MODE = "AOS_ADMIN_AUTH"
TENANT_ID = "AOS_AUTH_TENANT_ID"
AUDIENCE = "AOS_AUTH_AUDIENCE"
AUTHORITY = "AOS_AUTH_AUTHORITY"
ROLE_MAP = "AOS_AUTH_ROLE_MAP"
KEY_ROLE = "AOS_AUTH_KEY_ROLE"
PLATFORM_AUTH = "WEBSITE_AUTH_ENABLED"  # set by App Service when its authentication is on

KEYS = "keys"
ENTRA = "entra"
MODES = (KEYS, ENTRA)
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"

KEY_HEADER = "x-functions-key"
KEY_PARAM = "code"
PRINCIPAL_HEADER = "x-ms-client-principal"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
MAX_TOKEN_CHARS = 32 * 1024
MAX_DOCUMENT_BYTES = 1024 * 1024
_SHOWN_CHARS = 120


class Role(StrEnum):
    """AOS roles, ordered: each includes the ones before it (reader < operator < admin)."""

    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank

    def __lt__(self, other: object) -> bool:
        return self.rank < other.rank if isinstance(other, Role) else NotImplemented

    def __le__(self, other: object) -> bool:
        return self.rank <= other.rank if isinstance(other, Role) else NotImplemented

    def __gt__(self, other: object) -> bool:
        return self.rank > other.rank if isinstance(other, Role) else NotImplemented

    def __ge__(self, other: object) -> bool:
        return self.rank >= other.rank if isinstance(other, Role) else NotImplemented


DEFAULT_ROLE_MAP: Mapping[str, Role] = {
    "AOS.Reader": Role.READER,
    "AOS.Operator": Role.OPERATOR,
    "AOS.Admin": Role.ADMIN,
}


def with_implied(roles: Iterable[Role]) -> frozenset[Role]:
    """The roles plus every role they include (operator -> {reader, operator})."""
    granted = list(roles)
    if not granted:
        return frozenset()
    top = max(granted)
    return frozenset(role for role in Role if top.includes(role))


# -- settings ---------------------------------------------------------------------------------


def _mode(environ: Mapping[str, str]) -> str:
    raw = (environ.get(MODE) or "").strip()
    mode = raw.lower() or KEYS
    if mode not in MODES:
        raise ConfigurationError(
            f"setting {MODE} is {raw!r}; use 'keys' (function keys checked by the Functions "
            "host) or 'entra' (Microsoft Entra ID tokens checked by AOS)",
            field=MODE,
        )
    return mode


def host_auth_level(environ: Mapping[str, str] | None = None) -> str:
    """The auth level the admin routes declare to the Functions host: "FUNCTION" in keys mode,
    "ANONYMOUS" in entra mode (the app authenticates; the host must let requests through)."""
    env = os.environ if environ is None else environ
    return "FUNCTION" if _mode(env) == KEYS else "ANONYMOUS"


def _role(value: str, setting: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        allowed = ", ".join(role.value for role in Role)
        raise ConfigurationError(
            f"setting {setting}: {value.strip()!r} is not an AOS role; use one of {allowed}",
            field=setting,
        ) from None


def _role_map(raw: str) -> dict[str, Role]:
    mapping: dict[str, Role] = {}
    for entry in raw.split(","):
        if not entry.strip():
            continue
        app_role, sep, role = entry.partition("=")
        app_role = app_role.strip()
        if not sep or not app_role or not role.strip():
            raise ConfigurationError(
                f"setting {ROLE_MAP}: entry {entry.strip()!r} must look like AppRole=role, "
                "e.g. Contoso.Admin=admin",
                field=ROLE_MAP,
            )
        if app_role in mapping:
            raise ConfigurationError(
                f"setting {ROLE_MAP} maps app role {app_role!r} twice; keep one entry",
                field=ROLE_MAP,
            )
        mapping[app_role] = _role(role, ROLE_MAP)
    if not mapping:
        raise ConfigurationError(
            f"setting {ROLE_MAP} holds no entries; write AppRole=role pairs separated by commas, "
            "or remove the setting to use AOS.Reader, AOS.Operator and AOS.Admin",
            field=ROLE_MAP,
        )
    return mapping


def _https_or_local(url: str) -> bool:
    """An https URL, or plain http to this machine (a local identity provider in tests)."""
    parts = urlsplit(url)
    local_http = parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS
    return bool(parts.hostname) and (parts.scheme == "https" or local_http)


def _authority(raw: str) -> str:
    authority = raw.strip().rstrip("/")
    if not _https_or_local(authority):
        raise ConfigurationError(
            f"setting {AUTHORITY} is {raw!r}; it must be an https URL such as "
            f"{DEFAULT_AUTHORITY} (plain http only for localhost)",
            field=AUTHORITY,
        )
    return authority


@dataclass(frozen=True)
class AuthSettings:
    """How the admin API authenticates callers. Build with `AuthSettings.from_env()`."""

    mode: Literal["keys", "entra"] = KEYS
    tenant_id: str | None = None
    audiences: tuple[str, ...] = ()
    authority: str = DEFAULT_AUTHORITY
    role_map: Mapping[str, Role] = field(default_factory=lambda: dict(DEFAULT_ROLE_MAP))
    key_role: Role = Role.ADMIN
    platform_auth_enabled: bool = False  # WEBSITE_AUTH_ENABLED: App Service authentication is on

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings:
        env = os.environ if environ is None else environ
        mode = _mode(env)
        tenant = (env.get(TENANT_ID) or "").strip() or None
        audiences = tuple(a.strip() for a in (env.get(AUDIENCE) or "").split(",") if a.strip())
        if mode == ENTRA:
            if tenant is None:
                raise ConfigurationError(
                    f"setting {TENANT_ID} is required when {MODE}=entra: set it to the "
                    "directory (tenant) ID of your Microsoft Entra tenant",
                    field=TENANT_ID,
                )
            if not audiences:
                raise ConfigurationError(
                    f"setting {AUDIENCE} is required when {MODE}=entra: set it to the "
                    "application ID URI and client ID of the AOS app registration, e.g. "
                    "api://<client-id>,<client-id>",
                    field=AUDIENCE,
                )
        if tenant is not None and not _GUID.match(tenant):
            raise ConfigurationError(
                f"setting {TENANT_ID} is {tenant!r}; it must be the directory (tenant) ID, a "
                "GUID shown on the tenant's Overview page in Microsoft Entra ID (not a domain, "
                "and not 'common' or 'organizations': AOS accepts one tenant)",
                field=TENANT_ID,
            )
        raw_map = env.get(ROLE_MAP) or ""
        return cls(
            mode=mode,  # type: ignore[arg-type]
            tenant_id=tenant.lower() if tenant else None,
            audiences=audiences,
            authority=_authority(env.get(AUTHORITY) or DEFAULT_AUTHORITY),
            role_map=_role_map(raw_map) if raw_map.strip() else dict(DEFAULT_ROLE_MAP),
            key_role=_role(env.get(KEY_ROLE) or Role.ADMIN.value, KEY_ROLE),
            platform_auth_enabled=(env.get(PLATFORM_AUTH) or "").strip().lower() == "true",
        )

    def roles_for(self, app_roles: Iterable[Any]) -> frozenset[Role]:
        """AOS roles (with the ones they include) for Entra app roles; unknown ones ignored."""
        return with_implied(
            self.role_map[value]
            for value in app_roles
            if isinstance(value, str) and value in self.role_map
        )


# -- the caller -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated caller of the admin API."""

    kind: Literal["key", "entra", "appservice"]
    subject: str  # stable ID: the token's oid (else sub); "key" for a function key
    name: str | None = None  # preferred_username / upn / name, when there is one
    tenant: str | None = None  # tid
    roles: frozenset[Role] = frozenset()
    app_id: str | None = None  # the client application (appid / azp)
    app_only: bool = False  # an application calling as itself (client credentials), no user
    # The sign-in name (upn / preferred_username), which the tenant controls; unlike `name`,
    # never a display name, so it may be used to decide who someone is (e.g. approvers).
    username: str | None = None

    @property
    def role(self) -> Role | None:
        """The highest role, or None when the caller has none."""
        return max(self.roles) if self.roles else None

    @property
    def actor(self) -> str:
        """Who, in a few characters, for audit records and logs."""
        if self.kind == "key":
            return "key"
        if self.app_only:
            return f"{self.kind}:app:{self.app_id or self.subject}"
        return f"{self.kind}:{self.name or self.subject}"


def authorize(caller: Caller, required: Role) -> None:
    """Raise PermissionDeniedError unless the caller holds `required` (or a higher role)."""
    held = caller.role
    if held is not None and held.includes(required):
        return
    if held is None:
        message = (
            f"the caller ({caller.actor}) has no AOS role; this route needs {required.value}. "
            f"Assign the caller an app role that {ROLE_MAP} maps to {required.value} or higher "
            "(by default AOS.Reader, AOS.Operator, AOS.Admin)"
        )
    else:
        message = (
            f"the caller ({caller.actor}) has role {held.value}; this route needs {required.value}"
        )
    logger.warning("admin API call refused: %s", message)
    raise PermissionDeniedError(message)


# -- token validation -------------------------------------------------------------------------


class IdentityProviderUnavailableError(ConfigurationError):
    """The tenant's OpenID configuration or signing keys could not be fetched (HTTP 503)."""

    code = "identity_provider_unavailable"


def _show(value: Any) -> str:
    """A claim value for a message: quoted, and cut short (claims are attacker-chosen text)."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _when(timestamp: Any) -> str:
    try:
        return datetime.fromtimestamp(float(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unreadable time"


def _invalid(message: str) -> AuthenticationError:
    return AuthenticationError(message, field="Authorization")


class EntraTokenValidator:
    """Validates Microsoft Entra ID access tokens for one tenant.

    The tenant's OpenID configuration (issuer, jwks_uri) and signing keys are fetched once and
    kept for `cache_seconds`; a token signed by a key not in the set triggers one refetch of the
    keys, at most every `refresh_seconds`, which picks up key rotation. If a refetch fails while
    keys are held, the held keys go on being used. One validator per event loop (its aiohttp
    session belongs to the loop).
    """

    def __init__(
        self,
        tenant_id: str,
        authority: str = DEFAULT_AUTHORITY,
        *,
        leeway_seconds: float = 60,
        cache_seconds: float = 24 * 3600,
        refresh_seconds: float = 300,
        timeout_seconds: float = 10,
        clock: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.tenant_id = tenant_id.lower()
        self.authority = authority.rstrip("/")
        self.leeway_seconds = leeway_seconds
        self.cache_seconds = cache_seconds
        self.refresh_seconds = refresh_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._session = session
        self._owns_session = session is None
        self._lock = asyncio.Lock()
        self._issuers: frozenset[str] = frozenset()
        self._jwks_uri: str | None = None
        self._keys: dict[str, Any] | None = None
        self._loaded_at = 0.0  # when discovery and keys were last loaded in full
        self._fetched_at: float | None = None  # when the keys were last fetched (or tried)
        self._generation = 0  # counts finished reloads, so concurrent callers share one

    @property
    def discovery_url(self) -> str:
        return f"{self.authority}/{self.tenant_id}/v2.0/.well-known/openid-configuration"

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def validate(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        """The token's claims, once its signature, lifetime, audience, issuer and tenant check
        out. Raises AuthenticationError (401) or IdentityProviderUnavailableError (503)."""
        import jwt

        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid(f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid(
                "the bearer token is not a JWT; send an access token issued by Microsoft Entra ID"
            ) from None
        alg = header.get("alg")
        if alg != "RS256":
            shown = _show(alg) if isinstance(alg, str) else "no algorithm"
            raise _invalid(
                f"the bearer token is signed with {shown}; only RS256 tokens from Microsoft "
                "Entra ID are accepted"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid(
                "the bearer token names no signing key (kid); send an access token issued by "
                "Microsoft Entra ID"
            )
        key = await self._signing_key(kid)
        if key is None:
            raise _invalid(
                f"the bearer token is not signed by a key of tenant {self.tenant_id}; request a "
                "token from that tenant"
            )
        first = audiences[0] if audiences else "the AOS app registration"
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=list(audiences),
                issuer=self._issuers,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError:
            raise _invalid(
                f"the bearer token's signature does not verify against tenant {self.tenant_id}'s "
                "keys; request a new token from that tenant"
            ) from None
        except jwt.ExpiredSignatureError:
            expired = _when(_claims_unverified(token).get("exp"))
            raise _invalid(f"the bearer token expired at {expired}; get a new one") from None
        except jwt.ImmatureSignatureError:
            unverified = _claims_unverified(token)
            start = _when(unverified.get("nbf", unverified.get("iat")))
            raise _invalid(
                f"the bearer token is not valid before {start}; check the clock of the machine "
                "that requested it, or wait"
            ) from None
        except jwt.InvalidAudienceError:
            aud = _claims_unverified(token).get("aud")
            raise _invalid(
                f"audience {_show(aud)} is not accepted; request a token for {first} "
                f"(accepted: {', '.join(audiences)})"
            ) from None
        except jwt.InvalidIssuerError:
            iss = _claims_unverified(token).get("iss")
            raise _invalid(
                f"issuer {_show(iss)} is not accepted; request a token from tenant {self.tenant_id}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(
                f"the bearer token has no {exc.claim!r} claim; send an access token issued by "
                "Microsoft Entra ID"
            ) from None
        except jwt.PyJWTError:
            raise _invalid(
                "the bearer token could not be read (malformed claims); send an access token "
                "issued by Microsoft Entra ID"
            ) from None
        tid = claims.get("tid")
        if tid is not None and (not isinstance(tid, str) or tid.lower() != self.tenant_id):
            raise _invalid(
                f"the bearer token is from tenant {_show(tid)}; this app accepts tenant "
                f"{self.tenant_id} only"
            )
        return claims

    # The key set: discovery and JWKS, cached.

    async def _signing_key(self, kid: str) -> Any:
        if self._keys is None or self._clock() - self._loaded_at >= self.cache_seconds:
            await self._reload(full=True)
        if self._keys is None:  # a reload that ran concurrently with this call failed
            raise IdentityProviderUnavailableError(
                f"tenant {self.tenant_id}'s signing keys are not available yet; retry",
                field=AUTHORITY,
            )
        key = self._keys.get(kid)
        if key is None and (
            self._fetched_at is None or self._clock() - self._fetched_at >= self.refresh_seconds
        ):
            logger.info("signing key not in tenant %s's key set; fetching it again", self.tenant_id)
            await self._reload(full=False)
            key = self._keys.get(kid)
        return key

    async def _reload(self, *, full: bool) -> None:
        seen = self._generation
        async with self._lock:
            if self._generation != seen:  # another call reloaded while this one waited
                return
            self._fetched_at = self._clock()
            try:
                if full or self._jwks_uri is None:
                    await self._discover()
                assert self._jwks_uri is not None
                self._keys = await self._fetch_keys(self._jwks_uri)
                if full:
                    self._loaded_at = self._clock()
            except IdentityProviderUnavailableError as exc:
                if self._keys is None or not full:
                    raise
                # Stale keys beat no keys; try again after refresh_seconds.
                logger.warning("keeping tenant %s's cached signing keys: %s", self.tenant_id, exc)
                self._loaded_at = self._clock() - self.cache_seconds + self.refresh_seconds
            finally:
                self._generation += 1

    async def _discover(self) -> None:
        document = await self._get_json(self.discovery_url, "OpenID configuration")
        issuer = document.get("issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(issuer, str) or not isinstance(jwks_uri, str):
            raise IdentityProviderUnavailableError(
                f"the OpenID configuration at {self.discovery_url} has no issuer or jwks_uri; "
                f"check {AUTHORITY} and {TENANT_ID}",
                field=AUTHORITY,
            )
        self._check_url(jwks_uri)
        issuer = issuer.replace("{tenantid}", self.tenant_id)
        self._issuers = frozenset({issuer, f"https://sts.windows.net/{self.tenant_id}/"})
        self._jwks_uri = jwks_uri

    def _check_url(self, url: str) -> None:
        if not _https_or_local(url):
            raise IdentityProviderUnavailableError(
                f"the OpenID configuration at {self.discovery_url} names a key set that is not "
                f"an https URL ({_show(url)}); check {AUTHORITY}",
                field=AUTHORITY,
            )

    async def _fetch_keys(self, url: str) -> dict[str, Any]:
        from jwt.algorithms import RSAAlgorithm

        document = await self._get_json(url, "signing keys")
        keys: dict[str, Any] = {}
        entries = document.get("keys")
        for jwk in entries if isinstance(entries, list) else []:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
                continue
            if jwk.get("use", "sig") != "sig" or not isinstance(jwk.get("kid"), str):
                continue
            try:
                keys[jwk["kid"]] = RSAAlgorithm.from_jwk(jwk)
            except Exception:  # one unreadable key does not spoil the others
                logger.warning("ignoring an unreadable signing key (kid %s) at %s", jwk["kid"], url)
        if not keys:
            raise IdentityProviderUnavailableError(
                f"the key set at {url} holds no RSA signing keys; check {AUTHORITY}",
                field=AUTHORITY,
            )
        return keys

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds), trust_env=False
            )
            self._owns_session = True
        try:
            async with self._session.get(url, headers={"Accept": "application/json"}) as answer:
                status = answer.status
                body = await answer.content.read(MAX_DOCUMENT_BYTES + 1)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise IdentityProviderUnavailableError(
                f"could not fetch the {what} from {url} ({type(exc).__name__}); Microsoft Entra "
                f"ID may be unreachable from this app. Check {AUTHORITY} and outbound network "
                "access, then retry",
                field=AUTHORITY,
            ) from None
        if status != 200:
            raise IdentityProviderUnavailableError(
                f"the {what} at {url} answered HTTP {status}; check {TENANT_ID} and {AUTHORITY}",
                field=TENANT_ID,
            )
        if len(body) > MAX_DOCUMENT_BYTES:
            raise IdentityProviderUnavailableError(
                f"the {what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes", field=AUTHORITY
            )
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise IdentityProviderUnavailableError(
                f"the {what} at {url} is not a JSON object; check {AUTHORITY}", field=AUTHORITY
            )
        return document


def _claims_unverified(token: str) -> dict[str, Any]:
    """Claims for an error message, read only after PyJWT verified the signature."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


# -- authentication ---------------------------------------------------------------------------

_OID_TYPES = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
_TID_TYPES = ("tid", "http://schemas.microsoft.com/identity/claims/tenantid")
_ROLE_TYPES = ("roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_NAME_TYPES = (
    "preferred_username",
    "upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Authenticator:
    """Authenticates admin API requests; holds one token validator per tenant and authority.

    Use `authenticator()` for the running event loop's shared instance.
    """

    def __init__(self, *, validator_options: Mapping[str, Any] | None = None) -> None:
        self._validators: dict[tuple[str, str], EntraTokenValidator] = {}
        self._options = dict(validator_options or {})

    def validator(self, settings: AuthSettings) -> EntraTokenValidator:
        if settings.tenant_id is None:
            raise ConfigurationError(
                f"setting {TENANT_ID} is required to accept bearer tokens", field=TENANT_ID
            )
        key = (settings.authority, settings.tenant_id)
        if key not in self._validators:
            self._validators[key] = EntraTokenValidator(
                settings.tenant_id, settings.authority, **self._options
            )
        return self._validators[key]

    async def close(self) -> None:
        for validator in self._validators.values():
            await validator.close()
        self._validators.clear()

    async def authenticate(
        self,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        settings: AuthSettings,
    ) -> Caller:
        """The caller of a request (`headers` with lower-case names; `params` the query).

        Raises AuthenticationError (401) when no acceptable credentials came or they are not
        valid, ConfigurationError (503) when the identity provider cannot be reached.
        """
        try:
            if settings.mode == KEYS:
                caller = self._by_key(headers, params, settings)
            else:
                caller = await self._by_entra(headers, params, settings)
        except AuthenticationError as exc:
            logger.info("admin API caller not authenticated: %s", exc.message)
            raise
        logger.debug("admin API caller %s (roles: %s)", caller.actor, sorted(caller.roles))
        return caller

    @staticmethod
    def _by_key(
        headers: Mapping[str, str], params: Mapping[str, str], settings: AuthSettings
    ) -> Caller:
        if headers.get(KEY_HEADER) or params.get(KEY_PARAM):
            # The Functions host has checked the key before this code runs (function auth level).
            return Caller(kind="key", subject="key", roles=with_implied([settings.key_role]))
        raise AuthenticationError(
            f"this request carries no function key; send it in the {KEY_HEADER} header "
            f"({MODE}=keys)",
            field=KEY_HEADER,
            bearer_error=None,
        )

    async def _by_entra(
        self, headers: Mapping[str, str], params: Mapping[str, str], settings: AuthSettings
    ) -> Caller:
        authorization = (headers.get("authorization") or "").strip()
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer":
                raise AuthenticationError(
                    "the Authorization header does not hold a bearer token; send "
                    "'Authorization: Bearer <access token>' with a token from Microsoft Entra ID",
                    field="Authorization",
                    bearer_error=None,
                )
            token = token.strip()
            if not token or any(ch.isspace() for ch in token):
                raise _invalid(
                    "the Authorization header is malformed; send 'Authorization: Bearer "
                    "<access token>' with exactly one token"
                )
            claims = await self.validator(settings).validate(token, settings.audiences)
            return _caller_from_claims(claims, settings)
        principal = headers.get(PRINCIPAL_HEADER)
        if principal and settings.platform_auth_enabled:
            return _caller_from_principal(principal, headers, settings)
        how = (
            f"send 'Authorization: Bearer <access token>' with a Microsoft Entra ID token for "
            f"{settings.audiences[0] if settings.audiences else 'the AOS app registration'}"
        )
        if headers.get(KEY_HEADER) or params.get(KEY_PARAM):
            message = (
                f"function keys are not accepted when {MODE}=entra (the Functions host does not "
                f"check them for these routes); {how}"
            )
        elif principal:
            message = (
                f"the {PRINCIPAL_HEADER} header is ignored because App Service authentication "
                f"is not enabled on this app ({PLATFORM_AUTH} is not true); {how}"
            )
        else:
            message = f"this request carries no credentials; {how}"
        raise AuthenticationError(message, field="Authorization", bearer_error=None)


def _caller_from_claims(claims: Mapping[str, Any], settings: AuthSettings) -> Caller:
    oid, sub = _text(claims.get("oid")), _text(claims.get("sub"))
    subject = oid or sub
    if subject is None:
        raise _invalid("the bearer token has neither an 'oid' nor a 'sub' claim")
    app_id = _text(claims.get("azp")) or _text(claims.get("appid"))
    # App-only (client credentials) tokens: idtyp=app when that optional claim is on; otherwise
    # no delegated scopes and oid == sub (the service principal itself).
    app_only = claims.get("idtyp") == "app" or (
        "scp" not in claims and oid is not None and oid == sub
    )
    name = next(
        (
            _text(claims.get(claim))
            for claim in ("preferred_username", "upn", "unique_name", "name", "app_displayname")
            if _text(claims.get(claim))
        ),
        None,
    )
    roles = claims.get("roles")
    username = next(
        (_text(claims.get(c)) for c in ("upn", "preferred_username") if _text(claims.get(c))),
        None,
    )
    return Caller(
        kind="entra",
        subject=subject,
        name=name,
        tenant=_text(claims.get("tid")),
        roles=settings.roles_for(roles if isinstance(roles, list) else []),
        app_id=app_id,
        app_only=app_only,
        username=None if app_only else username,
    )


def _caller_from_principal(raw: str, headers: Mapping[str, str], settings: AuthSettings) -> Caller:
    unreadable = AuthenticationError(
        f"the {PRINCIPAL_HEADER} header set by App Service authentication could not be read; "
        "sign in again",
        field=PRINCIPAL_HEADER,
        bearer_error=None,
    )
    try:
        data = json.loads(base64.b64decode(raw.strip() + "=" * (-len(raw.strip()) % 4)))
    except (binascii.Error, ValueError):
        raise unreadable from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise unreadable
    claims: dict[str, list[str]] = {}
    for claim in data["claims"]:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str):
            value = claim.get("val")
            if isinstance(value, str):
                claims.setdefault(claim["typ"], []).append(value)

    def first(types: Iterable[str]) -> str | None:
        return next((claims[t][0] for t in types if claims.get(t)), None)

    role_types = {*_ROLE_TYPES, data.get("role_typ")}
    name_types = (data.get("name_typ"), *_NAME_TYPES)
    tenant = first(_TID_TYPES)
    if settings.tenant_id and tenant and tenant.lower() != settings.tenant_id:
        raise AuthenticationError(
            f"the signed-in principal is from tenant {_show(tenant)}; this app accepts tenant "
            f"{settings.tenant_id} only",
            field=PRINCIPAL_HEADER,
            bearer_error=None,
        )
    name = first(t for t in name_types if isinstance(t, str)) or _text(
        headers.get("x-ms-client-principal-name")
    )
    subject = (
        first(_OID_TYPES)
        or _text(headers.get("x-ms-client-principal-id"))
        or first(("sub", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"))
        or name
    )
    if subject is None:
        raise unreadable
    app_id = first(("azp", "appid"))
    oid, sub = first(_OID_TYPES), first(("sub",))
    app_only = first(("idtyp",)) == "app" or (
        first(("scp", "http://schemas.microsoft.com/identity/claims/scope")) is None
        and oid is not None
        and oid == sub
    )
    username = first(_NAME_TYPES[:3])  # upn / preferred_username, never a display name
    return Caller(
        kind="appservice",
        subject=subject,
        name=name,
        tenant=tenant,
        roles=settings.roles_for(v for t in role_types if t for v in claims.get(t, [])),
        app_id=app_id,
        app_only=app_only,
        username=None if app_only else username,
    )


# -- one authenticator per event loop ---------------------------------------------------------

_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Authenticator] = (
    weakref.WeakKeyDictionary()
)


def authenticator() -> Authenticator:
    """The running event loop's Authenticator (its key cache and HTTP session are per loop)."""
    loop = asyncio.get_running_loop()
    shared = _shared.get(loop)
    if shared is None:
        shared = _shared[loop] = Authenticator()
    return shared


async def close_authenticator() -> None:
    """Close the running loop's Authenticator (at host shutdown, or the end of a test)."""
    shared = _shared.pop(asyncio.get_running_loop(), None)
    if shared is not None:
        await shared.close()


async def authenticate(
    headers: Mapping[str, str],
    params: Mapping[str, str],
    settings: AuthSettings | None = None,
) -> Caller:
    """The caller of a request, with the loop's shared Authenticator and (by default) the
    settings in the process environment."""
    return await authenticator().authenticate(
        headers, params, settings if settings is not None else AuthSettings.from_env()
    )


async def require(
    headers: Mapping[str, str],
    params: Mapping[str, str],
    required: Role,
    settings: AuthSettings | None = None,
) -> Caller:
    """Authenticate the request and check it holds `required`; returns the caller."""
    caller = await authenticate(headers, params, settings)
    authorize(caller, required)
    return caller
