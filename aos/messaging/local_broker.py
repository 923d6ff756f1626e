"""A local broker with Service Bus topic semantics, on Azure Storage Queues (Azurite locally).

For development and tests, where no Service Bus namespace is at hand:

- a *topology* names each topic's subscriptions; sending to a topic puts a copy of the message
  on every subscription's queue (one storage queue per subscription, plus one for its
  dead-letter sub-queue; names begin with the storage prefix so installations stay apart);
- receiving is peek-lock: a received message is invisible to other receivers for the lock
  duration (the queue's visibility timeout); `complete_message` deletes it, `abandon_message`
  makes it visible again, `renew_message_lock` extends the lock;
- `delivery_count` is the queue's dequeue count (1 on the first delivery, as the Functions host
  reports it); a message received more than `max_delivery_count` times (default 10, as Service
  Bus) moves to the dead-letter queue with ``DeadLetterReason`` = ``MaxDeliveryCountExceeded``;
  `dead_letter_message` moves one explicitly, with a reason and description;
- a receiver on ``sub_queue="deadletter"`` reads the dead-letter queue.

The receiver mirrors azure-servicebus's ``ServiceBusReceiver`` (``receive_messages``,
``peek_messages``, ``complete_message``, ``abandon_message``, ``dead_letter_message``,
``renew_message_lock``) and its messages mirror ``ServiceBusReceivedMessage`` and the Functions
trigger's ``ServiceBusMessage``, so a host loop works against either broker, and
`aos.messaging.envelope.from_message` reads both.

Each message is stored as one JSON document (body as text, or base64 when not UTF-8, and as a
blob when too large for a queue message). Differences from Service Bus: fan-out is not atomic
(a failure part-way leaves the copies already written), ordering is not guaranteed, and a
message completed after its lock expired is still deleted if no one received it meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aos.errors import InvalidInputError, NotFoundError
from aos.messaging.envelope import WireMessage, as_wire_message
from aos.messaging.errors import MessageLockLostError
from aos.messaging.topics import Topics
from aos.settings import Settings
from aos.storage.clients import StorageClients

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

DEAD_LETTER = "deadletter"
"""`sub_queue` value of a dead-letter receiver (as azure.servicebus.ServiceBusSubQueue)."""

DEFAULT_LOCK_DURATION = 60.0
DEFAULT_MAX_DELIVERY_COUNT = 10
MAX_BATCH = 32  # storage queues return at most 32 messages per call
MAX_QUEUE_MESSAGE_CHARS = 60_000  # storage queue messages hold 64 KiB; leave room for XML
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600

DEAD_LETTER_REASON = "DeadLetterReason"
DEAD_LETTER_ERROR_DESCRIPTION = "DeadLetterErrorDescription"
MAX_DELIVERY_COUNT_EXCEEDED = "MaxDeliveryCountExceeded"
MAX_DEAD_LETTER_TEXT = 4096

_NOT_NAME = re.compile(r"[^a-z0-9]+")


def queue_name(prefix: str, topic: str, subscription: str, *, dead_letter: bool = False) -> str:
    """The storage queue of a subscription (or of its dead-letter queue).

    Storage queue names are 3-63 lowercase letters, digits and single inner hyphens; topic and
    subscription names are freer, so the readable part is a cleaned, shortened form and a hash
    of the exact names keeps different subscriptions apart.
    """
    digest = hashlib.sha256(f"{topic}\n{subscription}".encode()).hexdigest()[:8]
    parts = (_NOT_NAME.sub("-", name.lower()).strip("-") for name in (prefix, topic, subscription))
    head = "-".join(part for part in parts if part)[: 63 - len("-12345678-dlq")].strip("-")
    name = f"{head}-{digest}"
    return f"{name}-dlq" if dead_letter else name


@dataclass(eq=False)
class ReceivedMessage:
    """A message from the local broker, shaped like azure-servicebus's received message and
    the Functions trigger's ``ServiceBusMessage``."""

    body: bytes
    message_id: str
    content_type: str | None
    correlation_id: str | None
    subject: str | None
    application_properties: dict[str, Any]
    delivery_count: int
    enqueued_time_utc: datetime | None
    locked_until_utc: datetime | None = None
    scheduled_enqueue_time_utc: datetime | None = None
    _queue: str = field(default="", repr=False)
    _queue_message_id: str = field(default="", repr=False)
    _pop_receipt: str | None = field(default=None, repr=False)
    _record: dict[str, Any] = field(default_factory=dict, repr=False)
    _settled: str | None = field(default=None, repr=False)

    def get_body(self) -> bytes:
        return self.body

    @property
    def label(self) -> str | None:
        return self.subject

    @property
    def user_properties(self) -> dict[str, Any]:
        return self.application_properties

    @property
    def lock_token(self) -> str | None:
        return self._pop_receipt

    @property
    def dead_letter_reason(self) -> str | None:
        return self.application_properties.get(DEAD_LETTER_REASON)

    @property
    def dead_letter_error_description(self) -> str | None:
        return self.application_properties.get(DEAD_LETTER_ERROR_DESCRIPTION)


