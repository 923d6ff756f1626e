"""Settings from Key Vault, read with the real azure-keyvault-secrets SDK over HTTPS from a local
stand-in that speaks Key Vault's secrets REST API (tests/governance/keyvault.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.identity import CredentialUnavailableError
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import http_challenge_cache

from aos.devhost.azurite import free_ports
from aos.errors import ConfigurationError
from aos.governance.secrets import (
    REFERENCE_SYNTAX,
    SecretReference,
    is_key_vault_reference,
    parse_key_vault_reference,
    resolve_secret_settings,
    secret_name_for,
)
from tests.governance.keyvault import TENANT, TOKEN, FakeKeyVault, write_self_signed_cert

SECRET = "Endpoint=sb://prod.servicebus.windows.net/;SharedAccessKey=TOPSECRET-abc123=="
OTHER_SECRET = "sk-live-ANOTHER-SECRET-42"
VERSION = "4387e9f3d6e14c459867679a90fd0f79"
OTHER_VERSION = "9a1b2c3d4e5f60718293a4b5c6d7e8f9"


class StaticCredential:
    """A token credential, as azure.core expects one: get_token(*scopes, **kwargs)."""

    def __init__(self, token: str = TOKEN, error: Exception | None = None) -> None:
        self.token = token
        self.error = error
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append((scopes, kwargs.get("tenant_id")))
        if self.error is not None:
            raise self.error
        return AccessToken(self.token, int(time.time()) + 3600)


class Clients:
    """`client_for`: real SecretClients trusting the test certificate; records the vault URLs.

    `routes` sends a vault URL (e.g. https://myvault.vault.azure.net) to the local vault.
    """

    def __init__(self, cert: Path, credential: StaticCredential, **options: Any) -> None:
        self.cert = cert
        self.credential = credential
        self.routes: dict[str, str] = {}
        self.options = options
        self.urls: list[str] = []

    def __call__(self, vault_url: str) -> SecretClient:
        self.urls.append(vault_url)
        return SecretClient(
            self.routes.get(vault_url, vault_url),
            credential=self.credential,
            connection_verify=str(self.cert),
            verify_challenge_resource=False,  # the vault is 127.0.0.1, not *.vault.azure.net
            **self.options,
        )


def no_client(vault_url: str) -> Any:
    raise AssertionError(f"no client should be built (asked for {vault_url})")


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_self_signed_cert(tmp_path_factory.mktemp("vault-cert"))


@pytest.fixture
def vault(cert_files: tuple[Path, Path]) -> Iterator[FakeKeyVault]:
    # The SDK caches each vault's challenge process-wide; start every test with the handshake.
    http_challenge_cache.clear()
    server = FakeKeyVault(*cert_files).start()
    yield server
    server.stop()
    http_challenge_cache.clear()


@pytest.fixture
def credential() -> StaticCredential:
    return StaticCredential()


@pytest.fixture
def clients(cert_files: tuple[Path, Path], credential: StaticCredential) -> Clients:
    return Clients(cert_files[0], credential)


def reference(vault: FakeKeyVault, name: str, version: str | None = None) -> str:
    tail = f"/{version}" if version else ""
    return f"@Microsoft.KeyVault(SecretUri={vault.url}/secrets/{name}{tail})"


def assert_handshake(vault: FakeKeyVault, credential: StaticCredential) -> None:
    """The SDK's first request was unauthenticated and challenged; then it sent our token."""
    first, *rest = vault.requests
    assert first.authorization is None and first.status == 401
    assert rest and all(r.authorization == f"Bearer {TOKEN}" for r in rest)
    assert all(r.api_version for r in vault.requests)
    assert credential.calls and credential.calls[0] == (
        ("https://vault.azure.net/.default",),
        TENANT,
    )


# -- parsing ---------------------------------------------------------------------------------


def test_is_key_vault_reference():
    assert is_key_vault_reference("@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/x)")
    assert is_key_vault_reference("  @microsoft.keyvault(VaultName=v;SecretName=s)")
    assert is_key_vault_reference("@Microsoft.KeyVault SecretUri=...")  # malformed, but meant
    assert not is_key_vault_reference("")
    assert not is_key_vault_reference("UseDevelopmentStorage=true")
    assert not is_key_vault_reference("Microsoft.KeyVault(SecretUri=https://v/secrets/s)")


def test_secret_names_of_settings():
    assert secret_name_for("ServiceBusConnection") == "ServiceBusConnection"
    assert secret_name_for("AOS_INFERENCE_KEY") == "AOS-INFERENCE-KEY"
    assert (
        secret_name_for("ServiceBusConnection__fullyQualifiedNamespace")
        == "ServiceBusConnection--fullyQualifiedNamespace"
    )
    assert secret_name_for("A__B_C") == "A--B-C"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            f"@Microsoft.KeyVault(SecretUri=https://MyVault.vault.azure.net/secrets/db/{VERSION})",
            SecretReference("https://myvault.vault.azure.net", "db", VERSION),
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db/)",
            SecretReference("https://myvault.vault.azure.net", "db"),
        ),
        (
            f" @Microsoft.KeyVault(VaultName=MyVault; SecretName=db ;SecretVersion={VERSION};) ",
            SecretReference("https://myvault.vault.azure.net", "db", VERSION),
        ),
        (
            "@Microsoft.KeyVault(secretname=db;vaultname=my-vault-2)",
            SecretReference("https://my-vault-2.vault.azure.net", "db"),
        ),
    ],
)
def test_references_parse(value: str, expected: SecretReference):
    assert parse_key_vault_reference(value, "X") == expected


