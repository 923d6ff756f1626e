"""Publish events to topics: Azure Service Bus when configured, else the local broker.

The Service Bus connection follows the Azure Functions conventions for a connection, named by
`Settings.service_bus_connection` (``AOS_SERVICE_BUS_CONNECTION``, default
``ServiceBusConnection``, the name the Service Bus triggers use), so one set of settings serves
the host's triggers and AOS's senders:

- ``ServiceBusConnection`` holds a connection string (``Endpoint=sb://...;SharedAccessKey...``);
- or identity-based: ``ServiceBusConnection__fullyQualifiedNamespace``
  (``<namespace>.servicebus.windows.net``), authenticated with ``DefaultAzureCredential``, or
  with a managed identity when ``ServiceBusConnection__credential`` is ``managedidentity``
  (``ServiceBusConnection__clientId`` picks a user-assigned one).

With neither set, `publisher_from_settings` returns a `LocalBrokerPublisher` over Azure Storage
queues (Azurite locally). SDKs are imported when first needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aos.agents.models import EventEnvelope
from aos.errors import AOSError, ConfigurationError, InvalidInputError
from aos.identity import async_credential, credential_kind
from aos.messaging.envelope import to_message, to_service_bus_message
from aos.messaging.errors import PublishError
from aos.messaging.local_broker import LocalBroker
from aos.settings import Settings
from aos.storage.clients import StorageClients

if TYPE_CHECKING:
    from azure.servicebus.aio import ServiceBusClient, ServiceBusSender


@runtime_checkable
class Publisher(Protocol):
    """Sends events to a topic. Use as an async context manager, or call `close()`."""

    async def publish(self, topic: str, events: Sequence[EventEnvelope]) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Publisher: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class ServiceBusConnection(BaseModel):
    """A resolved Service Bus connection: a connection string, or a namespace plus identity."""

    model_config = ConfigDict(frozen=True)

    setting: str
    connection_string: str | None = Field(None, repr=False)
    fully_qualified_namespace: str | None = None
    credential: Literal["default", "managedidentity"] = "default"
    client_id: str | None = None

    @classmethod
    def is_configured(cls, settings: Settings, name: str | None = None) -> bool:
        name = name or settings.service_bus_connection
        return bool(settings.get(name) or settings.get(f"{name}__fullyQualifiedNamespace"))

    @classmethod
    def from_settings(cls, settings: Settings, name: str | None = None) -> ServiceBusConnection:
        """The connection named `name` (default: `Settings.service_bus_connection`)."""
        name = name or settings.service_bus_connection
        value = settings.get(name)
        if value:
            fields = _connection_string_fields(value)
            endpoint = fields.get("endpoint", "")
            if not endpoint:
                raise ConfigurationError(
                    f"setting {name} must be a Service Bus connection string "
                    "(Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=...;"
                    f"SharedAccessKey=...), or unset it and set {name}__fullyQualifiedNamespace "
                    "for an identity-based connection",
                    field=name,
                )
            return cls(
                setting=name,
                connection_string=value.strip(),
                fully_qualified_namespace=_namespace(endpoint),
            )
        namespace = settings.get(f"{name}__fullyQualifiedNamespace")
        if not namespace:
            raise ConfigurationError(
                f"Service Bus is not configured: set {name} to a connection string, or "
                f"{name}__fullyQualifiedNamespace (<namespace>.servicebus.windows.net) for an "
                "identity-based connection",
                field=name,
            )
        kind = credential_kind(settings, name)
        return cls(
            setting=name,
            fully_qualified_namespace=_namespace(namespace),
            credential=kind,
            client_id=settings.get(f"{name}__clientId"),
        )


def _connection_string_fields(value: str) -> dict[str, str]:
    fields = {}
    for part in value.strip().split(";"):
        key, sep, item = part.partition("=")
        if sep:
            fields[key.strip().lower()] = item.strip()
    return fields


def _namespace(value: str) -> str:
    namespace = value.strip()
    for scheme in ("sb://", "https://", "amqps://"):
        if namespace.lower().startswith(scheme):
            namespace = namespace[len(scheme) :]
    return namespace.split("/")[0]


class ServiceBusPublisher:
    """Publishes to Azure Service Bus topics, in as few batches as the size limit allows."""

    def __init__(self, connection: ServiceBusConnection, **client_options: Any) -> None:
        self.connection = connection
        self._client_options = client_options
        self._client: ServiceBusClient | None = None
        self._credential: Any = None
        self._senders: dict[str, ServiceBusSender] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, name: str | None = None, **client_options: Any
    ) -> ServiceBusPublisher:
        return cls(ServiceBusConnection.from_settings(settings, name), **client_options)

    def client(self) -> ServiceBusClient:
        """The SDK client (created on first use; it connects on first send)."""
        if self._client is None:
            from azure.servicebus.aio import ServiceBusClient

            if self.connection.connection_string:
                self._client = ServiceBusClient.from_connection_string(
                    self.connection.connection_string, **self._client_options
                )
            else:
                assert self.connection.fully_qualified_namespace
                self._client = ServiceBusClient(
                    self.connection.fully_qualified_namespace,
                    self._identity(),
                    **self._client_options,
                )
        return self._client

    def _identity(self) -> Any:
        if self._credential is None:
            self._credential = async_credential(
                self.connection.credential, self.connection.client_id
            )
        return self._credential

    def messages(self, events: Sequence[EventEnvelope]) -> list[Any]:
        """The ``azure.servicebus.ServiceBusMessage`` for each event (structured mode)."""
        return [to_service_bus_message(event) for event in events]

    async def publish(self, topic: str, events: Sequence[EventEnvelope]) -> None:
        if not events:
            return
        messages = self.messages(events)
        from azure.core.exceptions import AzureError
        from azure.servicebus.exceptions import MessageSizeExceededError

        sent = 0
        where = f"Service Bus topic '{topic}' on {self.connection.fully_qualified_namespace}"
        try:
            sender = self._sender(topic)
            batch = await sender.create_message_batch()
            for event, message in zip(events, messages, strict=True):
                if _try_add(batch, message, MessageSizeExceededError):
                    continue
                if len(batch):
                    await sender.send_messages(batch)
                    sent += len(batch)
                    batch = await sender.create_message_batch()
                if not _try_add(batch, message, MessageSizeExceededError):
                    raise PublishError(
                        f"event {event.id} is too large for {where} "
                        f"(a message holds at most {batch.max_size_in_bytes} bytes)",
                        topic=topic,
                    )
            if len(batch):
                await sender.send_messages(batch)
        except PublishError:
            raise
        except (AzureError, OSError) as exc:
            self._senders.pop(topic, None)
            note = (
                f" ({sent} were sent before the failure; re-sending is safe where duplicate "
                "detection is on, as message ids are event ids)"
                if sent
                else ""
            )
            raise PublishError(
                f"could not publish {len(events)} event(s) to {where}{note}: "
                f"{type(exc).__name__}: {exc}",
                topic=topic,
            ) from exc

    def _sender(self, topic: str) -> ServiceBusSender:
        if topic not in self._senders:
            self._senders[topic] = self.client().get_topic_sender(topic_name=topic)
        return self._senders[topic]

    async def close(self) -> None:
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            await sender.close()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._credential is not None:
            await self._credential.close()
            self._credential = None

    async def __aenter__(self) -> ServiceBusPublisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _try_add(batch: Any, message: Any, too_large: type[Exception]) -> bool:
    try:
        batch.add_message(message)
    except too_large:
        return False
    return True


class LocalBrokerPublisher:
    """Publishes to the local broker (storage queues), for development and tests."""

    def __init__(self, broker: LocalBroker, *, owns_clients: bool = False) -> None:
        self.broker = broker
        self._owns_clients = owns_clients

    async def publish(self, topic: str, events: Sequence[EventEnvelope]) -> None:
        if not events:
            return
        from azure.core.exceptions import AzureError

        try:
            await self.broker.send_messages(topic, [to_message(event) for event in events])
        except AOSError as exc:
            raise PublishError(
                f"could not publish {len(events)} event(s) to local topic '{topic}': {exc.message}",
                topic=topic,
            ) from exc
        except AzureError as exc:
            raise PublishError(
                f"could not publish {len(events)} event(s) to local topic '{topic}' (storage "
                f"queues): {type(exc).__name__}: {exc}",
                topic=topic,
            ) from exc

    async def close(self) -> None:
        if self._owns_clients:
            await self.broker.clients.close()

    async def __aenter__(self) -> LocalBrokerPublisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def publisher_from_settings(
    settings: Settings,
    clients: StorageClients | None = None,
    *,
    connection_name: str | None = None,
    **broker_options: Any,
) -> ServiceBusPublisher | LocalBrokerPublisher:
    """A `ServiceBusPublisher` when the connection `connection_name` is configured (default:
    `Settings.service_bus_connection`), else a `LocalBrokerPublisher` over `clients` (storage
    clients made from `settings`, and closed with the publisher, when not given).

    `broker_options` go to `LocalBroker` (lock_duration, max_delivery_count). Close the
    publisher (or use it as an async context manager): a Service Bus one holds a connection.
    """
    if ServiceBusConnection.is_configured(settings, connection_name):
        return ServiceBusPublisher.from_settings(settings, connection_name)
    owns = clients is None
    clients = clients or StorageClients.from_settings(settings)
    return LocalBrokerPublisher(
        LocalBroker.from_settings(settings, clients, **broker_options), owns_clients=owns
    )


async def send_event(
    settings: Settings,
    topic: str,
    event: EventEnvelope | Mapping[str, Any],
    *,
    clients: StorageClients | None = None,
) -> EventEnvelope:
    """Send one event to `topic` ("send to a topic" for the CLI and the HTTP endpoint).

    `event` may be a mapping (e.g. parsed JSON), validated into an `EventEnvelope`; an invalid
    one raises `InvalidInputError` naming the field. Returns the event sent.
    """
    if not isinstance(event, EventEnvelope):
        try:
            event = EventEnvelope.model_validate(event)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = ".".join(str(part) for part in error["loc"]) or "event"
            raise InvalidInputError(f"event {name}: {error['msg']}", field=name) from None
    async with publisher_from_settings(settings, clients) as publisher:
        await publisher.publish(topic, [event])
    return event