class LocalBroker:
    """Topics and subscriptions on storage queues. See the module docstring."""

    def __init__(
        self,
        clients: StorageClients,
        topology: Mapping[str, Iterable[str]],
        *,
        prefix: str,
        lock_duration: float = DEFAULT_LOCK_DURATION,
        max_delivery_count: int = DEFAULT_MAX_DELIVERY_COUNT,
    ) -> None:
        if max_delivery_count < 1:
            raise InvalidInputError(
                "max_delivery_count must be at least 1", field="max_delivery_count"
            )
        self.clients = clients
        self.topology = {topic: tuple(subs) for topic, subs in topology.items()}
        self.prefix = prefix
        self.lock_duration = _lock_seconds(lock_duration)
        self.max_delivery_count = max_delivery_count
        self._created: set[str] = set()
        self._create_lock = asyncio.Lock()
        self._bodies_ready = False

    @classmethod
    def from_settings(
        cls, settings: Settings, clients: StorageClients, **options: Any
    ) -> LocalBroker:
        """The topology of `Topics.from_settings`; `options` as the constructor's."""
        topology = Topics.from_settings(settings).topology()
        return cls(clients, topology, prefix=settings.storage_prefix, **options)

    # ------------------------------------------------------------------------ entities

    def queue_name(self, topic: str, subscription: str, *, dead_letter: bool = False) -> str:
        return queue_name(self.prefix, topic, subscription, dead_letter=dead_letter)

    @property
    def bodies_container(self) -> str:
        return f"{self.prefix}-broker"

    def subscriptions(self, topic: str) -> tuple[str, ...]:
        try:
            return self.topology[topic]
        except KeyError:
            known = ", ".join(sorted(self.topology)) or "none"
            raise NotFoundError(
                f"topic '{topic}' does not exist in the local broker (topics: {known})",
                field="topic",
            ) from None

    async def create_queues(self) -> None:
        """Create every subscription's queues now (they are otherwise made on first use)."""
        for topic, subscriptions in self.topology.items():
            for subscription in subscriptions:
                for dead_letter in (False, True):
                    await self._queue(self.queue_name(topic, subscription, dead_letter=dead_letter))

    async def delete_queues(self) -> None:
        """Remove every queue of the topology, and the large-body container."""
        from azure.core.exceptions import ResourceNotFoundError

        for topic, subscriptions in self.topology.items():
            for subscription in subscriptions:
                for dead_letter in (False, True):
                    name = self.queue_name(topic, subscription, dead_letter=dead_letter)
                    with contextlib.suppress(ResourceNotFoundError):
                        await self.clients.queues().delete_queue(name)
                    self._created.discard(name)
        with contextlib.suppress(ResourceNotFoundError):
            await self.clients.blobs().delete_container(self.bodies_container)
        self._bodies_ready = False

    async def _queue(self, name: str) -> QueueClient:
        queue = self.clients.queues().get_queue_client(name)
        if name not in self._created:
            from azure.core.exceptions import ResourceExistsError

            async with self._create_lock:
                if name not in self._created:
                    with contextlib.suppress(ResourceExistsError):
                        await queue.create_queue()
                    self._created.add(name)
        return queue

    # ------------------------------------------------------------------------ sending

    async def send_messages(
        self,
        topic: str,
        messages: WireMessage | Any | Sequence[WireMessage | Any],
        *,
        scheduled_enqueue_time_utc: datetime | None = None,
    ) -> list[str]:
        """Put a copy of each message on every subscription of `topic`; returns the message
        ids (a message without one gets a new id, as Service Bus gives it).

        `messages` are `WireMessage`s or Service Bus-shaped messages (e.g. azure-servicebus's
        ``ServiceBusMessage``). A scheduled message becomes receivable at that time.
        """
        batch = [messages] if not isinstance(messages, Sequence) else list(messages)
        subscriptions = self.subscriptions(topic)
        delay = _delay_seconds(scheduled_enqueue_time_utc)
        now = datetime.now(UTC)
        records = [_record(as_wire_message(m), now, scheduled_enqueue_time_utc) for m in batch]

        async def put(subscription: str) -> None:
            # In order within a subscription (storage queues are best-effort FIFO, like an
            # unpartitioned Service Bus entity without sessions); subscriptions in parallel.
            name = self.queue_name(topic, subscription)
            for record in records:
                await self._put(name, record, delay)

        await asyncio.gather(*(put(subscription) for subscription in subscriptions))
        return [record["message_id"] for record in records]

    async def _put(self, queue_name: str, record: dict[str, Any], delay: int = 0) -> QueueMessage:
        record = await self._fit(queue_name, record)
        queue = await self._queue(queue_name)
        return await queue.send_message(
            _dumps(record), visibility_timeout=delay or None, time_to_live=-1
        )

    async def _fit(self, queue_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record, with its body moved to a blob when it is too large for a queue."""
        if _size(record) <= MAX_QUEUE_MESSAGE_CHARS:
            return record
        if "body_blob" in record:
            raise InvalidInputError(
                f"message {record['message_id']}: its application properties and headers take "
                f"more than {MAX_QUEUE_MESSAGE_CHARS} characters",
                field="application_properties",
            )
        body = record.get("body")
        raw = body.encode() if body is not None else base64.b64decode(record["body_base64"])
        blob_name = f"{queue_name}/{uuid.uuid4().hex}"
        container = await self._bodies()
        await container.upload_blob(blob_name, raw, overwrite=True)
        fitted = {k: v for k, v in record.items() if k not in ("body", "body_base64")}
        fitted["body_blob"] = blob_name
        if _size(fitted) > MAX_QUEUE_MESSAGE_CHARS:
            with contextlib.suppress(Exception):
                await container.delete_blob(blob_name)
            raise InvalidInputError(
                f"message {record['message_id']}: its application properties and headers take "
                f"more than {MAX_QUEUE_MESSAGE_CHARS} characters",
                field="application_properties",
            )
        return fitted

    async def _bodies(self) -> Any:
        container = self.clients.blobs().get_container_client(self.bodies_container)
        if not self._bodies_ready:
            from azure.core.exceptions import ResourceExistsError

            with contextlib.suppress(ResourceExistsError):
                await container.create_container()
            self._bodies_ready = True
        return container

    async def _load_body(self, record: dict[str, Any]) -> bytes:
        if "body_blob" in record:
            container = await self._bodies()
            download = await container.download_blob(record["body_blob"])
            return await download.readall()
        if "body_base64" in record:
            return base64.b64decode(record["body_base64"])
        return str(record.get("body") or "").encode()

    async def _discard_body(self, record: dict[str, Any]) -> None:
        if "body_blob" in record:
            from azure.core.exceptions import ResourceNotFoundError

            container = await self._bodies()
            with contextlib.suppress(ResourceNotFoundError):
                await container.delete_blob(record["body_blob"])

    # ------------------------------------------------------------------------ receiving

    def get_subscription_receiver(
        self,
        topic: str,
        subscription: str,
        *,
        sub_queue: str | None = None,
        lock_duration: float | None = None,
        max_wait_time: float | None = None,
    ) -> LocalReceiver:
        """A peek-lock receiver on a subscription, or on its dead-letter queue when
        `sub_queue` is ``"deadletter"`` (``ServiceBusSubQueue.DEAD_LETTER`` works too)."""
        if subscription not in self.subscriptions(topic):
            known = ", ".join(self.topology[topic]) or "none"
            raise NotFoundError(
                f"subscription '{subscription}' does not exist on topic '{topic}' "
                f"(subscriptions: {known})",
                field="subscription",
            )
        dead_letter = False
        if sub_queue is not None:
            kind = str(getattr(sub_queue, "value", sub_queue)).lower()
            if kind != DEAD_LETTER:
                raise InvalidInputError(
                    f"sub_queue must be '{DEAD_LETTER}' or None, not '{sub_queue}'",
                    field="sub_queue",
                )
            dead_letter = True
        return LocalReceiver(
            self,
            topic,
            subscription,
            dead_letter=dead_letter,
            lock_duration=self.lock_duration if lock_duration is None else lock_duration,
            max_wait_time=max_wait_time,
        )


class LocalReceiver:
    """Receives and settles the messages of one subscription (or its dead-letter queue).

    Typical host loop::

        async with broker.get_subscription_receiver(topic, "aos", lock_duration=60) as receiver:
            for message in await receiver.receive_messages(max_message_count=10):
                try:
                    await handle(from_message(message))
                except Exception:
                    await receiver.abandon_message(message)
                else:
                    await receiver.complete_message(message)

    (`aos.messaging.delivery.process_messages` is that loop, with dead-lettering of malformed
    messages.)
    """

    def __init__(
        self,
        broker: LocalBroker,
        topic: str,
        subscription: str,
        *,
        dead_letter: bool = False,
        lock_duration: float = DEFAULT_LOCK_DURATION,
        max_wait_time: float | None = None,
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.subscription = subscription
        self.dead_letter = dead_letter
        self.lock_duration = _lock_seconds(lock_duration)
        self.max_wait_time = max_wait_time
        self.queue_name = broker.queue_name(topic, subscription, dead_letter=dead_letter)
        self.dead_letter_queue_name = broker.queue_name(topic, subscription, dead_letter=True)
        self.entity = f"{topic}/subscriptions/{subscription}" + (
            "/$deadletterqueue" if dead_letter else ""
        )

    async def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[ReceivedMessage]:
        """Lock and return up to `max_message_count` messages (at most 32).

        Waits up to `max_wait_time` seconds (default: the receiver's, else no wait) for at least
        one message. Messages past the maximum delivery count are dead-lettered, not returned.
        """
        count = max(1, min(max_message_count or 1, MAX_BATCH))
        wait = self.max_wait_time if max_wait_time is None else max_wait_time
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait or 0)
        pause = 0.05
        queue = await self.broker._queue(self.queue_name)
        while True:
            received: list[ReceivedMessage] = []
            expired = 0
            async for item in queue.receive_messages(
                messages_per_page=count, max_messages=count, visibility_timeout=self.lock_duration
            ):
                if not self.dead_letter and item.dequeue_count > self.broker.max_delivery_count:
                    await self._expire(item)
                    expired += 1
                else:
                    received.append(await self._message(item, locked=True))
            if received:
                return received
            if expired:
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 1.0)

    async def peek_messages(self, max_message_count: int = 1) -> list[ReceivedMessage]:
        """Up to `max_message_count` visible messages (at most 32), without locking them."""
        queue = await self.broker._queue(self.queue_name)
        items = await queue.peek_messages(max_messages=max(1, min(max_message_count, MAX_BATCH)))
        return [await self._message(item, locked=False) for item in items]

    async def complete_message(self, message: ReceivedMessage) -> None:
        """Remove the message: it was handled."""
        receipt = self._check(message, "complete")
        queue = await self.broker._queue(self.queue_name)
        with self._lock_errors(message):
            await queue.delete_message(message._queue_message_id, receipt)
        message._settled = "completed"
        await self.broker._discard_body(message._record)

    async def abandon_message(self, message: ReceivedMessage) -> None:
        """Release the lock: the message is redelivered (its delivery count goes up)."""
        receipt = self._check(message, "abandon")
        queue = await self.broker._queue(self.queue_name)
        with self._lock_errors(message):
            await queue.update_message(message._queue_message_id, receipt, visibility_timeout=0)
        message._settled = "abandoned"
        message.locked_until_utc = None

    async def renew_message_lock(self, message: ReceivedMessage) -> datetime:
        """Extend the lock by the receiver's lock duration; returns the new expiry."""
        receipt = self._check(message, "renew the lock of")
        queue = await self.broker._queue(self.queue_name)
        with self._lock_errors(message):
            updated = await queue.update_message(
                message._queue_message_id, receipt, visibility_timeout=self.lock_duration
            )
        message._pop_receipt = updated.pop_receipt
        message.locked_until_utc = updated.next_visible_on
        return updated.next_visible_on or datetime.now(UTC) + timedelta(seconds=self.lock_duration)

    async def dead_letter_message(
        self,
        message: ReceivedMessage,
        reason: str | None = None,
        error_description: str | None = None,
    ) -> None:
        """Move the message to the subscription's dead-letter queue, with why."""
        if self.dead_letter:
            raise InvalidInputError(
                f"message {message.message_id} is already dead-lettered ({self.entity})",
                field="message",
            )
        receipt = self._check(message, "dead-letter")
        record = _dead_lettered(message._record, reason, error_description)
        copy = await self.broker._put(self.dead_letter_queue_name, record)
        queue = await self.broker._queue(self.queue_name)
        try:
            with self._lock_errors(message):
                await queue.delete_message(message._queue_message_id, receipt)
        except MessageLockLostError:
            # Someone else holds the message now: take back the copy, so it exists once.
            dead_letters = await self.broker._queue(self.dead_letter_queue_name)
            with contextlib.suppress(Exception):
                await dead_letters.delete_message(copy.id, copy.pop_receipt)
            raise
        message._settled = "dead-lettered"

    async def close(self) -> None:
        """Nothing to release (the broker's clients are shared); here for Service Bus parity."""

    async def __aenter__(self) -> LocalReceiver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------ internals

    async def _expire(self, item: QueueMessage) -> None:
        """Dead-letter a message received more often than the maximum delivery count."""
        limit = self.broker.max_delivery_count
        record = _dead_lettered(
            _parse(item.content, item.id),
            MAX_DELIVERY_COUNT_EXCEEDED,
            f"Message could not be consumed after {limit} delivery attempts.",
        )
        await self.broker._put(self.dead_letter_queue_name, record)
        queue = await self.broker._queue(self.queue_name)
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            await queue.delete_message(item.id, item.pop_receipt)

    async def _message(self, item: QueueMessage, *, locked: bool) -> ReceivedMessage:
        record = _parse(item.content, item.id)
        return ReceivedMessage(
            body=await self.broker._load_body(record),
            message_id=record["message_id"],
            content_type=record.get("content_type"),
            correlation_id=record.get("correlation_id"),
            subject=record.get("subject"),
            application_properties=dict(record.get("application_properties") or {}),
            delivery_count=item.dequeue_count or 0,
            enqueued_time_utc=_parse_time(record.get("enqueued_time_utc")) or item.inserted_on,
            locked_until_utc=item.next_visible_on if locked else None,
            scheduled_enqueue_time_utc=_parse_time(record.get("scheduled_enqueue_time_utc")),
            _queue=self.queue_name,
            _queue_message_id=item.id,
            _pop_receipt=item.pop_receipt if locked else None,
            _record=record,
        )

    def _check(self, message: ReceivedMessage, action: str) -> str:
        if message._queue != self.queue_name:
            raise InvalidInputError(
                f"message {message.message_id} was not received from {self.entity}",
                field="message",
            )
        if message._settled:
            raise InvalidInputError(
                f"cannot {action} message {message.message_id}: it was already {message._settled}",
                field="message",
            )
        if message._pop_receipt is None:
            raise InvalidInputError(
                f"cannot {action} message {message.message_id}: it was peeked, not received "
                "with a lock",
                field="message",
            )
        return message._pop_receipt

    @contextlib.contextmanager
    def _lock_errors(self, message: ReceivedMessage) -> Iterator[None]:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        lost = MessageLockLostError(
            f"the lock on message {message.message_id} in {self.entity} was lost: it expired "
            "and the message was received again, or it was already settled",
            field="message",
        )
        try:
            yield
        except ResourceNotFoundError:
            raise lost from None
        except HttpResponseError as exc:
            code = getattr(exc.error_code, "value", exc.error_code)
            if code in ("PopReceiptMismatch", "MessageNotFound"):
                raise lost from None
            raise


# ---------------------------------------------------------------------------- records


def _record(wire: WireMessage, now: datetime, scheduled: datetime | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": 1,
        "message_id": wire.message_id or uuid.uuid4().hex,
        "content_type": wire.content_type,
        "correlation_id": wire.correlation_id,
        "subject": wire.subject,
        "application_properties": _json_properties(wire),
        "enqueued_time_utc": now.isoformat(),
    }
    if scheduled is not None:
        record["scheduled_enqueue_time_utc"] = scheduled.astimezone(UTC).isoformat()
    try:
        record["body"] = wire.body.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(wire.body).decode()
    return record


def _json_properties(wire: WireMessage) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for key, value in wire.application_properties.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif value is not None and not isinstance(value, str | int | float | bool):
            raise InvalidInputError(
                f"message {wire.message_id}: application property '{name}' must be a string, "
                f"number, bool or timestamp, not {type(value).__name__}",
                field=name,
            )
        properties[name] = value
    return properties


def _dead_lettered(
    record: dict[str, Any], reason: str | None, description: str | None
) -> dict[str, Any]:
    copy = dict(record)
    properties = dict(record.get("application_properties") or {})
    if reason is not None:
        properties[DEAD_LETTER_REASON] = reason[:MAX_DEAD_LETTER_TEXT]
    if description is not None:
        properties[DEAD_LETTER_ERROR_DESCRIPTION] = description[:MAX_DEAD_LETTER_TEXT]
    copy["application_properties"] = properties
    return copy


def _parse(content: Any, queue_message_id: str) -> dict[str, Any]:
    """The stored record; content someone put on the queue by other means becomes the body."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content or "")
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or record.get("v") != 1:
        return {"v": 1, "message_id": queue_message_id, "body": text}
    record.setdefault("message_id", queue_message_id)
    return record


def _dumps(record: dict[str, Any]) -> str:
    # ASCII only: every character is then one byte, and nothing can upset the XML envelope.
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True)


def _size(record: dict[str, Any]) -> int:
    text = _dumps(record)
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _lock_seconds(value: float) -> int:
    seconds = math.ceil(value)
    if not 1 <= seconds <= MAX_VISIBILITY_SECONDS:
        raise InvalidInputError(
            f"lock_duration must be between 1 second and 7 days, not {value}",
            field="lock_duration",
        )
    return seconds


def _delay_seconds(when: datetime | None) -> int:
    if when is None:
        return 0
    if when.utcoffset() is None:
        raise InvalidInputError(
            "scheduled_enqueue_time_utc must include a time zone offset",
            field="scheduled_enqueue_time_utc",
        )
    seconds = math.ceil((when - datetime.now(UTC)).total_seconds())
    if seconds > MAX_VISIBILITY_SECONDS:
        raise InvalidInputError(
            "the local broker schedules messages at most 7 days ahead",
            field="scheduled_enqueue_time_utc",
        )
    return max(seconds, 0)
