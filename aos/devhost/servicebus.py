"""Service Bus triggers on the local host: receive, invoke the function, settle.

Like the Functions host with `autoCompleteMessages`: a message is completed when the function
returns and abandoned when it raises, so Service Bus (or the local broker) redelivers it and
dead-letters it once its delivery count passes the maximum. The lock is renewed while the
function runs. Messages come from a real namespace when the trigger's connection is configured,
else from the local broker on storage queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aos.devhost.app import AppFunction
from aos.errors import ConfigurationError

logger = logging.getLogger(__name__)

_SETTING = re.compile(r"%([^%]+)%")


def resolve(value: str | None, get: Callable[[str], str | None], what: str) -> str | None:
    """Replace `%NAME%` binding expressions with settings, as the host does."""
    if value is None:
        return None

    def lookup(match: re.Match[str]) -> str:
        resolved = get(match.group(1))
        if not resolved:
            raise ConfigurationError(
                f"{what} uses %{match.group(1)}% but setting {match.group(1)} is not set",
                field=match.group(1),
            )
        return resolved

    return _SETTING.sub(lookup, value)


@dataclass
class Subscription:
    """Where one trigger function receives from."""

    function: AppFunction
    topic: str | None
    subscription: str | None
    queue: str | None
    connection: str

    @classmethod
    def of(cls, function: AppFunction, get: Callable[[str], str | None]) -> Subscription:
        trigger = function.trigger
        where = f"function '{function.name}'"
        return cls(
            function=function,
            topic=resolve(trigger.get("topicName"), get, where),
            subscription=resolve(trigger.get("subscriptionName"), get, where),
            queue=resolve(trigger.get("queueName"), get, where),
            connection=trigger.get("connection") or "AzureWebJobsServiceBus",
        )

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.subscription}" if self.topic else f"queue {self.queue}"


def function_message(message: Any) -> Any:
    """The `func.ServiceBusMessage` the worker would hand the function for a received message."""
    from azure.functions.servicebus import ServiceBusMessage

    properties = dict(getattr(message, "application_properties", None) or {})
    properties = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in properties.items()
    }
    body = message.body if isinstance(message.body, bytes) else b"".join(message.body)
    return ServiceBusMessage(
        body=body,
        application_properties=properties,
        user_properties=properties,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        delivery_count=message.delivery_count,
        enqueued_time_utc=getattr(message, "enqueued_time_utc", None),
        lock_token=str(getattr(message, "lock_token", "") or ""),
        message_id=message.message_id,
        subject=message.subject,
        label=message.subject,
    )


class ServiceBusPump:
    """Delivers messages for every Service Bus trigger, one receiver per subscription."""

    def __init__(
        self,
        subscriptions: list[Subscription],
        receiver_for: Callable[[Subscription], Any],
        call: Callable[[AppFunction, Mapping[str, Any]], Awaitable[Any]],
        *,
        lock_duration: float = 60.0,
        batch: int = 8,
        max_wait: float = 0.2,
    ) -> None:
        self.subscriptions = subscriptions
        self._receiver_for = receiver_for
        self._call = call
        self.lock_duration = lock_duration
        self.batch = batch
        self.max_wait = max_wait
        self._receivers: dict[str, Any] = {}

    def _receiver(self, subscription: Subscription) -> Any:
        if subscription.source not in self._receivers:
            self._receivers[subscription.source] = self._receiver_for(subscription)
        return self._receivers[subscription.source]

    async def run_once(self) -> int:
        """Receive and handle what is waiting now, on every subscription; returns the count."""
        counts = [await self._receive_once(s) for s in self.subscriptions]
        return sum(counts)

    async def run(self, stop: asyncio.Event, idle_wait: float = 0.5) -> None:
        """One loop per subscription, as the Functions host runs a listener per trigger."""
        await asyncio.gather(*(self._listen(s, stop, idle_wait) for s in self.subscriptions))

    async def _listen(self, subscription: Subscription, stop: asyncio.Event, idle: float) -> None:
        while not stop.is_set():
            try:
                handled = await self._receive_once(subscription)
            except Exception:
                logger.exception("receiving from %s failed; retrying", subscription.source)
                handled = 0
            if not handled:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle)

    async def _receive_once(self, subscription: Subscription) -> int:
        receiver = self._receiver(subscription)
        # A bounded wait: a real namespace's receiver otherwise waits up to 60 s when idle.
        messages = await receiver.receive_messages(
            max_message_count=self.batch, max_wait_time=self.max_wait
        )
        results = await asyncio.gather(*(self._handle(subscription, receiver, m) for m in messages))
        return sum(results)

    async def _handle(self, subscription: Subscription, receiver: Any, message: Any) -> bool:
        function = subscription.function
        renewer = asyncio.create_task(self._keep_lock(receiver, message))
        try:
            await self._call(function, {function.trigger["name"]: function_message(message)})
        except Exception as exc:
            logger.warning(
                "function '%s' failed on message %s (delivery %s): %s; abandoning it",
                function.name,
                message.message_id,
                message.delivery_count,
                exc,
            )
            renewer.cancel()
            await receiver.abandon_message(message)
            return True
        finally:
            renewer.cancel()  # also when the host stops mid-call
        await receiver.complete_message(message)
        return True

    async def _keep_lock(self, receiver: Any, message: Any) -> None:
        while True:
            await asyncio.sleep(self.lock_duration / 2)
            with contextlib.suppress(Exception):
                await receiver.renew_message_lock(message)

    async def close(self) -> None:
        for receiver in self._receivers.values():
            await receiver.close()
        self._receivers.clear()
