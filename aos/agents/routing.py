"""Which agents an event is for: the one its `subject` names, else every subscriber of its type."""

from __future__ import annotations

from collections.abc import Iterable

from aos.agents.models import AgentDefinition, EventEnvelope


def subscribes_to(definition: AgentDefinition, event_type: str) -> bool:
    """Exact type, or a prefix pattern ending in '*' ('com.example.sales.*')."""
    return any(
        event_type == pattern or (pattern.endswith("*") and event_type.startswith(pattern[:-1]))
        for pattern in definition.subscriptions
    )


def route_event(event: EventEnvelope, definitions: Iterable[AgentDefinition]) -> list[str]:
    """Agent ids to deliver to, in a stable order. An explicit subject wins over subscriptions."""
    definitions = list(definitions)
    if event.subject:
        return [d.agent_id for d in definitions if d.agent_id == event.subject]
    return sorted(d.agent_id for d in definitions if subscribes_to(d, event.type))
