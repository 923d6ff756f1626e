"""`EventEnvelope` <-> Service Bus message, as the CloudEvents AMQP protocol binding maps them.

Outgoing events use the *structured* content mode: the body is the CloudEvent in the JSON event
format, ``content_type`` is ``application/cloudevents+json; charset=utf-8``. The message also
carries what Service Bus itself understands: ``message_id`` = event id (so duplicate detection
drops a re-sent event), ``correlation_id`` = ``correlationid``, ``subject`` = the event subject,
the application properties ``traceparent`` and ``Diagnostic-Id`` (as the Azure SDK sets them) and,
as the binding allows for structured mode, the context attributes as ``cloudEvents:*``
application properties, so subscription rules can filter on e.g. ``[cloudEvents:type]``.

Incoming messages may be in either mode. As the binding says, a ``content_type`` starting with
``application/cloudevents`` means structured mode; otherwise ``cloudEvents:<attribute>``
application properties mean *binary* mode (body = the event data, ``content_type`` =
``datacontenttype``); a body that is a JSON object with ``specversion`` is read as structured
mode too (a sender that forgot the content type). Anything else raises `MalformedMessageError`.

`from_message` reads any object shaped like a Service Bus message: the Functions trigger's
``func.ServiceBusMessage`` (``get_body()``, ``application_properties``/``user_properties``,
``subject``/``label``), azure-servicebus's own messages (``body``, bytes-keyed properties), the
local broker's `ReceivedMessage`, or a `WireMessage`. `from_parts` takes the pieces directly.
This module imports neither azure.functions nor (until `to_service_bus_message`) azure-servicebus.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from aos.agents.models import EventEnvelope
from aos.messaging.errors import MalformedMessageError

if TYPE_CHECKING:
    from azure.servicebus import ServiceBusMessage

CLOUDEVENTS_JSON = "application/cloudevents+json; charset=utf-8"
"""The content type of a structured-mode message in the JSON event format."""

CE_PREFIX = "cloudEvents:"
"""Prefix of CloudEvents attributes in AMQP application properties (binary mode)."""

# Earlier drafts of the AMQP binding (and some JMS-bound SDKs) used an underscore.
_CE_PREFIXES = (CE_PREFIX.lower(), "cloudevents_")

TRACEPARENT = "traceparent"
DIAGNOSTIC_ID = "Diagnostic-Id"

_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_ATTRIBUTE_IN_MESSAGE = re.compile(r"attribute '([^']+)'")

Mode = Literal["structured", "binary"]


@dataclass(frozen=True)
class WireMessage:
    """A broker-neutral Service Bus message: body bytes plus the properties AOS uses."""

    body: bytes
    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    subject: str | None = None
    application_properties: Mapping[str, Any] = field(default_factory=dict)

    def get_body(self) -> bytes:
        return self.body


# ---------------------------------------------------------------------------------- outgoing


def to_message(event: EventEnvelope, *, mode: Mode = "structured") -> WireMessage:
    """The message carrying `event`: structured mode (the default) or binary mode."""
    attributes = _attributes(event)
    data = attributes.pop("data", None)
    # Context attributes as application properties: required in binary mode, allowed in
    # structured mode (where they let subscription rules filter without reading the body).
    properties: dict[str, Any] = {
        f"{CE_PREFIX}{name}": value
        for name, value in attributes.items()
        if name != "datacontenttype"
    }
    if mode == "structured":
        if data is not None:
            attributes["data"] = data
        body = json.dumps(attributes, separators=(",", ":"), ensure_ascii=False).encode()
        content_type: str | None = CLOUDEVENTS_JSON
    elif mode == "binary":
        content_type = event.datacontenttype
        body = _encode_data(event.data, content_type)
    else:
        raise ValueError(f"mode must be 'structured' or 'binary', not {mode!r}")
    if event.traceparent:
        properties[TRACEPARENT] = event.traceparent
        properties[DIAGNOSTIC_ID] = event.traceparent
    return WireMessage(
        body=body,
        content_type=content_type,
        message_id=event.id,
        correlation_id=event.correlationid,
        subject=event.subject,
        application_properties=properties,
    )


def to_service_bus_message(event: EventEnvelope, *, mode: Mode = "structured") -> ServiceBusMessage:
    """An `azure.servicebus.ServiceBusMessage` carrying `event` (see `to_message`)."""
    from azure.servicebus import ServiceBusMessage

    wire = to_message(event, mode=mode)
    properties: dict[str | bytes, Any] = {}
    for name, value in wire.application_properties.items():
        # The SDK adds its own trace headers under these bytes keys with setdefault(); using
        # the same keys keeps the event's trace context and avoids a duplicate map key.
        key: str | bytes = name.encode() if name in (TRACEPARENT, DIAGNOSTIC_ID) else name
        properties[key] = value
    return ServiceBusMessage(
        wire.body,
        content_type=wire.content_type,
        message_id=wire.message_id,
        correlation_id=wire.correlation_id,
        subject=wire.subject,
        application_properties=properties,
    )


def _attributes(event: EventEnvelope) -> dict[str, Any]:
    """The event's attributes in their JSON-format form, without absent ones."""
    return {
        name: value for name, value in event.model_dump(mode="json").items() if value is not None
    }


