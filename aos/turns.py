"""The slow parts of an agent's turn, each run as an activity: context retrieval, the decision,
acting on it (messages to other agents), and writing the event and outcome to the context store.

Every step is safe to retry: the decision is a pure function of its input, message ids derive
from the agent and event, and the context store drops a second append of the same event.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field

from aos.agents.agent import context_from_event, decide, decision_id_for
from aos.agents.alignment import DeterministicAlignmentScorer
from aos.agents.entity import DATA_REF, Snapshot
from aos.agents.models import (
    AgentDefinition,
    Decision,
    DecisionContext,
    EventEnvelope,
    Model,
    Slug,
    utcnow,
)
from aos.observability.tracing import current_traceparent, span
from aos.settings import Settings
from aos.storage.store import AgentStore

RECENT_EVENTS = 5
RECENT_MEMORIES = 10
MEMORY_EXCERPT = 300


class TurnContext(Model):
    """What the agent recalls for a turn: its latest history and memories (excerpts)."""

    recent_events: list[dict[str, Any]] = Field(default_factory=list)
    memories: list[dict[str, Any]] = Field(default_factory=list)


async def load_context(store: AgentStore, agent_id: Slug, traceparent: str | None) -> TurnContext:
    with span("activity turn_load_context", traceparent, {"aos.agent_id": agent_id}):
        events = await store.context.list_events(agent_id, page_size=RECENT_EVENTS)
        memories = await store.context.list_memories(agent_id, page_size=RECENT_MEMORIES)
        return TurnContext(
            recent_events=[
                {
                    "id": e.event.id,
                    "type": e.event.type,
                    "outcome": (e.outcome or {}).get("status"),
                    "chosen": (e.outcome or {}).get("chosen"),
                }
                for e in events.items
            ],
            memories=[
                {"memory_id": m.memory_id, "kind": m.kind, "excerpt": m.content[:MEMORY_EXCERPT]}
                for m in memories.items
            ],
        )


class TurnDecision(Model):
    """The decision step's answer: the decision (None when the event asks for none), what the
    model cost, and `defer` when the model's endpoint is down and the event should wait."""

    decision: Decision | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    defer: str | None = None


async def decide_turn(
    settings: Settings,
    store: AgentStore,
    snapshot: Snapshot,
    event: EventEnvelope,
    recalled: TurnContext | None = None,
) -> TurnDecision:
    """The agent's decision about an event: with its model when inference is configured (see
    aos.inference), else with the deterministic scorer. What the agent recalled (its latest
    history and memories) joins the situation the model reads. A dead endpoint defers."""
    from aos.inference.decisions import decide_for_turn

    agent_id = snapshot.definition.agent_id
    with span("activity turn_decide", event.traceparent, {"aos.agent_id": agent_id}):
        context = context_from_event(event)
        if context is None:
            return TurnDecision()
        if recalled is not None:
            context = context.model_copy(
                update={"situation": with_recall(context.situation, recalled)}
            )
        made = await decide_for_turn(
            settings,
            store.clients,
            snapshot.definition,
            snapshot.goals,
            context,
            decision_id_for(agent_id, event.id),
        )
        usage = made.usage.model_dump()
        if made.endpoint_unavailable:
            return TurnDecision(usage=usage, defer=made.fallback_reason or "inference unavailable")
        return TurnDecision(decision=made.decision, usage=usage)


def with_recall(situation: str, recalled: TurnContext, limit: int = 4000) -> str:
    """The situation followed by what the agent remembers, within the situation's size limit."""
    lines = [f"- {m['excerpt']}" for m in recalled.memories]
    lines += [
        f"- earlier: {e['type']} ({e['id']}) -> {e.get('chosen') or e.get('outcome')}"
        for e in recalled.recent_events
    ]
    if not lines:
        return situation
    text = f"{situation}\n\nWhat you remember:\n" + "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def outgoing_messages(
    agent_id: Slug, event: EventEnvelope, decision: Decision | None, traceparent: str | None
) -> list[EventEnvelope]:
    """The messages a decision sends, as events with ids that a retry reproduces exactly."""
    if decision is None or decision.outcome != "act":
        return []
    seed = hashlib.sha256(f"{agent_id}\n{event.id}".encode()).hexdigest()[:20]
    return [
        EventEnvelope(
            id=f"msg-{seed}-{index}",
            source=f"/aos/agents/{agent_id}",
            type=message.type,
            subject=message.to,
            time=utcnow(),
            data=message.data,
            correlationid=event.correlationid or event.id,
            traceparent=traceparent,
        )
        for index, message in enumerate(decision.messages)
    ]


async def act(
    settings: Settings,
    store: AgentStore,
    agent_id: Slug,
    event: EventEnvelope,
    decision: Decision | None,
    definition: AgentDefinition,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Carry out the decision: publish its messages to other agents and make its MCP tool calls.
    Returns the message ids and the tool results (a failed call is a result, not an error)."""
    from aos.mcp.client import call_tools
    from aos.messaging.publisher import publisher_from_settings

    with span("activity turn_act", event.traceparent, {"aos.agent_id": agent_id}):
        messages = outgoing_messages(agent_id, event, decision, current_traceparent())
        if messages:
            async with publisher_from_settings(settings, store.clients) as publisher:
                await publisher.publish(settings.messages_topic, messages)
        tools = []
        if decision is not None and decision.outcome == "act" and decision.tool_calls:
            results = await call_tools(definition.mcp_servers, decision.tool_calls)
            tools = [result.model_dump() for result in results]
        return [m.id for m in messages], tools


def turn_outcome(
    decision: Decision | None,
    sent: list[str],
    failure: tuple[str, str] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The outcome stored with the event (and summarised for the entity)."""
    if failure is not None:
        step, error = failure
        return {"status": "failed", "failed_step": step, "error": error}
    if decision is None:
        return {"status": "observed", "reason": "the event asked for no decision"}
    chosen = next((o for o in decision.options if o.action == decision.chosen), None)
    return {
        "status": "decided",
        "decision_id": decision.decision_id,
        "outcome": decision.outcome,
        "chosen": decision.chosen,
        "score": chosen.alignment.score if chosen else None,
        "method": decision.method,
        "reasons": decision.reasons,
        "messages_sent": sent,
        "tool_results": tools or [],
    }


async def record_turn(
    store: AgentStore, agent_id: Slug, event: EventEnvelope, outcome: dict[str, Any]
) -> None:
    """Write the event and its outcome to the agent's history (both idempotent)."""
    with span("activity turn_record", event.traceparent, {"aos.agent_id": agent_id}):
        await store.context.append_event(agent_id, event)
        await store.context.record_outcome(agent_id, event.id, outcome)


async def full_event(store: AgentStore, agent_id: Slug, event: dict[str, Any]) -> EventEnvelope:
    """The event with its data: a queued event marked `aosdataref` left it in the context store."""
    envelope = EventEnvelope.model_validate(event)
    if (envelope.model_extra or {}).get(DATA_REF) is None:
        return envelope
    return (await store.context.get_event(agent_id, envelope.id)).event


def decide_task(snapshot: dict[str, Any], task: dict[str, Any]) -> Decision:
    """An agent's decision on a workflow's task (no event: the decision id is fresh)."""
    state = Snapshot.model_validate(snapshot)
    agent_id = state.definition.agent_id
    with span("activity agent_decide", None, {"aos.agent_id": agent_id}):
        return decide(
            state.definition,
            state.goals,
            DecisionContext.model_validate(task),
            DeterministicAlignmentScorer(),
            decision_id_for(agent_id, None),
        )
