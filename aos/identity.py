"""Identity-based connections, as the Functions conventions define them for any connection:
`<name>__credential` = `managedidentity` (with `<name>__clientId` for a user-assigned identity)
uses the app's managed identity; absent, `DefaultAzureCredential` (developer sign-in locally)."""

from __future__ import annotations

from typing import Any, Literal

from aos.errors import ConfigurationError
from aos.settings import Settings

CredentialKind = Literal["default", "managedidentity"]


def credential_kind(settings: Settings, name: str) -> CredentialKind:
    """The credential `<name>__credential` asks for; an unknown value names the setting."""
    kind = (settings.get(f"{name}__credential") or "default").lower()
    if kind not in ("default", "managedidentity"):
        raise ConfigurationError(
            f"setting {name}__credential must be 'managedidentity' or absent, not '{kind}'",
            field=f"{name}__credential",
        )
    return kind  # type: ignore[return-value]


def async_credential(kind: CredentialKind, client_id: str | None) -> Any:
    """An async token credential of that kind (azure.identity is imported only when needed)."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if kind == "managedidentity":
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(managed_identity_client_id=client_id)
