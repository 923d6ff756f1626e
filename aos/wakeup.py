"""What a Service Bus trigger does with a message: validate it, then start a workflow or wake
the agents it is for. Kept apart from the trigger so it can be called with any message object
that has the Service Bus message's attributes."""

from __future__ import annotations

import logging
from typing import Any

from aos.agents.models import EventEnvelope
from aos.delivery import deliver, workflow_start
from aos.errors import AOSError
from aos.governance.audit import GOVERNANCE_CHAIN, MAX_ACTOR_CHARS
from aos.messaging.envelope import from_message
from aos.observability.tracing import span
from aos.runtime import agent_store
from aos.workflows.multi import named_agents

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
        # Only external events start workflows: an agent's message was judged by its policies
        # as a message to an agent, not as the start of a workflow, so it is delivered as one.
        started = workflow_start(event) if kind == "event" else None
        if started is not None:
            await start_workflow_once(client, event, *started)
            return
        deliveries = await deliver(client, agent_store(), event)
        logger.info(
            "%s %s delivered to %s", kind, event.id, [d.agent_id for d in deliveries] or "nobody"
        )


async def start_workflow_once(
    client: Any, event: EventEnvelope, orchestrator: str, instance_id: str, request: dict
) -> None:
    """Start the workflow an `aos.workflow.start` event asks for, once per event id, recorded
    (before it starts) in the audit chain of every agent it names."""
    status = await client.get_status(instance_id)
    if getattr(status, "runtime_status", None) is not None:
        return
    store = agent_store()
    agents = named_agents(request)
    for agent_id in agents:  # only registered agents have chains (and can take part)
        await store.registry.get(agent_id)
    data = {"operation": "start_workflow", "workflow": orchestrator, "instance_id": instance_id}
    for chain in agents or [GOVERNANCE_CHAIN]:
        await store.audit.append(
            chain,
            "admin",
            actor=f"event:{event.source}"[:MAX_ACTOR_CHARS],
            key=f"event/{event.id}/start_workflow",
            data=data,
            correlation_id=event.correlationid or event.id,
        )
    await client.start_new(orchestrator, instance_id, request)
