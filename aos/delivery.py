"""Delivering an event: route it to its agents, keep it, queue it, and make sure a turn runs.

Used by the Service Bus triggers and by the admin API's "post an event". The Durable client is
the SDK's `DurableOrchestrationClient` (or anything with the same methods).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from aos.agents.entity import ENTITY_NAME, MAX_PENDING_EVENTS
from aos.agents.models import EventEnvelope, utcnow
from aos.agents.routing import route_event
from aos.errors import BusyError, InvalidInputError
from aos.storage.store import AgentStore
from aos.workflows.multi import WORKFLOWS, orchestrator_name
from aos.workflows.turn import ORCHESTRATOR, turn_instance_id

logger = logging.getLogger(__name__)

WORKFLOW_EVENT_TYPE = "aos.workflow.start"
# A turn instance in one of these states still has the event in hand (or finished it).
_LIVE_OR_DONE = {"Pending", "Running", "ContinuedAsNew", "Completed"}
# A turn held by an instance in one of these states will never be committed.
_GONE = {None, "Failed", "Terminated", "Completed"}


class Delivery(BaseModel):
    agent_id: str
    instance_id: str
    started: bool
    duplicate: bool = False


async def deliver(
    client: Any, store: AgentStore, event: EventEnvelope, only: str | None = None
) -> list[Delivery]:
    """Deliver to the agents the event is for (or to `only`). Safe to repeat for the same event."""
    import azure.durable_functions as df

    if only is not None:
        targets = [only]
    else:
        definitions = [record.definition async for record in store.registry.all()]
        targets = route_event(event, definitions)
    if not targets:
        logger.info("event %s (%s) is for no registered agent", event.id, event.type)
    deliveries = []
    for agent_id in targets:
        entity = df.EntityId(ENTITY_NAME, agent_id)
        now = utcnow().isoformat()
        if not await store.context.append_event(agent_id, event):  # kept before anything else
            stored = await store.context.get_event(agent_id, event.id)
            if stored.outcome is not None:  # its turn is done, however long ago: one effect
                await client.signal_entity(entity, "count_duplicate", {"now": now})
                instance_id = turn_instance_id(agent_id, event.id)
                deliveries.append(
                    Delivery(
                        agent_id=agent_id, instance_id=instance_id, started=False, duplicate=True
                    )
                )
                continue
        await _make_room(client, entity, agent_id)
        payload = {"event": event.model_dump(mode="json"), "now": now}
        await client.signal_entity(entity, "enqueue", payload)
        deliveries.append(await ensure_turn(client, agent_id, event))
    return deliveries


async def _make_room(client: Any, entity: Any, agent_id: str) -> None:
    """Refuse (so the message is retried later) when the agent's queue is full, and release a
    turn whose orchestration is gone (failed or terminated) so the agent is not wedged."""
    response = await client.read_entity_state(entity)
    state = response.entity_state if response.entity_exists else None
    if not state:
        return
    if len(state.get("queue", [])) >= MAX_PENDING_EVENTS:
        raise BusyError(
            f"agent '{agent_id}' already has {MAX_PENDING_EVENTS} events waiting; "
            "deliver this one again later",
            field="agent_id",
        )
    turn = state.get("turn")
    if turn:
        holder = await client.get_status(turn["instance_id"])
        runtime_status = getattr(getattr(holder, "runtime_status", None), "value", None)
        if runtime_status in _GONE:
            await client.signal_entity(
                entity,
                "release_turn",
                {"instance_id": turn["instance_id"], "now": utcnow().isoformat()},
            )


async def ensure_turn(client: Any, agent_id: str, event: EventEnvelope | None) -> Delivery:
    """Start the turn orchestration for this agent and event unless it already exists.

    With no event (after a resume), a fresh instance drains whatever is queued.
    """
    if event is None:
        instance_id = f"turn-{agent_id}-drain-{utcnow():%Y%m%d%H%M%S%f}"
    else:
        instance_id = turn_instance_id(agent_id, event.id)
        if await _in_hand(client, instance_id):
            return Delivery(agent_id=agent_id, instance_id=instance_id, started=False)
    payload = {"agent_id": agent_id, "event": event.model_dump(mode="json") if event else None}
    try:
        await client.start_new(ORCHESTRATOR, instance_id, payload)
    except Exception:
        # A concurrent delivery of the same event started it between our check and our start.
        if event is not None and await _in_hand(client, instance_id):
            return Delivery(agent_id=agent_id, instance_id=instance_id, started=False)
        raise
    return Delivery(agent_id=agent_id, instance_id=instance_id, started=True)


async def _in_hand(client: Any, instance_id: str) -> bool:
    status = await client.get_status(instance_id)
    runtime_status = getattr(getattr(status, "runtime_status", None), "value", None)
    return runtime_status in _LIVE_OR_DONE


def workflow_start(event: EventEnvelope) -> tuple[str, str, dict[str, Any]] | None:
    """An `aos.workflow.start` event names a workflow and its input; its id makes the instance id.

    Returns (orchestrator, instance id, validated input), or None for any other event.
    """
    if event.type != WORKFLOW_EVENT_TYPE:
        return None
    data = event.data if isinstance(event.data, dict) else {}
    name = data.get("workflow")
    if name not in WORKFLOWS:
        raise InvalidInputError(
            f"data.workflow must be one of {', '.join(WORKFLOWS)}, not {name!r}",
            field="data.workflow",
        )
    request = WORKFLOWS[name].model_validate(data.get("input") or {})
    return orchestrator_name(name), f"workflow-{event.id}", request.model_dump(mode="json")
