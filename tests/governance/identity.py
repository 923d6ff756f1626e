"""A local Microsoft Entra ID stand-in for tests: OpenID configuration and JWKS over HTTP,
and access tokens signed with real RSA keys."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TENANT = str(uuid.uuid4())
OTHER_TENANT = str(uuid.uuid4())
CLIENT_ID = str(uuid.uuid4())
AUDIENCE = f"api://{CLIENT_ID}"
USER_OID = str(uuid.uuid4())
CLIENT_APP = str(uuid.uuid4())
V2_ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
V1_ISSUER = f"https://sts.windows.net/{TENANT}/"


class IdentityProvider:
    """Serves `{tenant}/v2.0/.well-known/openid-configuration` and the tenant's JWKS."""

    def __init__(self, keys: dict[str, rsa.RSAPrivateKey]) -> None:
        self.keys = keys
        self.published = ["k1"]
        self.issuer = V2_ISSUER
        self.discovery_requests = 0
        self.jwks_requests = 0
        self.up = True
        self.server: TestServer | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self._jwks)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.url = str(self.server.make_url("")).rstrip("/")

    async def close(self) -> None:
        assert self.server is not None
        await self.server.close()

    async def _discovery(self, request: web.Request) -> web.Response:
        self.discovery_requests += 1
        if not self.up:
            return web.json_response({"error": "unavailable"}, status=503)
        tenant = request.match_info["tenant"]
        if tenant != TENANT:
            return web.json_response({"error": "invalid_tenant"}, status=400)
        return web.json_response(
            {"issuer": self.issuer, "jwks_uri": f"{self.url}/{tenant}/discovery/v2.0/keys"}
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        if not self.up:
            return web.json_response({"error": "unavailable"}, status=503)
        jwks = []
        for kid in self.published:
            jwk = json.loads(RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            jwks.append({**jwk, "kid": kid, "use": "sig"})
        return web.json_response({"keys": jwks})


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "aud": AUDIENCE,
        "iss": V2_ISSUER,
        "tid": TENANT,
        "oid": USER_OID,
        "sub": "pairwise-subject",
        "azp": CLIENT_APP,
        "preferred_username": "alice@contoso.com",
        "name": "Alice",
        "scp": "user_impersonation",
        "roles": ["AOS.Operator"],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "ver": "2.0",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(key: rsa.RSAPrivateKey, kid: str | None = "k1", **overrides: Any) -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
