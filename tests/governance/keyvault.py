"""A stand-in for Azure Key Vault's secrets API over HTTPS (aiohttp.web on 127.0.0.1).

It speaks the documented REST shapes that azure-keyvault-secrets uses:

- ``GET /secrets/{name}/{version}?api-version=...`` and ``GET /secrets/{name}[/]?api-version=...``
  (latest version) -> 200 ``{"value", "id": "<vault>/secrets/<name>/<version>", "attributes"}``;
- a request without ``Authorization`` -> 401 with the challenge
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"``, as Key Vault answers the SDK's first, unauthenticated
  request; a wrong bearer token -> 401 with the challenge again;
- an unknown secret or version -> 404 ``{"error": {"code": "SecretNotFound", "message"}}``;
- a secret in `forbidden` -> 403 ``{"error": {"code": "Forbidden", "message", "innererror"}}``.

It runs on its own event loop in a background thread, so synchronous SDK clients can call it.
Tests read back every request (`requests`).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.test-token-5f0c.sig"


def write_self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "vault-cert.pem", folder / "vault-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class Recorded:
    path: str
    name: str
    version: str  # "" for the latest version
    api_version: str | None
    authorization: str | None
    status: int


class FakeKeyVault:
    def __init__(self, cert_file: Path, key_file: Path, *, token: str = TOKEN) -> None:
        self.token = token
        self.secrets: dict[
            str, list[tuple[str, str]]
        ] = {}  # name -> [(version, value)], oldest first
        self.forbidden: set[str] = set()
        self.echo_in_errors = ""  # a careless service quoting this text back in error messages
        self.requests: list[Recorded] = []
        self.url = ""
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.load_cert_chain(cert_file, key_file)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def add(self, name: str, value: str, version: str | None = None) -> str:
        """Store a new version of a secret; returns its version id."""
        version = version or uuid.uuid4().hex
        self.secrets.setdefault(name, []).append((version, value))
        return version

    def start(self) -> FakeKeyVault:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/secrets/{name}", self._get_secret)
        app.router.add_get("/secrets/{name}/{version:[^/]*}", self._get_secret)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock, ssl_context=self._ssl)
        await site.start()
        self.url = f"https://127.0.0.1:{sock.getsockname()[1]}"

    # -- the API ---------------------------------------------------------------------------

    async def _get_secret(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        version = request.match_info.get("version", "")
        response = self._answer(request, name, version)
        self.requests.append(
            Recorded(
                path=request.path,
                name=name,
                version=version,
                api_version=request.query.get("api-version"),
                authorization=request.headers.get("Authorization"),
                status=response.status,
            )
        )
        return response

    def _answer(self, request: web.Request, name: str, version: str) -> web.Response:
        if not request.query.get("api-version"):
            return self._error(
                400, "BadParameter", "The request URI contains an invalid api-version"
            )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            challenge = (
                f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                'resource="https://vault.azure.net"'
            )
            message = (
                "AKV10000: Request is missing a Bearer or PoP token."
                if "Authorization" not in request.headers
                else "AKV10032: Invalid issuer."
            )
            return self._error(401, "Unauthorized", message, {"WWW-Authenticate": challenge})
        if name in self.forbidden:
            return self._error(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource. "
                "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                inner="ForbiddenByRbac",
            )
        versions = self.secrets.get(name, [])
        found = [v for v in versions if v[0] == version] if version else versions[-1:]
        if not found:
            what = f"{name}/{version}" if version else name
            return self._error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {what} was not found in this key vault. If you recently "
                "deleted this secret you may be able to recover it using the correct recovery "
                "command.",
            )
        found_version, value = found[0]
        now = int(time.time())
        return web.json_response(
            {
                "value": value,
                "id": f"{self.url}/secrets/{name}/{found_version}",
                "attributes": {
                    "enabled": True,
                    "created": now,
                    "updated": now,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 90,
                },
                "tags": {},
            }
        )

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        inner: str | None = None,
    ) -> web.Response:
        if self.echo_in_errors:
            message = f"{message} ({self.echo_in_errors})"
        error: dict[str, object] = {"code": code, "message": message}
        if inner:
            error["innererror"] = {"code": inner}
        return web.json_response({"error": error}, status=status, headers=headers)