MALFORMED = [
    "@Microsoft.KeyVault SecretUri=https://v.vault.azure.net/secrets/a",
    "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/a)trailing",
    "@Microsoft.KeyVault()",
    "@Microsoft.KeyVault(SecretUri=http://v.vault.azure.net/secrets/a)",
    "@Microsoft.KeyVault(SecretUri=v.vault.azure.net/secrets/a)",
    "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/keys/a)",
    "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/)",
    "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/a/b/c)",
    "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/a?api-version=7.4)",
    "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/a_b)",
    "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/a;VaultName=myvault)",
    "@Microsoft.KeyVault(VaultName=myvault)",
    "@Microsoft.KeyVault(SecretName=db)",
    "@Microsoft.KeyVault(VaultName=v1;SecretName=db)",
    "@Microsoft.KeyVault(VaultName=my--vault;SecretName=db)",
    "@Microsoft.KeyVault(VaultName=myvault;SecretName=db;Foo=bar)",
    "@Microsoft.KeyVault(VaultName=myvault;SecretName=db;SecretName=other)",
    "@Microsoft.KeyVault(VaultName=myvault;SecretName=db;SecretVersion=)",
    "@Microsoft.KeyVault(VaultName=myvault;SecretName=db;SecretVersion=1.0)",
    "@Microsoft.KeyVault(VaultName=myvault SecretName=db)",
]


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_reference_names_the_setting_and_the_syntax(value: str):
    environ = {"AOS_INFERENCE_KEY": value, "Other": "plain"}
    with pytest.raises(ConfigurationError) as caught:
        resolve_secret_settings(environ, client_for=no_client)
    error = caught.value
    assert error.field == "AOS_INFERENCE_KEY"
    assert "setting AOS_INFERENCE_KEY" in error.message
    assert REFERENCE_SYNTAX in error.message
    assert value.strip() in error.message  # the reference is not secret; showing it helps
    assert environ == {"AOS_INFERENCE_KEY": value, "Other": "plain"}


# -- references ------------------------------------------------------------------------------


def test_secret_uri_with_version(
    vault: FakeKeyVault, clients: Clients, credential: StaticCredential
):
    vault.add("inference-key", SECRET, VERSION)
    vault.add("inference-key", OTHER_SECRET, OTHER_VERSION)  # newer; not the one asked for
    environ = {
        "AOS_INFERENCE_KEY": reference(vault, "inference-key", VERSION),
        "AOS_TASK_HUB": "aoshub",
    }

    assert resolve_secret_settings(environ, client_for=clients) == ["AOS_INFERENCE_KEY"]

    assert environ == {"AOS_INFERENCE_KEY": SECRET, "AOS_TASK_HUB": "aoshub"}
    assert clients.urls == [vault.url]
    assert_handshake(vault, credential)
    assert vault.requests[-1].path == f"/secrets/inference-key/{VERSION}"
    assert vault.requests[-1].status == 200


def test_secret_uri_without_version_reads_the_latest(
    vault: FakeKeyVault, clients: Clients, credential: StaticCredential
):
    vault.add("inference-key", OTHER_SECRET, OTHER_VERSION)
    vault.add("inference-key", SECRET, VERSION)
    environ = {
        "AOS_INFERENCE_KEY": reference(vault, "inference-key"),
        "Trailing": f"@Microsoft.KeyVault(SecretUri={vault.url}/secrets/inference-key/)",
    }

    assert sorted(resolve_secret_settings(environ, client_for=clients)) == [
        "AOS_INFERENCE_KEY",
        "Trailing",
    ]

    assert environ == {"AOS_INFERENCE_KEY": SECRET, "Trailing": SECRET}
    assert clients.urls == [vault.url]  # one client for the vault, reused
    assert_handshake(vault, credential)
    served = [r for r in vault.requests if r.status == 200]
    assert [(r.name, r.version) for r in served] == [("inference-key", "")] * 2