def _encode_data(data: Any, content_type: str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, str) and content_type and not _is_json(content_type):
        return data.encode()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode()


# ---------------------------------------------------------------------------------- incoming


def from_message(message: Any) -> EventEnvelope:
    """The event a Service Bus-shaped message carries, in structured or binary mode."""
    wire = as_wire_message(message)
    return from_parts(
        wire.body,
        wire.application_properties,
        content_type=wire.content_type,
        message_id=wire.message_id,
        correlation_id=wire.correlation_id,
        subject=wire.subject,
    )


def as_wire_message(message: Any) -> WireMessage:
    """A `WireMessage` from any Service Bus-shaped message (see the module docstring)."""
    if isinstance(message, WireMessage):
        return message
    return WireMessage(
        body=_body_of(message),
        content_type=_text(getattr(message, "content_type", None)),
        message_id=_text(getattr(message, "message_id", None)),
        correlation_id=_text(getattr(message, "correlation_id", None)),
        subject=_text(getattr(message, "subject", None) or getattr(message, "label", None)),
        application_properties=_normalise(_properties_of(message)),
    )


def from_parts(
    body: bytes | str | None,
    application_properties: Mapping[str | bytes, Any] | None = None,
    *,
    content_type: str | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
    subject: str | None = None,
) -> EventEnvelope:
    """The event in a message given as its parts (see the module docstring for the modes)."""
    raw = body.encode() if isinstance(body, str) else bytes(body or b"")
    props = _normalise(application_properties or {})
    media = (content_type or "").split(";")[0].strip().lower()
    if media.startswith("application/cloudevents-batch"):
        raise MalformedMessageError(
            f"content_type '{content_type}' is a CloudEvents batch; AOS expects one event per "
            "message",
            field="content_type",
        )
    if media.startswith("application/cloudevents"):
        if media not in ("application/cloudevents", "application/cloudevents+json"):
            raise MalformedMessageError(
                f"content_type '{content_type}' names a CloudEvents format AOS cannot read; "
                f"send the JSON format ({CLOUDEVENTS_JSON})",
                field="content_type",
            )
        return _structured(_json_object(raw, required=True), props, correlation_id)
    attributes = _ce_attributes(props)
    if attributes:
        if not content_type:
            # A structured message whose content type got lost still carries its attributes
            # as properties (as AOS sends them): the body, not the properties, is the event.
            document = _json_object(raw, required=False)
            if (
                document
                and "specversion" in document
                and document.get("id") == attributes.get("id")
            ):
                return _structured(document, props, correlation_id)
        return _binary(raw, attributes, props, content_type, correlation_id, subject)
    document = _json_object(raw, required=False)
    if document is not None and "specversion" in document:
        return _structured(document, props, correlation_id)
    raise MalformedMessageError(
        f"message {message_id or '(no message_id)'} is not a CloudEvent: its content_type is "
        f"{content_type or 'not set'} (structured mode needs {CLOUDEVENTS_JSON}), it has no "
        f"{CE_PREFIX}* application properties (binary mode), and its body is not a JSON object "
        "with 'specversion'",
        field="content_type",
    )


def _structured(
    document: dict[str, Any], props: dict[str, Any], correlation_id: str | None
) -> EventEnvelope:
    if "specversion" not in document:
        raise MalformedMessageError(
            "structured CloudEvent: attribute 'specversion' is missing", field="specversion"
        )
    if "data_base64" in document:
        if "data" in document:
            raise MalformedMessageError(
                "structured CloudEvent: 'data' and 'data_base64' must not both be present",
                field="data_base64",
            )
        encoded = document.pop("data_base64")
        try:
            raw = base64.b64decode(encoded, validate=True) if encoded is not None else b""
        except (binascii.Error, TypeError, ValueError):
            raise MalformedMessageError(
                "structured CloudEvent: attribute 'data_base64' is not valid base64",
                field="data_base64",
            ) from None
        document["data"] = _decode_data(raw, document.get("datacontenttype"), "data_base64")
    if document.get("correlationid") is None and correlation_id:
        document["correlationid"] = correlation_id
    if document.get("traceparent") is None and (trace := _traceparent(props)):
        document["traceparent"] = trace
    return _validate(document, "structured CloudEvent", lambda name: name)


