"""What a Service Bus trigger does with a message: validate it, then start a workflow or wake
the agents it is for. Kept apart from the trigger so it can be called with any message object
that has the Service Bus message's attributes."""

from __future__ import annotations

import logging
from typing import Any

from aos.delivery import deliver, workflow_start
from aos.errors import AOSError
from aos.messaging.envelope import from_message
from aos.observability.tracing import span
from aos.runtime import agent_store

logger = logging.getLogger(__name__)


async def on_message(message: Any, client: Any, kind: str) -> None:
    """Raise (so Service Bus retries, then dead-letters) on a malformed message or a failure."""
    try:
        event = from_message(message)
    except AOSError as exc:
        logger.error(
            "malformed %s %s (delivery %s): %s",
            kind,
            getattr(message, "message_id", "?"),
            getattr(message, "delivery_count", "?"),
            exc.message,
        )
        raise
    attributes = {"aos.event_id": event.id, "aos.event_type": event.type}
    with span(f"receive {kind}", event.traceparent, attributes):
        started = workflow_start(event)
        if started is not None:
            orchestrator, instance_id, request = started
            status = await client.get_status(instance_id)
            if getattr(status, "runtime_status", None) is None:
                await client.start_new(orchestrator, instance_id, request)
            return
        deliveries = await deliver(client, agent_store(), event)
        logger.info(
            "%s %s delivered to %s", kind, event.id, [d.agent_id for d in deliveries] or "nobody"
        )
