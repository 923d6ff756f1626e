"""The local broker against a real Azurite: fan-out, peek-lock, settlement, dead-lettering."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from aos.agents.models import EventEnvelope
from aos.errors import InvalidInputError, NotFoundError
from aos.messaging.delivery import MALFORMED_MESSAGE, process_messages
from aos.messaging.envelope import WireMessage, from_message, to_message
from aos.messaging.errors import MalformedMessageError, MessageLockLostError, PublishError
from aos.messaging.local_broker import (
    MAX_DELIVERY_COUNT_EXCEEDED,
    LocalBroker,
    LocalReceiver,
    ReceivedMessage,
    queue_name,
)
from aos.messaging.publisher import LocalBrokerPublisher
from aos.settings import Settings
from aos.storage.clients import StorageClients

TOPIC = "aos-events"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
POLLS = 60  # bounded waits: at most POLLS x 0.25 s


def event(event_id: str = "evt-1", data: object = None) -> EventEnvelope:
    return EventEnvelope(
        id=event_id,
        source="/tests",
        type="test.event",
        data={"n": 1} if data is None else data,
        correlationid="corr-1",
        traceparent=TRACEPARENT,
    )


@pytest.fixture
async def broker(clients: StorageClients, settings: Settings) -> AsyncIterator[LocalBroker]:
    broker = LocalBroker(
        clients,
        {TOPIC: ("alpha", "beta"), "aos-agent-messages": ("alpha",)},
        prefix=settings.storage_prefix,
        max_delivery_count=3,
    )
    yield broker
    await broker.delete_queues()


async def publish(broker: LocalBroker, *events: EventEnvelope, topic: str = TOPIC) -> None:
    await LocalBrokerPublisher(broker).publish(topic, list(events))


async def receive_eventually(receiver: LocalReceiver) -> ReceivedMessage:
    """Poll until a message arrives (bounded), for locks and schedules to run out."""
    for _ in range(POLLS):
        messages = await receiver.receive_messages(max_wait_time=0.25)
        if messages:
            return messages[0]
    raise AssertionError(f"no message arrived on {receiver.entity}")


# ------------------------------------------------------------------------------ naming


@pytest.mark.parametrize(
    ("topic", "subscription"),
    [
        ("aos-events", "aos"),
        ("Orders/EU.West_1", "Sub_Scription.1"),
        ("x" * 260, "y" * 50),
        ("--", "__"),
        ("--", "aos"),
        ("événements", "ßub"),
    ],
)
def test_queue_names_are_valid_storage_queue_names(topic: str, subscription: str) -> None:
    for dead_letter in (False, True):
        name = queue_name("t0123456789abcdefghi", topic, subscription, dead_letter=dead_letter)
        assert 3 <= len(name) <= 63
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*", name), name
        assert name.startswith("t0123456789abcdefghi-")


def test_queue_names_keep_subscriptions_apart() -> None:
    names = {
        queue_name("p", "a-b", "c"),
        queue_name("p", "a", "b-c"),
        queue_name("p", "A-B", "c"),
        queue_name("p", "a-b", "c", dead_letter=True),
    }
    assert len(names) == 4


# ------------------------------------------------------------------------------ fan-out


async def test_topic_fans_out_to_every_subscription(broker: LocalBroker) -> None:
    await publish(broker, event("evt-1"), event("evt-2"))

    for subscription in ("alpha", "beta"):
        receiver = broker.get_subscription_receiver(TOPIC, subscription, lock_duration=30)
        messages = await receiver.receive_messages(max_message_count=10, max_wait_time=5)
        while len(messages) < 2:
            more = await receiver.receive_messages(max_message_count=10, max_wait_time=5)
            assert more, f"{subscription} got {len(messages)} of 2 messages"
            messages += more
        received = sorted((from_message(m) for m in messages), key=lambda e: e.id)
        assert received == [event("evt-1"), event("evt-2")]
        assert {m.message_id for m in messages} == {"evt-1", "evt-2"}
        assert all(m.delivery_count == 1 for m in messages)
        assert all(m.application_properties["traceparent"] == TRACEPARENT for m in messages)
        assert all(m.correlation_id == "corr-1" for m in messages)

    other = broker.get_subscription_receiver("aos-agent-messages", "alpha")
    assert await other.receive_messages() == []


async def test_unknown_topic_and_subscription_are_named(broker: LocalBroker) -> None:
    with pytest.raises(PublishError, match="'nowhere'") as raised:
        await publish(broker, event(), topic="nowhere")
    assert raised.value.topic == "nowhere"
    assert raised.value.field == "topic"

    with pytest.raises(NotFoundError, match="subscription 'gamma'"):
        broker.get_subscription_receiver(TOPIC, "gamma")


# ------------------------------------------------------------------------------ peek-lock


async def test_received_message_is_locked_until_the_lock_expires(broker: LocalBroker) -> None:
    await publish(broker, event())
    first = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=1)
    second = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=30)

    [locked] = await first.receive_messages(max_wait_time=5)
    assert locked.locked_until_utc is not None
    assert await second.receive_messages() == []
    assert await second.peek_messages() == []

    again = await receive_eventually(second)
    assert again.message_id == locked.message_id
    assert again.delivery_count == 2

    # The first receiver's lock is gone: settling through it fails, and changes nothing.
    with pytest.raises(MessageLockLostError, match="evt-1"):
        await first.complete_message(locked)
    await second.complete_message(again)


async def test_complete_removes_the_message(broker: LocalBroker) -> None:
    await publish(broker, event())
    receiver = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=1)

    [message] = await receiver.receive_messages(max_wait_time=5)
    await receiver.complete_message(message)

    assert await receiver.peek_messages() == []
    assert await receiver.receive_messages(max_wait_time=1.5) == []
    with pytest.raises(InvalidInputError, match="already completed"):
        await receiver.complete_message(message)


async def test_abandon_redelivers_with_a_higher_delivery_count(broker: LocalBroker) -> None:
    await publish(broker, event())
    receiver = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=30)

    [first] = await receiver.receive_messages(max_wait_time=5)
    await receiver.abandon_message(first)
    [second] = await receiver.receive_messages(max_wait_time=5)

    assert second.message_id == first.message_id
    assert (first.delivery_count, second.delivery_count) == (1, 2)
    assert from_message(second) == event()


async def test_renewed_lock_keeps_the_message_from_other_receivers(broker: LocalBroker) -> None:
    await publish(broker, event())
    short = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=1)
    long = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=60)
    other = broker.get_subscription_receiver(TOPIC, "alpha")

    [message] = await short.receive_messages(max_wait_time=5)
    before = message.locked_until_utc
    renewed = await long.renew_message_lock(message)

    assert before is not None and renewed > before
    assert message.locked_until_utc == renewed
    for _ in range(8):  # well past the original one-second lock
        assert await other.receive_messages(max_wait_time=0.25) == []
    await long.complete_message(message)
    assert await other.peek_messages() == []


async def test_peeked_messages_cannot_be_settled(broker: LocalBroker) -> None:
    await publish(broker, event())
    receiver = broker.get_subscription_receiver(TOPIC, "alpha")

    [peeked] = await receiver.peek_messages()

    assert from_message(peeked) == event()
    assert peeked.locked_until_utc is None
    with pytest.raises(InvalidInputError, match="peeked"):
        await receiver.complete_message(peeked)


# ------------------------------------------------------------------------------ dead letters


async def test_max_delivery_count_moves_the_message_to_dead_letters(broker: LocalBroker) -> None:
    await publish(broker, event())
    receiver = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=30)
    dead_letters = broker.get_subscription_receiver(TOPIC, "alpha", sub_queue="deadletter")

    for attempt in range(1, 4):  # max_delivery_count=3
        [message] = await receiver.receive_messages(max_wait_time=5)
        assert message.delivery_count == attempt
        await receiver.abandon_message(message)

    assert await receiver.receive_messages() == []
    assert await receiver.peek_messages() == []
    [dead] = await dead_letters.receive_messages(max_wait_time=5)
    assert dead.dead_letter_reason == MAX_DELIVERY_COUNT_EXCEEDED
    assert dead.dead_letter_error_description == (
        "Message could not be consumed after 3 delivery attempts."
    )
    assert from_message(dead) == event()
    await dead_letters.complete_message(dead)
    assert await dead_letters.peek_messages() == []


async def test_explicit_dead_letter_keeps_reason_and_description(broker: LocalBroker) -> None:
    await publish(broker, event())
    receiver = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=30)

    [message] = await receiver.receive_messages(max_wait_time=5)
    await receiver.dead_letter_message(
        message, reason="PolicyViolation", error_description="agent 'ceo' may not do that"
    )

    assert await receiver.peek_messages() == []
    dead_letters = broker.get_subscription_receiver(TOPIC, "alpha", sub_queue="deadletter")
    [dead] = await dead_letters.peek_messages()
    assert dead.dead_letter_reason == "PolicyViolation"
    assert dead.dead_letter_error_description == "agent 'ceo' may not do that"
    assert dead.message_id == "evt-1"
    assert from_message(dead) == event()
    # The other subscription's copy is untouched.
    beta = broker.get_subscription_receiver(TOPIC, "beta")
    assert [m.message_id for m in await beta.peek_messages()] == ["evt-1"]


# ------------------------------------------------------------------------------ storage


async def test_large_and_binary_bodies_round_trip(broker: LocalBroker) -> None:
    large = event("big", data={"text": "é" * 30_000})
    await publish(broker, large)
    raw = WireMessage(body=bytes(range(256)), message_id="raw", content_type="x/bin")
    await broker.send_messages(TOPIC, raw)
    receiver = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=30)

    messages = await receiver.receive_messages(max_message_count=2, max_wait_time=5)
    while len(messages) < 2:
        messages += await receiver.receive_messages(max_wait_time=5)
    by_id = {m.message_id: m for m in messages}

    assert from_message(by_id["big"]) == large
    assert by_id["raw"].body == bytes(range(256))
    assert by_id["raw"].content_type == "x/bin"
    for message in messages:
        await receiver.complete_message(message)
    container = broker.clients.blobs().get_container_client(broker.bodies_container)
    # alpha's copy of the large body is gone; beta's is still waiting for beta.
    names = [blob.name async for blob in container.list_blobs()]
    assert names == [n for n in names if n.startswith(broker.queue_name(TOPIC, "beta"))]
    assert len(names) == 1


async def test_scheduled_message_arrives_later(broker: LocalBroker) -> None:
    when = datetime.now(UTC) + timedelta(seconds=2)
    await broker.send_messages(TOPIC, [to_message(event())], scheduled_enqueue_time_utc=when)
    receiver = broker.get_subscription_receiver(TOPIC, "alpha")

    assert await receiver.receive_messages() == []
    message = await receive_eventually(receiver)
    assert message.scheduled_enqueue_time_utc == when
    assert from_message(message) == event()


# ------------------------------------------------------------------------------ delivery


async def test_process_messages_settles_by_outcome(broker: LocalBroker) -> None:
    await publish(broker, event("ok"), event("fails"))
    queue = broker.clients.queues().get_queue_client(broker.queue_name(TOPIC, "alpha"))
    await queue.send_message("not a cloud event")  # put there by something else
    receiver = broker.get_subscription_receiver(TOPIC, "alpha", lock_duration=30)
    handled: list[str] = []

    async def handler(message: ReceivedMessage) -> None:
        received = from_message(message)
        handled.append(received.id)
        if received.id == "fails":
            raise RuntimeError("handler bug")

    result = await process_messages(receiver, handler, max_message_count=10, max_wait_time=5)
    while result.received < 3:
        more = await process_messages(receiver, handler, max_message_count=10, max_wait_time=5)
        assert more.received, "messages went missing"
        result.completed += more.completed
        result.abandoned += more.abandoned
        result.dead_lettered += more.dead_lettered

    assert result.completed == ["ok"]
    assert result.abandoned == ["fails"]
    assert len(result.dead_lettered) == 1
    dead_letters = broker.get_subscription_receiver(TOPIC, "alpha", sub_queue="deadletter")
    [dead] = await dead_letters.peek_messages()
    assert dead.dead_letter_reason == MALFORMED_MESSAGE
    assert "not a CloudEvent" in (dead.dead_letter_error_description or "")
    assert dead.body == b"not a cloud event"
    with pytest.raises(MalformedMessageError):
        from_message(dead)
    [again] = await receiver.receive_messages(max_wait_time=5)
    assert (again.message_id, again.delivery_count) == ("fails", 2)
