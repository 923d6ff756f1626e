"""Messaging: events and agent-to-agent messages on Azure Service Bus topics.

- `aos.messaging.envelope`: `EventEnvelope` <-> Service Bus message (CloudEvents AMQP binding:
  structured mode out; structured, binary and the Functions trigger's view in);
- `aos.messaging.publisher`: `Publisher`, `ServiceBusPublisher`, `LocalBrokerPublisher`,
  `publisher_from_settings` and `send_event`;
- `aos.messaging.local_broker`: topics, subscriptions, peek-lock and dead-lettering on storage
  queues (Azurite locally), receiver API as azure-servicebus's;
- `aos.messaging.delivery`: `process_messages`, deliver-then-settle for any such receiver;
- `aos.messaging.topics`: topic and subscription names from settings.

Importing this package imports no Azure SDK.
"""

from aos.messaging.delivery import DeliveryResult, process_messages
from aos.messaging.envelope import (
    CLOUDEVENTS_JSON,
    WireMessage,
    as_wire_message,
    from_message,
    from_parts,
    to_message,
    to_service_bus_message,
)
from aos.messaging.errors import MalformedMessageError, MessageLockLostError, PublishError
from aos.messaging.local_broker import LocalBroker, LocalReceiver, ReceivedMessage
from aos.messaging.publisher import (
    LocalBrokerPublisher,
    Publisher,
    ServiceBusConnection,
    ServiceBusPublisher,
    publisher_from_settings,
    send_event,
)
from aos.messaging.topics import Topics

__all__ = [
    "CLOUDEVENTS_JSON",
    "DeliveryResult",
    "LocalBroker",
    "LocalBrokerPublisher",
    "LocalReceiver",
    "MalformedMessageError",
    "MessageLockLostError",
    "PublishError",
    "Publisher",
    "ReceivedMessage",
    "ServiceBusConnection",
    "ServiceBusPublisher",
    "Topics",
    "WireMessage",
    "as_wire_message",
    "from_message",
    "from_parts",
    "process_messages",
    "publisher_from_settings",
    "send_event",
    "to_message",
    "to_service_bus_message",
]
