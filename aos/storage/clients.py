"""The one storage client factory.

Connections follow the Azure Functions conventions, so one set of settings serves the host and
AOS alike:

- ``<name>`` holds a connection string (``UseDevelopmentStorage=true`` means Azurite on its
  default ports);
- or identity-based: ``<name>__accountName`` (or ``<name>__blobServiceUri`` /
  ``<name>__tableServiceUri`` / ``<name>__queueServiceUri``), authenticated with
  ``DefaultAzureCredential``, or with a managed identity when ``<name>__credential`` is
  ``managedidentity`` (``<name>__clientId`` picks a user-assigned one).

SDK clients are imported when first needed, so importing AOS stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from aos.errors import ConfigurationError
from aos.identity import async_credential, credential_kind
from aos.settings import Settings

if TYPE_CHECKING:
    from azure.data.tables.aio import TableServiceClient
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue.aio import QueueServiceClient

# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

Service = Literal["blob", "queue", "table"]


def azurite_connection_string(
    host: str = "127.0.0.1",
    blob_port: int = 10000,
    queue_port: int = 10001,
    table_port: int = 10002,
) -> str:
    """The connection string of an Azurite instance (what UseDevelopmentStorage=true means)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{AZURITE_ACCOUNT};"
    )


class StorageConnection(BaseModel):
    """A resolved storage connection: a connection string, or service URLs plus an identity."""

    model_config = ConfigDict(frozen=True)

    setting: str
    connection_string: str | None = None
    service_urls: dict[str, str] = {}
    credential: Literal["default", "managedidentity"] = "default"
    client_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, name: str | None = None) -> StorageConnection:
        name = name or settings.storage_connection
        value = settings.get(name)
        if value:
            if value.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
                value = azurite_connection_string()
            elif "=" not in value:
                raise ConfigurationError(
                    f"setting {name} must be a storage connection string "
                    "(e.g. UseDevelopmentStorage=true for Azurite)",
                    field=name,
                )
            return cls(setting=name, connection_string=value)

        urls = {
            service: url
            for service in ("blob", "queue", "table")
            if (url := settings.get(f"{name}__{service}ServiceUri"))
        }
        account = settings.get(f"{name}__accountName")
        if account:
            for service in ("blob", "queue", "table"):
                urls.setdefault(service, f"https://{account}.{service}.core.windows.net")
        if not urls:
            raise ConfigurationError(
                f"storage is not configured: set {name} to a connection string "
                f"('UseDevelopmentStorage=true' for Azurite) or {name}__accountName for an "
                "identity-based connection",
                field=name,
            )
        kind = credential_kind(settings, name)
        return cls(
            setting=name,
            service_urls=urls,
            credential=kind,
            client_id=settings.get(f"{name}__clientId"),
        )

    def url(self, service: Service) -> str:
        try:
            return self.service_urls[service]
        except KeyError:
            raise ConfigurationError(
                f"setting {self.setting}__{service}ServiceUri (or {self.setting}__accountName) "
                f"is needed for {service} storage",
                field=f"{self.setting}__{service}ServiceUri",
            ) from None


class StorageClients:
    """Builds and caches async Table, Blob and Queue service clients for one connection.

    Use as an async context manager, or call `close()`, to release connections.
    """

    def __init__(self, connection: StorageConnection) -> None:
        self.connection = connection
        self._credential: Any = None
        self._clients: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> StorageClients:
        return cls(StorageConnection.from_settings(settings or Settings.from_env()))

    def tables(self) -> TableServiceClient:
        from azure.data.tables.aio import TableServiceClient

        return self._client("table", TableServiceClient)

    def blobs(self) -> BlobServiceClient:
        from azure.storage.blob.aio import BlobServiceClient

        return self._client("blob", BlobServiceClient)

    def queues(self) -> QueueServiceClient:
        from azure.storage.queue.aio import QueueServiceClient

        return self._client("queue", QueueServiceClient)

    def _client(self, service: Service, client_type: Any) -> Any:
        if service not in self._clients:
            if self.connection.connection_string:
                client = client_type.from_connection_string(self.connection.connection_string)
            else:
                client = client_type(self.connection.url(service), credential=self._identity())
            self._clients[service] = client
        return self._clients[service]

    def _identity(self) -> Any:
        if self._credential is None:
            self._credential = async_credential(
                self.connection.credential, self.connection.client_id
            )
        return self._credential

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        if self._credential is not None:
            await self._credential.close()
            self._credential = None

    async def __aenter__(self) -> StorageClients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