def test_vault_name_form(vault: FakeKeyVault, clients: Clients, credential: StaticCredential):
    clients.routes["https://myvault.vault.azure.net"] = vault.url
    vault.add("sb-connection", SECRET, VERSION)
    vault.add("sb-connection", OTHER_SECRET, OTHER_VERSION)
    environ = {
        "ServiceBusConnection": "@Microsoft.KeyVault(VaultName=myvault;SecretName=sb-connection)",
        "PinnedConnection": (
            f"@Microsoft.KeyVault(VaultName=MyVault;SecretName=sb-connection;SecretVersion={VERSION})"
        ),
    }

    resolve_secret_settings(environ, client_for=clients)

    assert environ == {"ServiceBusConnection": OTHER_SECRET, "PinnedConnection": SECRET}
    assert clients.urls == ["https://myvault.vault.azure.net"]
    assert_handshake(vault, credential)
    served = sorted((r.name, r.version) for r in vault.requests if r.status == 200)
    assert served == [("sb-connection", ""), ("sb-connection", VERSION)]


# -- AOS_KEY_VAULT_URL + AOS_KEY_VAULT_SECRETS -----------------------------------------------


def test_listed_settings_come_from_the_app_vault(
    vault: FakeKeyVault, clients: Clients, credential: StaticCredential
):
    vault.add("ServiceBusConnection--fullyQualifiedNamespace", "prod.servicebus.windows.net")
    vault.add("AOS-INFERENCE-KEY", SECRET)
    vault.add("ServiceBusConnection", OTHER_SECRET)  # set locally: the vault must not win
    environ = {
        "AOS_KEY_VAULT_URL": vault.url + "/",  # as the ARM template's vaultUri, with a slash
        "AOS_KEY_VAULT_SECRETS": (
            " ServiceBusConnection__fullyQualifiedNamespace,AOS_INFERENCE_KEY,,"
            "ServiceBusConnection, AOS_INFERENCE_KEY"
        ),
        "ServiceBusConnection": "Endpoint=sb://local/;SharedAccessKey=dev",
        "AOS_INFERENCE_ENDPOINT": reference(vault, "AOS-INFERENCE-KEY"),
    }

    names = resolve_secret_settings(environ, client_for=clients)

    assert names == [
        "AOS_INFERENCE_ENDPOINT",
        "ServiceBusConnection__fullyQualifiedNamespace",
        "AOS_INFERENCE_KEY",
    ]
    assert environ["ServiceBusConnection__fullyQualifiedNamespace"] == "prod.servicebus.windows.net"
    assert environ["AOS_INFERENCE_KEY"] == SECRET
    assert environ["AOS_INFERENCE_ENDPOINT"] == SECRET
    assert environ["ServiceBusConnection"] == "Endpoint=sb://local/;SharedAccessKey=dev"
    assert clients.urls == [vault.url]  # the reference and the list share the vault's client
    assert_handshake(vault, credential)
    assert sum(r.status == 401 for r in vault.requests) == 1
    asked = {r.name for r in vault.requests}
    assert asked == {"ServiceBusConnection--fullyQualifiedNamespace", "AOS-INFERENCE-KEY"}


def test_an_empty_listed_setting_counts_as_unset(vault: FakeKeyVault, clients: Clients):
    vault.add("AOS-INFERENCE-KEY", SECRET)
    environ = {
        "AOS_KEY_VAULT_URL": vault.url,
        "AOS_KEY_VAULT_SECRETS": "AOS_INFERENCE_KEY",
        "AOS_INFERENCE_KEY": "",
    }
    assert resolve_secret_settings(environ, client_for=clients) == ["AOS_INFERENCE_KEY"]
    assert environ["AOS_INFERENCE_KEY"] == SECRET


def test_listed_settings_need_a_vault_url():
    environ = {"AOS_KEY_VAULT_SECRETS": "AOS_INFERENCE_KEY"}
    with pytest.raises(ConfigurationError) as caught:
        resolve_secret_settings(environ, client_for=no_client)
    assert caught.value.field == "AOS_KEY_VAULT_URL"
    assert "AOS_INFERENCE_KEY" in caught.value.message

    environ["AOS_INFERENCE_KEY"] = "set-locally"  # nothing to read: no vault needed
    assert resolve_secret_settings(environ, client_for=no_client) == []


