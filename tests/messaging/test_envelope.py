"""EventEnvelope <-> Service Bus message, in both CloudEvents content modes and every view of a
received message AOS meets (WireMessage, azure-servicebus, the Functions trigger)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from azure.servicebus import ServiceBusMessage

from aos.agents.models import EventEnvelope
from aos.errors import AOSError
from aos.messaging.envelope import (
    CLOUDEVENTS_JSON,
    WireMessage,
    from_message,
    from_parts,
    to_message,
    to_service_bus_message,
)
from aos.messaging.errors import MalformedMessageError

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def event(**changes: object) -> EventEnvelope:
    values: dict[str, object] = {
        "id": "evt-1",
        "source": "/agents/ceo",
        "type": "aos.goal.updated",
        "subject": "goals/revenue",
        "time": datetime(2026, 1, 31, 9, 0, tzinfo=UTC),
        "data": {"progress": 0.5, "note": "halfway", "missing": None},
        "correlationid": "corr-7",
        "traceparent": TRACEPARENT,
    }
    values.update(changes)
    return EventEnvelope(**values)


def trigger_message(wire: WireMessage, **overrides: object) -> func.ServiceBusMessage:
    """What the Functions Service Bus trigger hands a function for this message."""
    from azure.functions.servicebus import ServiceBusMessage as TriggerMessage

    values: dict[str, object] = {
        "body": wire.body,
        "application_properties": dict(wire.application_properties),
        "user_properties": dict(wire.application_properties),
        "content_type": wire.content_type,
        "correlation_id": wire.correlation_id,
        "message_id": wire.message_id,
        "subject": wire.subject,
        "label": wire.subject,
        "delivery_count": 1,
    }
    values.update(overrides)
    return TriggerMessage(**values)


# ------------------------------------------------------------------------------ outgoing


def test_structured_message_carries_the_event_and_service_bus_properties() -> None:
    message = to_message(event())

    assert message.content_type == CLOUDEVENTS_JSON
    assert message.message_id == "evt-1"
    assert message.correlation_id == "corr-7"
    assert message.subject == "goals/revenue"
    assert message.application_properties["traceparent"] == TRACEPARENT
    assert message.application_properties["Diagnostic-Id"] == TRACEPARENT
    assert message.application_properties["cloudEvents:type"] == "aos.goal.updated"
    body = json.loads(message.body)
    assert body["specversion"] == "1.0"
    assert body["time"] == "2026-01-31T09:00:00Z"
    assert body["data"] == {"progress": 0.5, "note": "halfway", "missing": None}
    assert "data_base64" not in body


def test_event_without_optional_attributes_omits_them() -> None:
    message = to_message(EventEnvelope(id="e", source="/s", type="t"))

    assert message.correlation_id is None
    assert message.subject is None
    assert "traceparent" not in message.application_properties
    assert "Diagnostic-Id" not in message.application_properties
    assert set(json.loads(message.body)) == {
        "specversion",
        "id",
        "source",
        "type",
        "datacontenttype",
    }


def test_service_bus_message_is_built_from_the_envelope() -> None:
    message = to_service_bus_message(event())

    assert isinstance(message, ServiceBusMessage)
    assert message.content_type == CLOUDEVENTS_JSON
    assert message.message_id == "evt-1"
    assert message.correlation_id == "corr-7"
    assert message.subject == "goals/revenue"
    # The SDK's own trace headers use bytes keys; ours match them, so it keeps ours.
    assert message.application_properties[b"traceparent"] == TRACEPARENT
    assert message.application_properties[b"Diagnostic-Id"] == TRACEPARENT
    assert json.loads(b"".join(message.body))["id"] == "evt-1"


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_round_trip(mode: str) -> None:
    original = event(priority=3, urgent=True)

    assert from_message(to_message(original, mode=mode)) == original  # type: ignore[arg-type]


def test_binary_mode_puts_data_in_the_body_and_attributes_in_properties() -> None:
    message = to_message(event(), mode="binary")

    assert message.content_type == "application/json"
    assert json.loads(message.body) == {"progress": 0.5, "note": "halfway", "missing": None}
    props = message.application_properties
    assert props["cloudEvents:specversion"] == "1.0"
    assert props["cloudEvents:id"] == "evt-1"
    assert props["cloudEvents:source"] == "/agents/ceo"
    assert props["cloudEvents:time"] == "2026-01-31T09:00:00Z"
    assert "cloudEvents:datacontenttype" not in props
    assert message.message_id == "evt-1"


def test_binary_mode_text_data_round_trips() -> None:
    original = event(datacontenttype="text/plain", data="plain words")
    message = to_message(original, mode="binary")

    assert message.body == b"plain words"
    assert from_message(message) == original


def test_round_trip_through_the_service_bus_sdk_message() -> None:
    original = event()

    assert from_message(to_service_bus_message(original)) == original
    assert from_message(to_service_bus_message(original, mode="binary")) == original


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_functions_trigger_message_is_read(mode: str) -> None:
    original = event()
    message = trigger_message(to_message(original, mode=mode))  # type: ignore[arg-type]

    assert from_message(message) == original


def test_functions_trigger_with_properties_only_in_user_properties() -> None:
    wire = to_message(event(), mode="binary")
    message = trigger_message(wire, application_properties=None, subject=None)

    assert from_message(message) == event()


def test_binary_mode_as_the_amqp_binding_example_shows_it() -> None:
    received = from_parts(
        b'{"amount": 12}',
        {
            b"cloudEvents:specversion": b"1.0",
            b"cloudEvents:type": b"com.example.someevent",
            # An AMQP timestamp arrives as milliseconds since the epoch.
            b"cloudEvents:time": 1522900584000,
            b"cloudEvents:id": b"1234-1234-1234",
            b"cloudEvents:source": b"/mycontext/subcontext",
        },
        content_type="application/json; charset=utf-8",
        correlation_id="corr-from-service-bus",
        subject="orders/1",
    )

    assert received.id == "1234-1234-1234"
    assert received.time == datetime(2018, 4, 5, 3, 56, 24, tzinfo=UTC)
    assert received.data == {"amount": 12}
    assert received.datacontenttype == "application/json; charset=utf-8"
    assert received.correlationid == "corr-from-service-bus"
    assert received.subject == "orders/1"


def test_legacy_underscore_prefix_is_accepted() -> None:
    received = from_parts(
        b"",
        {
            "cloudEvents_specversion": "1.0",
            "cloudEvents_id": "x",
            "cloudEvents_source": "/s",
            "cloudEvents_type": "t",
        },
    )

    assert (received.id, received.data) == ("x", None)


def test_structured_body_without_content_type_is_still_read() -> None:
    wire = to_message(event())

    assert from_parts(wire.body, wire.application_properties) == event()
    assert from_parts(wire.body) == event()


def test_structured_data_base64_is_decoded() -> None:
    body = {
        "specversion": "1.0",
        "id": "b64",
        "source": "/s",
        "type": "t",
        "datacontenttype": "application/json",
        "data_base64": base64.b64encode(b'{"k": [1, 2]}').decode(),
    }

    received = from_parts(json.dumps(body), content_type=CLOUDEVENTS_JSON)

    assert received.data == {"k": [1, 2]}


def test_trace_context_falls_back_to_the_message_headers() -> None:
    body = json.dumps({"specversion": "1.0", "id": "t", "source": "/s", "type": "t"})

    from_diagnostic_id = from_parts(
        body, {"Diagnostic-Id": OTHER_TRACEPARENT}, content_type=CLOUDEVENTS_JSON
    )
    legacy_id_ignored = from_parts(
        body, {"Diagnostic-Id": "|abc.1."}, content_type=CLOUDEVENTS_JSON
    )
    event_wins = from_parts(
        to_message(event()).body, {"traceparent": OTHER_TRACEPARENT}, content_type=CLOUDEVENTS_JSON
    )

    assert from_diagnostic_id.traceparent == OTHER_TRACEPARENT
    assert legacy_id_ignored.traceparent is None
    assert event_wins.traceparent == TRACEPARENT


# ------------------------------------------------------------------------------ malformed


def binary_props(**changes: object) -> dict[str, object]:
    props: dict[str, object] = {
        "cloudEvents:specversion": "1.0",
        "cloudEvents:id": "b1",
        "cloudEvents:source": "/s",
        "cloudEvents:type": "t",
    }
    for name, value in changes.items():
        key = f"cloudEvents:{name}"
        if value is None:
            props.pop(key)
        else:
            props[key] = value
    return props


@pytest.mark.parametrize(
    ("body", "props", "content_type", "field"),
    [
        (b'{"specversion":"1.0","id":"x","type":"t"}', {}, CLOUDEVENTS_JSON, "source"),
        (b'{"id":"x","source":"/s","type":"t"}', {}, CLOUDEVENTS_JSON, "specversion"),
        (b'{"specversion":"0.3","id":"x","source":"/s","type":"t"}', {}, None, "specversion"),
        (b'{"specversion":"1.0","id":"x","source":"/s","type":"t","Bad":1}', {}, None, "Bad"),
        (
            b'{"specversion":"1.0","id":"x","source":"/s","type":"t","traceparent":"nope"}',
            {},
            CLOUDEVENTS_JSON,
            "traceparent",
        ),
        (b"{not json", {}, CLOUDEVENTS_JSON, "body"),
        (b"[1, 2]", {}, CLOUDEVENTS_JSON, "body"),
        (b"{}", {}, "application/cloudevents+avro", "content_type"),
        (b"[]", {}, "application/cloudevents-batch+json", "content_type"),
        (b"hello", {}, "text/plain", "content_type"),
        (b"{}", binary_props(source=None), "application/json", "cloudEvents:source"),
        (b"{}", binary_props(id=None), "application/json", "cloudEvents:id"),
        (b"{}", binary_props(specversion=None), "application/json", "cloudEvents:specversion"),
        (b"{}", binary_props(time="yesterday"), "application/json", "cloudEvents:time"),
        (b"{oops", binary_props(), "application/json", "body"),
        (b"\xff\xfe\x00", binary_props(), "application/octet-stream", "body"),
    ],
)
def test_malformed_message_names_the_field(
    body: bytes, props: dict[str, object], content_type: str | None, field: str
) -> None:
    with pytest.raises(MalformedMessageError) as raised:
        from_parts(body, props, content_type=content_type)

    assert raised.value.field == field
    assert field in str(raised.value)
    assert isinstance(raised.value, AOSError)
    assert raised.value.code == "malformed_message"