def _binary(
    raw: bytes,
    attributes: dict[str, Any],
    props: dict[str, Any],
    content_type: str | None,
    correlation_id: str | None,
    subject: str | None,
) -> EventEnvelope:
    document = dict(attributes)
    if "data" in document:
        raise MalformedMessageError(
            f"binary-mode CloudEvent: '{CE_PREFIX}data' is not an attribute; the data is the body",
            field=f"{CE_PREFIX}data",
        )
    if "specversion" not in document:
        raise MalformedMessageError(
            f"binary-mode CloudEvent: application property '{CE_PREFIX}specversion' is missing",
            field=f"{CE_PREFIX}specversion",
        )
    media_type = content_type or document.get("datacontenttype")
    document["datacontenttype"] = media_type
    document["data"] = _decode_data(raw, media_type, "body")
    if isinstance(document.get("time"), int | float) and not isinstance(document["time"], bool):
        # An AMQP timestamp: milliseconds since the Unix epoch.
        document["time"] = datetime.fromtimestamp(document["time"] / 1000, UTC)
    if document.get("correlationid") is None and correlation_id:
        document["correlationid"] = correlation_id
    if document.get("subject") is None and subject:
        document["subject"] = subject
    if document.get("traceparent") is None and (trace := _traceparent(props)):
        document["traceparent"] = trace

    def where(name: str) -> str:
        if name == "data":
            return "body"
        if name == "datacontenttype":
            return "content_type"
        return f"{CE_PREFIX}{name}"

    return _validate(document, "binary-mode CloudEvent", where)


def _validate(document: dict[str, Any], mode: str, where: Callable[[str], str]) -> EventEnvelope:
    try:
        return EventEnvelope.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else None
        if name is None:
            found = _ATTRIBUTE_IN_MESSAGE.search(error["msg"])
            name = found.group(1) if found else "event"
        place = where(name)
        kind = "application property" if place.startswith(CE_PREFIX) else "attribute"
        if place in ("body", "content_type"):
            kind = "message"
        reason = "is missing" if error["type"] == "missing" else f"is invalid: {error['msg']}"
        raise MalformedMessageError(f"{mode}: {kind} '{place}' {reason}", field=place) from None


def _decode_data(raw: bytes, content_type: str | None, where: str) -> Any:
    """Event data from bytes: JSON for JSON media types (or none), else UTF-8 text."""
    if not raw:
        return None
    if not content_type or _is_json(content_type):
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if content_type:
                raise MalformedMessageError(
                    f"{where} is not valid JSON although the content type is {content_type} "
                    f"({exc})",
                    field=where,
                ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessageError(
            f"{where} holds {len(raw)} bytes of binary data "
            f"({content_type or 'no content type'}); AOS events carry JSON or text data: store "
            "binary payloads in blob storage and send a reference",
            field=where,
        ) from None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _json_object(raw: bytes, *, required: bool) -> dict[str, Any] | None:
    try:
        document = json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if not required:
            return None
        raise MalformedMessageError(
            f"structured CloudEvent: the body is not valid JSON ({exc})", field="body"
        ) from None
    if not isinstance(document, dict):
        if not required:
            return None
        raise MalformedMessageError(
            "structured CloudEvent: the body must be a JSON object holding the event's "
            f"attributes, not {type(document).__name__ if raw else 'empty'}",
            field="body",
        )
    return document


def _ce_attributes(props: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name, value in props.items():
        lowered = name.lower()
        for prefix in _CE_PREFIXES:
            if lowered.startswith(prefix) and len(name) > len(prefix):
                attributes[lowered[len(prefix) :]] = value
    return attributes


def _traceparent(props: Mapping[str, Any]) -> str | None:
    """The W3C traceparent in the trace headers, if one is there and well formed."""
    for name in (TRACEPARENT, DIAGNOSTIC_ID):
        value = props.get(name)
        if isinstance(value, str) and _TRACEPARENT.match(value.strip()):
            return value.strip()
    return None


def _body_of(message: Any) -> bytes:
    get_body = getattr(message, "get_body", None)
    body = get_body() if callable(get_body) else getattr(message, "body", None)
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    try:  # azure-servicebus: a data body is an iterable of byte sections
        return b"".join(bytes(part) for part in body)
    except TypeError:
        raise MalformedMessageError(
            f"the message body must be bytes, not {type(body).__name__}", field="body"
        ) from None


def _properties_of(message: Any) -> dict[str, Any]:
    merged: dict[Any, Any] = {}
    for name in ("user_properties", "application_properties"):
        values = getattr(message, name, None)
        if isinstance(values, Mapping):
            merged.update(values)
    return merged


def _normalise(props: Mapping[str | bytes, Any]) -> dict[str, Any]:
    """Application properties with str keys, and str values where the AMQP layer gave bytes."""
    normal: dict[str, Any] = {}
    for key, value in props.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if isinstance(value, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                value = value.decode("utf-8")
        normal[name] = value
    return normal


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