@pytest.mark.parametrize(
    "url",
    ["http://myvault.vault.azure.net", "myvault", "https://myvault.vault.azure.net/secrets/x"],
)
def test_a_malformed_vault_url_is_named(url: str):
    environ = {"AOS_KEY_VAULT_URL": url, "AOS_KEY_VAULT_SECRETS": "AOS_INFERENCE_KEY"}
    with pytest.raises(ConfigurationError, match="AOS_KEY_VAULT_URL") as caught:
        resolve_secret_settings(environ, client_for=no_client)
    assert caught.value.field == "AOS_KEY_VAULT_URL"


def test_a_listed_name_that_maps_to_no_secret_name_is_named():
    environ = {
        "AOS_KEY_VAULT_URL": "https://myvault.vault.azure.net",
        "AOS_KEY_VAULT_SECRETS": "GOOD_NAME,bad.name",
    }
    with pytest.raises(ConfigurationError) as caught:
        resolve_secret_settings(environ, client_for=no_client)
    assert caught.value.field == "AOS_KEY_VAULT_SECRETS"
    assert "'bad.name'" in caught.value.message


# -- nothing to do, twice ------------------------------------------------------------------------


def test_nothing_to_resolve_builds_no_client_and_calls_nobody(vault: FakeKeyVault):
    environ = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "AOS_KEY_VAULT_URL": vault.url,  # set by the template, but nothing is asked of it
        "AOS_KEY_VAULT_SECRETS": "",
    }
    before = dict(environ)
    assert resolve_secret_settings(environ, client_for=no_client) == []
    assert environ == before
    assert vault.requests == []


def test_running_twice_is_harmless(
    vault: FakeKeyVault, clients: Clients, credential: StaticCredential
):
    vault.add("AOS-INFERENCE-KEY", SECRET)
    vault.add("db", OTHER_SECRET, VERSION)
    environ = {
        "AOS_KEY_VAULT_URL": vault.url,
        "AOS_KEY_VAULT_SECRETS": "AOS_INFERENCE_KEY",
        "Database": reference(vault, "db", VERSION),
    }
    assert resolve_secret_settings(environ, client_for=clients) == [
        "Database",
        "AOS_INFERENCE_KEY",
    ]
    resolved, seen = dict(environ), len(vault.requests)

    assert resolve_secret_settings(environ, client_for=clients) == []

    assert environ == resolved
    assert len(vault.requests) == seen
    assert clients.urls == [vault.url]


