"""Deliver received messages to a handler and settle each by the outcome.

`process_messages` works with any receiver shaped like azure-servicebus's ``ServiceBusReceiver``
(``receive_messages``, ``complete_message``, ``abandon_message``, ``dead_letter_message``): the
local broker's `LocalReceiver` or a real Service Bus receiver.

- the handler returns: the message is completed;
- the handler raises `MalformedMessageError` (e.g. from `envelope.from_message`): retrying cannot
  help, so the message is dead-lettered with reason ``MalformedMessage`` and the error text;
- the handler raises anything else: the message is abandoned, to be redelivered until the
  subscription's maximum delivery count dead-letters it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aos.messaging.errors import MalformedMessageError, MessageLockLostError

log = logging.getLogger(__name__)

MALFORMED_MESSAGE = "MalformedMessage"


@dataclass
class DeliveryResult:
    """The message ids of one `process_messages` call, by outcome."""

    completed: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    lock_lost: list[str] = field(default_factory=list)

    @property
    def received(self) -> int:
        return sum(
            len(ids) for ids in (self.completed, self.abandoned, self.dead_lettered, self.lock_lost)
        )


async def process_messages(
    receiver: Any,
    handler: Callable[[Any], Awaitable[object]],
    *,
    max_message_count: int = 1,
    max_wait_time: float | None = None,
) -> DeliveryResult:
    """Receive up to `max_message_count` messages, hand each to `handler`, settle each."""
    result = DeliveryResult()
    messages = await receiver.receive_messages(
        max_message_count=max_message_count, max_wait_time=max_wait_time
    )
    for message in messages:
        message_id = str(getattr(message, "message_id", None) or "")
        try:
            try:
                await handler(message)
            except MalformedMessageError as exc:
                log.warning("dead-lettering malformed message %s: %s", message_id, exc)
                await receiver.dead_letter_message(
                    message, reason=MALFORMED_MESSAGE, error_description=str(exc)
                )
                result.dead_lettered.append(message_id)
            except Exception:
                log.exception("handler failed on message %s; abandoning it", message_id)
                await receiver.abandon_message(message)
                result.abandoned.append(message_id)
            else:
                await receiver.complete_message(message)
                result.completed.append(message_id)
        except _lock_lost_errors() as exc:
            log.warning("lock lost on message %s: %s", message_id, exc)
            result.lock_lost.append(message_id)
    return result


def _lock_lost_errors() -> tuple[type[BaseException], ...]:
    try:
        from azure.servicebus.exceptions import MessageLockLostError as ServiceBusLockLost
    except ImportError:  # pragma: no cover - azure-servicebus is a dependency
        return (MessageLockLostError,)
    return (MessageLockLostError, ServiceBusLockLost)
