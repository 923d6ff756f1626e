"""Publisher selection and Service Bus configuration (no namespace needed), and `send_event`
through the local broker on Azurite."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch
from azure.servicebus.exceptions import ServiceBusConnectionError

from aos.agents.models import EventEnvelope
from aos.errors import ConfigurationError, InvalidInputError
from aos.messaging.envelope import CLOUDEVENTS_JSON, from_message
from aos.messaging.errors import PublishError
from aos.messaging.local_broker import LocalBroker
from aos.messaging.publisher import (
    LocalBrokerPublisher,
    Publisher,
    ServiceBusConnection,
    ServiceBusPublisher,
    publisher_from_settings,
    send_event,
)
from aos.messaging.topics import Topics
from aos.settings import Settings
from aos.storage.clients import StorageClients

KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
CONNECTION_STRING = (
    "Endpoint=sb://aos-test.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
    f"SharedAccessKey={KEY}"
)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def settings_with(**values: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **values})


def event(event_id: str = "evt-1", **changes: Any) -> EventEnvelope:
    return EventEnvelope(
        id=event_id,
        source="/agents/ceo",
        type="aos.test",
        subject="goals",
        correlationid="corr-1",
        traceparent=TRACEPARENT,
        data={"n": 1},
        **changes,
    )


# ------------------------------------------------------------------------------ configuration


def test_connection_string() -> None:
    connection = ServiceBusConnection.from_settings(
        settings_with(ServiceBusConnection=CONNECTION_STRING)
    )

    assert connection.connection_string == CONNECTION_STRING
    assert connection.fully_qualified_namespace == "aos-test.servicebus.windows.net"
    assert KEY not in repr(connection)


def test_identity_based_connection_with_managed_identity() -> None:
    connection = ServiceBusConnection.from_settings(
        settings_with(
            ServiceBusConnection__fullyQualifiedNamespace="aos-test.servicebus.windows.net",
            ServiceBusConnection__credential="managedidentity",
            ServiceBusConnection__clientId="1111-2222",
        )
    )

    assert connection.connection_string is None
    assert connection.fully_qualified_namespace == "aos-test.servicebus.windows.net"
    assert connection.credential == "managedidentity"
    assert connection.client_id == "1111-2222"


def test_identity_based_connection_defaults_to_default_credential() -> None:
    connection = ServiceBusConnection.from_settings(
        settings_with(
            ServiceBusConnection__fullyQualifiedNamespace="sb://aos-test.servicebus.windows.net/"
        )
    )

    assert connection.fully_qualified_namespace == "aos-test.servicebus.windows.net"
    assert connection.credential == "default"
    assert connection.client_id is None


def test_other_connection_name() -> None:
    settings = settings_with(AosBus=CONNECTION_STRING)
    renamed = settings_with(AosBus=CONNECTION_STRING, AOS_SERVICE_BUS_CONNECTION="AosBus")

    assert ServiceBusConnection.from_settings(settings, "AosBus").setting == "AosBus"
    assert not ServiceBusConnection.is_configured(settings)
    assert ServiceBusConnection.is_configured(renamed)
    assert ServiceBusConnection.from_settings(renamed).connection_string == CONNECTION_STRING


def test_missing_connection_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as raised:
        ServiceBusConnection.from_settings(settings_with())

    assert raised.value.field == "ServiceBusConnection"
    assert "ServiceBusConnection__fullyQualifiedNamespace" in str(raised.value)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"ServiceBusConnection": "not a connection string"}, "ServiceBusConnection"),
        ({"ServiceBusConnection": "SharedAccessKey=abc"}, "ServiceBusConnection"),
        (
            {
                "ServiceBusConnection__fullyQualifiedNamespace": "x.servicebus.windows.net",
                "ServiceBusConnection__credential": "password",
            },
            "ServiceBusConnection__credential",
        ),
    ],
)
def test_malformed_connection_names_the_setting(values: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ServiceBusConnection.from_settings(settings_with(**values))

    assert raised.value.field == field
    assert field in str(raised.value)


async def test_factory_picks_service_bus_when_configured(clients: StorageClients) -> None:
    for values in (
        {"ServiceBusConnection": CONNECTION_STRING},
        {"ServiceBusConnection__fullyQualifiedNamespace": "aos-test.servicebus.windows.net"},
    ):
        async with publisher_from_settings(settings_with(**values), clients) as publisher:
            assert isinstance(publisher, ServiceBusPublisher)
            assert isinstance(publisher, Publisher)


async def test_factory_falls_back_to_the_local_broker(
    settings: Settings, clients: StorageClients
) -> None:
    async with publisher_from_settings(settings, clients, lock_duration=5) as publisher:
        assert isinstance(publisher, LocalBrokerPublisher)
        assert isinstance(publisher, Publisher)
        assert publisher.broker.prefix == settings.storage_prefix
        assert publisher.broker.lock_duration == 5
        assert set(publisher.broker.topology) == {"aos-events", "aos-agent-messages"}


def test_topics_come_from_settings() -> None:
    topics = Topics.from_settings(
        settings_with(
            AOS_EVENTS_TOPIC="ev", AOS_MESSAGES_TOPIC="msg", AOS_SUBSCRIPTION="aos, audit"
        )
    )

    assert topics.topology() == {"ev": ("aos", "audit"), "msg": ("aos", "audit")}
    assert Topics.from_settings(settings_with()) == Topics()
    with pytest.raises(ConfigurationError) as raised:
        Topics.from_settings(settings_with(AOS_EVENTS_TOPIC="same", AOS_MESSAGES_TOPIC="same"))
    assert raised.value.field == "AOS_MESSAGES_TOPIC"


# ------------------------------------------------------------------------------ Service Bus


def test_service_bus_messages_are_built_from_envelopes() -> None:
    publisher = ServiceBusPublisher(
        ServiceBusConnection.from_settings(settings_with(ServiceBusConnection=CONNECTION_STRING))
    )

    [message] = publisher.messages([event()])

    assert isinstance(message, ServiceBusMessage)
    assert message.message_id == "evt-1"
    assert message.correlation_id == "corr-1"
    assert message.subject == "goals"
    assert message.content_type == CLOUDEVENTS_JSON
    assert message.application_properties[b"traceparent"] == TRACEPARENT
    assert message.application_properties[b"Diagnostic-Id"] == TRACEPARENT
    assert json.loads(b"".join(message.body))["data"] == {"n": 1}
    assert from_message(message) == event()


async def test_clients_are_built_without_connecting() -> None:
    by_string = ServiceBusPublisher.from_settings(
        settings_with(ServiceBusConnection=CONNECTION_STRING)
    )
    by_identity = ServiceBusPublisher.from_settings(
        settings_with(
            ServiceBusConnection__fullyQualifiedNamespace="aos-test.servicebus.windows.net",
            ServiceBusConnection__credential="managedidentity",
        )
    )

    for publisher in (by_string, by_identity):
        assert publisher.client().fully_qualified_namespace == "aos-test.servicebus.windows.net"
        await publisher.close()


class FakeSender:
    """Stands in for a topic sender: real batches, no network."""

    def __init__(self, max_size: int, fail: bool = False) -> None:
        self.max_size = max_size
        self.fail = fail
        self.sent: list[list[str]] = []

    async def create_message_batch(self) -> ServiceBusMessageBatch:
        return ServiceBusMessageBatch(max_size_in_bytes=self.max_size)

    async def send_messages(self, batch: ServiceBusMessageBatch) -> None:
        if self.fail:
            raise ServiceBusConnectionError(message="connection refused")
        self.sent.append([m.message_id for m in batch._messages])

    async def close(self) -> None:
        pass


def publisher_with(sender: FakeSender) -> ServiceBusPublisher:
    publisher = ServiceBusPublisher.from_settings(
        settings_with(ServiceBusConnection=CONNECTION_STRING)
    )
    publisher._senders["aos-events"] = sender  # type: ignore[assignment]
    return publisher


async def test_sends_are_batched_within_the_size_limit() -> None:
    sender = FakeSender(max_size=2000)
    events = [event(f"evt-{i}") for i in range(5)]

    await publisher_with(sender).publish("aos-events", events)

    assert [m for batch in sender.sent for m in batch] == [e.id for e in events]
    assert len(sender.sent) > 1


async def test_failure_names_the_topic() -> None:
    with pytest.raises(PublishError, match="topic 'aos-events'") as raised:
        await publisher_with(FakeSender(max_size=100_000, fail=True)).publish(
            "aos-events", [event()]
        )

    assert raised.value.topic == "aos-events"
    assert "connection refused" in str(raised.value)


async def test_event_too_large_for_a_message_names_the_event_and_topic() -> None:
    with pytest.raises(PublishError, match=r"evt-big.*'aos-events'"):
        await publisher_with(FakeSender(max_size=300)).publish("aos-events", [event("evt-big")])


# ------------------------------------------------------------------------------ send_event


async def test_send_event_goes_to_the_local_broker(
    settings: Settings, clients: StorageClients
) -> None:
    sent = await send_event(
        settings,
        "aos-agent-messages",
        {"id": "m-1", "source": "/agents/ceo", "type": "aos.message", "data": {"to": "cfo"}},
    )

    broker = LocalBroker.from_settings(settings, clients)
    receiver = broker.get_subscription_receiver("aos-agent-messages", "aos")
    [message] = await receiver.receive_messages(max_wait_time=5)
    assert from_message(message) == sent
    assert sent.data == {"to": "cfo"}
    await broker.delete_queues()


async def test_send_event_rejects_an_invalid_event(settings: Settings) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await send_event(settings, "aos-events", {"id": "x", "type": "t"})

    assert raised.value.field == "source"
