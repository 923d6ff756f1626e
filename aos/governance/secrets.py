"""Settings that hold secrets, read from Azure Key Vault.

A setting can come from Key Vault in two ways:

Key Vault references
    A setting whose whole value is a reference, in the App Service syntax::

        @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/<version>)
        @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>)
        @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>;SecretVersion=<version>)
        @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>)

    ``VaultName=<vault>`` means ``https://<vault>.vault.azure.net``; without a version the
    latest version is read. In Azure the platform resolves references before the worker starts;
    locally (the AOS dev host, ``python -m aos run``, tests, self-hosting) nothing does, so
    `resolve_secret_settings` resolves every environment value that is a reference. A value
    that starts with ``@Microsoft.KeyVault`` but is malformed is an error, not a literal.

``AOS_KEY_VAULT_URL`` and ``AOS_KEY_VAULT_SECRETS``
    ``AOS_KEY_VAULT_URL`` is the vault of the app (the ARM template sets it);
    ``AOS_KEY_VAULT_SECRETS`` is a comma-separated list of setting names, e.g.
    ``ServiceBusConnection,AOS_INFERENCE_KEY``. Each listed setting that is not set in the
    environment (or is empty) is read from that vault, from the secret named after the setting.
    Key Vault secret names allow only letters, digits and dashes, so the name is the setting
    name with ``__`` replaced by ``--`` and then ``_`` by ``-``:

    - ``ServiceBusConnection`` -> ``ServiceBusConnection``
    - ``AOS_INFERENCE_KEY`` -> ``AOS-INFERENCE-KEY``
    - ``ServiceBusConnection__fullyQualifiedNamespace`` ->
      ``ServiceBusConnection--fullyQualifiedNamespace``

    A setting already set wins: set it in the environment (or local.settings.json) to override
    the vault.

Secrets are read with ``DefaultAzureCredential``: the developer's sign-in (``az login``) locally,
the app's managed identity in Azure, which needs the role 'Key Vault Secrets User' on the vault.
Only setting names and vault URLs are logged; secret values never appear in logs or errors.

The Key Vault SDK and azure.identity are imported only when a secret is actually read, so
importing this module, and calling `resolve_secret_settings` when there is nothing to resolve,
stays cheap.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from aos.errors import ConfigurationError

logger = logging.getLogger(__name__)

KEY_VAULT_URL = "AOS_KEY_VAULT_URL"
KEY_VAULT_SECRETS = "AOS_KEY_VAULT_SECRETS"

REFERENCE_SYNTAX = (
    "@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>[/<version>]) "
    "or @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>])"
)

_PREFIX = "@microsoft.keyvault"
_REFERENCE = re.compile(r"@Microsoft\.KeyVault\((?P<body>[^()]*)\)", re.IGNORECASE)
_KEYS = {
    "secreturi": "SecretUri",
    "vaultname": "VaultName",
    "secretname": "SecretName",
    "secretversion": "SecretVersion",
}
# Key Vault's rules: secret names 1-127 letters, digits and dashes; vault names 3-24 letters,
# digits and dashes, starting with a letter, ending with a letter or digit, no "--".
_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_VERSION = re.compile(r"[0-9A-Za-z]{1,64}")
_VAULT_NAME = re.compile(r"[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]")
# Connect and read timeouts of the default client, so an unreachable vault fails start-up in
# seconds rather than minutes.
_CONNECTION_TIMEOUT = 10
_READ_TIMEOUT = 30


class SecretGetter(Protocol):
    """What `resolve_secret_settings` needs of a client: `SecretClient.get_secret`."""

    def get_secret(self, name: str, version: str | None = None, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class SecretReference:
    """One secret: the vault (``https://<host>``, no trailing slash), the name, the version."""

    vault_url: str
    name: str
    version: str | None = None

    def describe(self) -> str:
        version = f" (version {self.version})" if self.version else ""
        return f"secret '{self.name}'{version} in Key Vault {self.vault_url}"


def is_key_vault_reference(value: str) -> bool:
    """Whether a setting value is (meant to be) a Key Vault reference. Cheap: no parsing."""
    return value.lstrip()[: len(_PREFIX)].lower() == _PREFIX


def secret_name_for(setting: str) -> str:
    """The Key Vault secret name of a setting: ``__`` -> ``--``, then ``_`` -> ``-``."""
    return setting.replace("__", "--").replace("_", "-")


def parse_key_vault_reference(value: str, setting: str) -> SecretReference:
    """Parse a Key Vault reference strictly; a malformed one raises ConfigurationError."""

    def malformed(reason: str) -> ConfigurationError:
        return ConfigurationError(
            f"setting {setting} holds a malformed Key Vault reference ({reason}): "
            f"{value.strip()!r}; expected {REFERENCE_SYNTAX}",
            field=setting,
        )

    match = _REFERENCE.fullmatch(value.strip())
    if not match:
        raise malformed("it must be the whole value, with its parameters in parentheses")
    fields: dict[str, str] = {}
    parts = match["body"].split(";")
    if len(parts) > 1 and not parts[-1].strip():
        parts.pop()  # one trailing ';' is harmless
    for part in parts:
        key, equals, item = (piece.strip() for piece in part.partition("="))
        if not equals or not key or not item:
            raise malformed(f"'{part.strip()}' is not Name=value")
        canonical = _KEYS.get(key.lower())
        if canonical is None:
            raise malformed(f"unknown parameter '{key}'")
        if canonical in fields:
            raise malformed(f"{canonical} is given twice")
        fields[canonical] = item

    if "SecretUri" in fields:
        if len(fields) > 1:
            raise malformed("SecretUri cannot be combined with VaultName, SecretName or version")
        uri = fields["SecretUri"]
        try:
            url_parts = urlsplit(uri)
            url_parts.port  # noqa: B018 -- raises ValueError for a malformed port
        except ValueError:
            raise malformed(f"SecretUri '{uri}' is not a URL") from None
        if url_parts.scheme.lower() != "https" or not url_parts.hostname or "@" in url_parts.netloc:
            raise malformed("SecretUri must be an https:// URL of the vault")
        if url_parts.query or url_parts.fragment:
            raise malformed("SecretUri must have no query or fragment")
        segments = url_parts.path.split("/")[1:]
        if segments and not segments[-1] and len(segments) > 2:
            segments.pop()  # a trailing slash after the name or version
        if len(segments) not in (2, 3) or segments[0] != "secrets":
            raise malformed(
                "the SecretUri path must be /secrets/<name> or /secrets/<name>/<version>"
            )
        name, version = segments[1], (segments[2] if len(segments) == 3 else None)
        vault_url = f"https://{url_parts.netloc.lower()}"
    else:
        missing = [key for key in ("VaultName", "SecretName") if key not in fields]
        if missing:
            raise malformed(f"{' and '.join(missing)} missing")
        vault = fields["VaultName"]
        if not _VAULT_NAME.fullmatch(vault):
            raise malformed(
                f"VaultName '{vault}' is not a vault name (3-24 letters, digits and dashes)"
            )
        name, version = fields["SecretName"], fields.get("SecretVersion")
        vault_url = f"https://{vault.lower()}.vault.azure.net"

    if not _SECRET_NAME.fullmatch(name):
        raise malformed(f"secret name '{name}' must be 1-127 letters, digits and dashes")
    if version is not None and not _VERSION.fullmatch(version):
        raise malformed(f"secret version '{version}' must be letters and digits")
    return SecretReference(vault_url, name, version)


def resolve_secret_settings(
    environ: MutableMapping[str, str],
    *,
    client_for: Callable[[str], SecretGetter] | None = None,
) -> list[str]:
    """Put the secrets of Key Vault references and of ``AOS_KEY_VAULT_SECRETS`` into `environ`.

    Every value of `environ` that is a Key Vault reference is replaced by the secret, and every
    setting listed in ``AOS_KEY_VAULT_SECRETS`` that is unset (or empty) is read from the vault
    of ``AOS_KEY_VAULT_URL``. Returns the names of the settings it set (never values). Either
    every secret is read and set, or a ConfigurationError names the setting at fault and
    `environ` is unchanged. Running it again is harmless: resolved values are no longer
    references, and listed settings are then set.

    `client_for(vault_url)` builds the client of a vault (an object with
    ``get_secret(name, version)``, such as ``azure.keyvault.secrets.SecretClient``); it is called
    once per vault, only when there is something to read, and the clients are closed before this
    returns. By default it is a ``SecretClient`` with ``DefaultAzureCredential``.

    Synchronous: it runs once at process start, before settings are first used.
    """
    wanted: dict[str, SecretReference] = {}
    for name, value in list(environ.items()):
        if isinstance(value, str) and is_key_vault_reference(value):
            wanted[name] = parse_key_vault_reference(value, name)

    missing = [name for name in _listed_settings(environ) if not environ.get(name)]
    if missing:
        vault_url = _vault_url(environ.get(KEY_VAULT_URL), missing)
        for name in missing:
            wanted[name] = SecretReference(vault_url, secret_name_for(name))
    if not wanted:
        return []

    values = _read(wanted, client_for)
    environ.update(values)
    for name, reference in wanted.items():
        logger.info("setting %s was read from Key Vault %s", name, reference.vault_url)
    return list(values)


_process_lock = threading.Lock()
_process_resolved = False


def resolve_process_secrets() -> list[str]:
    """`resolve_secret_settings` on this process's environment, once: every entry point
    (`function_app.py` when imported, the dev host, the CLI) calls it before reading settings,
    and only the first call does any work."""
    global _process_resolved
    with _process_lock:
        if _process_resolved:
            return []
        names = resolve_secret_settings(os.environ)
        _process_resolved = True
        return names


def _listed_settings(environ: Mapping[str, str]) -> list[str]:
    names: list[str] = []
    for item in (environ.get(KEY_VAULT_SECRETS) or "").split(","):
        name = item.strip()
        if not name or name in names:
            continue
        if not _SECRET_NAME.fullmatch(secret_name_for(name)):
            raise ConfigurationError(
                f"setting {KEY_VAULT_SECRETS} lists '{name}', which is not a setting name that "
                "maps to a Key Vault secret name (letters, digits, '_' and '-', at most 127)",
                field=KEY_VAULT_SECRETS,
            )
        names.append(name)
    return names


def _vault_url(value: str | None, missing: list[str]) -> str:
    if not value or not value.strip():
        raise ConfigurationError(
            f"setting {KEY_VAULT_URL} is not set, but {KEY_VAULT_SECRETS} asks for "
            f"{', '.join(missing)} from Key Vault: set {KEY_VAULT_URL} to the vault's URL "
            "(https://<vault>.vault.azure.net), or set those settings yourself",
            field=KEY_VAULT_URL,
        )
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a malformed port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() != "https"
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigurationError(
            f"setting {KEY_VAULT_URL} must be the URL of a vault, "
            f"https://<vault>.vault.azure.net, not '{value}'",
            field=KEY_VAULT_URL,
        )
    return f"https://{parts.netloc.lower()}"


class _DefaultClients:
    """SecretClients with one DefaultAzureCredential shared by all vaults."""

    def __init__(self) -> None:
        self._credential: Any = None

    def __call__(self, vault_url: str) -> SecretGetter:
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        if self._credential is None:
            self._credential = DefaultAzureCredential()
        return SecretClient(
            vault_url,
            credential=self._credential,
            connection_timeout=_CONNECTION_TIMEOUT,
            read_timeout=_READ_TIMEOUT,
        )

    def close(self) -> None:
        if self._credential is not None:
            self._credential.close()
            self._credential = None


def _read(
    wanted: Mapping[str, SecretReference], client_for: Callable[[str], SecretGetter] | None
) -> dict[str, str]:
    default = _DefaultClients() if client_for is None else None
    factory: Callable[[str], SecretGetter] = client_for or default  # type: ignore[assignment]
    clients: dict[str, SecretGetter] = {}
    values: dict[str, str] = {}
    try:
        for setting, reference in wanted.items():
            client = clients.get(reference.vault_url)
            if client is None:
                client = clients[reference.vault_url] = factory(reference.vault_url)
            values[setting] = _get(client, setting, reference)
    finally:
        for client in clients.values():
            close = getattr(client, "close", None)
            if callable(close):
                close()
        if default is not None:
            default.close()
    return values


def _get(client: SecretGetter, setting: str, reference: SecretReference) -> str:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    where = f"setting {setting}: {reference.describe()}"
    sign_in = "sign in with `az login` locally or give the app a managed identity"
    try:
        secret = client.get_secret(reference.name, reference.version)
    except ResourceNotFoundError:
        raise ConfigurationError(
            f"{where} was not found (404): create it (az keyvault secret set --vault-name "
            f"<vault> --name {reference.name} --value ...) or correct the setting",
            field=setting,
        ) from None
    except ClientAuthenticationError as exc:
        if exc.response is not None:
            reason = f"the vault rejected the app's token ({exc.status_code})"
            advice = f"{sign_in}, in the vault's tenant"
        else:
            detail = (str(exc.message or exc).strip().splitlines() or [""])[0]
            reason = f"no credential could get a token for Key Vault ({type(exc).__name__}"
            reason += f": {detail})" if detail else ")"
            advice = sign_in
        raise ConfigurationError(
            f"{where} could not be read: {reason}: {advice}", field=setting
        ) from None
    except HttpResponseError as exc:
        status = exc.status_code
        code = getattr(getattr(exc, "error", None), "code", None)
        answer = f"{status} {code}" if code else f"{status}"
        if status == 403:
            raise ConfigurationError(
                f"{where} could not be read: access denied ({answer}): grant the app's identity "
                "'Key Vault Secrets User' on the vault (or 'get' on secrets in its access "
                "policies), and allow this network if the vault has a firewall",
                field=setting,
            ) from None
        raise ConfigurationError(
            f"{where} could not be read: Key Vault answered {answer}", field=setting
        ) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise ConfigurationError(
            f"{where} could not be read: the vault is unreachable ({type(exc).__name__}): check "
            "the vault URL or name and that this machine can reach it (network, firewall, "
            "private endpoint)",
            field=setting,
        ) from None
    except ValueError as exc:  # the SDK refused the vault's authentication challenge
        raise ConfigurationError(f"{where} could not be read: {exc}", field=setting) from None
    value = getattr(secret, "value", None)
    if value is None:
        raise ConfigurationError(f"{where} has no value", field=setting)
    return value