def test_importing_and_an_empty_run_stay_cheap():
    code = (
        "import sys\n"
        "from aos.governance.secrets import resolve_secret_settings\n"
        "assert resolve_secret_settings({'A': 'b'}) == []\n"
        "heavy = [m for m in ('azure.keyvault.secrets', 'azure.identity', 'azure.core')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_the_default_client_uses_default_azure_credential():
    from azure.identity import DefaultAzureCredential

    from aos.governance.secrets import _DefaultClients

    factory = _DefaultClients()
    first = factory("https://myvault.vault.azure.net")
    credential = factory._credential
    second = factory("https://other.vault.azure.net")
    try:
        assert isinstance(first, SecretClient) and isinstance(second, SecretClient)
        assert first.vault_url == "https://myvault.vault.azure.net"
        assert isinstance(credential, DefaultAzureCredential)
        assert factory._credential is credential  # one credential for every vault
    finally:
        first.close()
        second.close()
        factory.close()


# -- failures ------------------------------------------------------------------------------------


def test_a_missing_secret_is_named_and_nothing_is_set(vault: FakeKeyVault, clients: Clients):
    vault.add("AOS-INFERENCE-KEY", SECRET)
    environ = {
        "AOS_KEY_VAULT_URL": vault.url,
        "AOS_KEY_VAULT_SECRETS": "AOS_INFERENCE_KEY,ServiceBusConnection",
    }
    before = dict(environ)
    with pytest.raises(ConfigurationError) as caught:
        resolve_secret_settings(environ, client_for=clients)
    message = caught.value.message
    assert caught.value.field == "ServiceBusConnection"
    assert "setting ServiceBusConnection" in message
    assert f"secret 'ServiceBusConnection' in Key Vault {vault.url}" in message
    assert "not found (404)" in message and "az keyvault secret set" in message
    assert environ == before  # the secret that was read is not applied either


def test_a_missing_version_is_named(vault: FakeKeyVault, clients: Clients):
    vault.add("db", SECRET, VERSION)
    environ = {"Database": reference(vault, "db", OTHER_VERSION)}
    with pytest.raises(ConfigurationError, match=f"version {OTHER_VERSION}.*not found"):
        resolve_secret_settings(environ, client_for=clients)
    assert vault.requests[-1].path == f"/secrets/db/{OTHER_VERSION}"


def test_forbidden_says_which_role_to_grant(vault: FakeKeyVault, clients: Clients):
    vault.add("db", SECRET)
    vault.forbidden.add("db")
    environ = {"Database": reference(vault, "db")}
    with pytest.raises(ConfigurationError) as caught:
        resolve_secret_settings(environ, client_for=clients)
    message = caught.value.message
    assert caught.value.field == "Database"
    assert f"secret 'db' in Key Vault {vault.url}" in message
    assert "403 Forbidden" in message
    assert "grant the app's identity 'Key Vault Secrets User' on the vault" in message
    assert environ == {"Database": reference(vault, "db")}


def test_no_credential_says_to_sign_in(vault: FakeKeyVault, cert_files: tuple[Path, Path]):
    vault.add("db", SECRET)
    credential = StaticCredential(
        error=CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")
    )
    environ = {"Database": reference(vault, "db")}
    with pytest.raises(ConfigurationError) as caught:
        resolve_secret_settings(environ, client_for=Clients(cert_files[0], credential))
    message = caught.value.message
    assert caught.value.field == "Database"
    assert f"secret 'db' in Key Vault {vault.url}" in message
    assert "CredentialUnavailableError" in message
    assert "sign in with `az login` locally or give the app a managed identity" in message
    assert [r.status for r in vault.requests] == [401]  # challenged, then no token to send


def test_a_rejected_token_says_to_sign_in(vault: FakeKeyVault, cert_files: tuple[Path, Path]):
    vault.add("db", SECRET)
    credential = StaticCredential(token="a-token-of-another-tenant")
    environ = {"Database": reference(vault, "db")}
    with pytest.raises(ConfigurationError) as caught:
        resolve_secret_settings(environ, client_for=Clients(cert_files[0], credential))
    message = caught.value.message
    assert "the vault rejected the app's token (401)" in message
    assert "az login" in message
    assert vault.requests[-1].authorization == "Bearer a-token-of-another-tenant"


def test_an_unreachable_vault_is_named(cert_files: tuple[Path, Path]):
    (port,) = free_ports(1)
    url = f"https://127.0.0.1:{port}"
    environ = {"Database": f"@Microsoft.KeyVault(SecretUri={url}/secrets/db)"}
    clients = Clients(cert_files[0], StaticCredential(), retry_total=0)
    with pytest.raises(ConfigurationError) as caught:
        resolve_secret_settings(environ, client_for=clients)
    message = caught.value.message
    assert caught.value.field == "Database"
    assert f"Key Vault {url}" in message and "unreachable" in message


# -- no secret in logs or errors -----------------------------------------------------------------


def test_secret_values_reach_no_log_and_no_error(
    vault: FakeKeyVault, clients: Clients, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # the SDK's own HTTP logging included
    vault.add("AOS-INFERENCE-KEY", SECRET)
    vault.add("db", OTHER_SECRET, VERSION)
    vault.add("locked", OTHER_SECRET)
    vault.forbidden.add("locked")
    vault.echo_in_errors = OTHER_SECRET  # a careless service quoting a secret in its errors
    environ = {
        "AOS_KEY_VAULT_URL": vault.url,
        "AOS_KEY_VAULT_SECRETS": "AOS_INFERENCE_KEY",
        "Database": reference(vault, "db", VERSION),
    }
    resolve_secret_settings(environ, client_for=clients)
    assert environ["AOS_INFERENCE_KEY"] == SECRET

    errors: list[ConfigurationError] = []
    for failing in (
        {"Locked": reference(vault, "locked")},
        {"Missing": reference(vault, "missing")},
        {**environ, "Missing": reference(vault, "missing")},  # resolved secrets in the environ
    ):
        with pytest.raises(ConfigurationError) as caught:
            resolve_secret_settings(failing, client_for=clients)
        errors.append(caught.value)

    infos = [r.getMessage() for r in caplog.records if r.name == "aos.governance.secrets"]
    assert f"setting AOS_INFERENCE_KEY was read from Key Vault {vault.url}" in infos
    assert f"setting Database was read from Key Vault {vault.url}" in infos
    assert any(r.name.startswith("azure") for r in caplog.records)  # SDK logging was on
    texts = [caplog.text, *(r.getMessage() for r in caplog.records)]
    for error in errors:
        texts += [str(error), repr(error), error.message, repr(error.args)]
        assert error.__cause__ is None and error.__suppress_context__
    for text in texts:
        for secret in (SECRET, OTHER_SECRET, "TOPSECRET", TOKEN):
            assert secret not in text
