"""The turn's activities against Azurite: context, decision, messages, records."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aos.agents.entity import DATA_REF, INLINE_EVENT_BYTES, Snapshot, compact
from aos.agents.models import AgentDefinition, EventEnvelope
from aos.agents.state import Lifecycle
from aos.settings import Settings
from aos.storage.context import Memory
from aos.storage.store import AgentStore
from aos.turns import (
    decide_task,
    decide_turn,
    full_event,
    load_context,
    outgoing_messages,
    record_turn,
    turn_outcome,
)

CEO = AgentDefinition(
    agent_id="ceo",
    purpose="Strategic oversight and company growth",
    success_criteria=["Revenue growth"],
)
SNAPSHOT = Snapshot(definition=CEO, lifecycle=Lifecycle.AWAKE, goals=[], working_memory=[])
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[AgentStore]:
    async with AgentStore.from_settings(settings) as agent_store:
        yield agent_store


def request(event_id: str = "e-1") -> EventEnvelope:
    return EventEnvelope(
        id=event_id,
        source="/board",
        type="board.request",
        correlationid="corr-7",
        data={
            "options": [
                "Order pizza",
                {
                    "action": "Draft a strategic plan to grow revenue",
                    "messages": [{"to": "cfo", "type": "plan.review", "data": {"doc": 1}}],
                },
            ]
        },
    )


async def decided(store: AgentStore, event: EventEnvelope):
    made = await decide_turn(Settings.from_env({}), store, SNAPSHOT, event)
    assert made.defer is None
    return made.decision


async def test_decision_and_its_messages(store: AgentStore) -> None:
    decision = await decided(store, request())
    assert decision is not None
    assert decision.chosen == "Draft a strategic plan to grow revenue"
    assert decision.method == "deterministic"  # no inference endpoint is configured

    messages = outgoing_messages("ceo", request(), decision, TRACE)
    again = outgoing_messages("ceo", request(), await decided(store, request()), TRACE)
    assert [m.id for m in messages] == [m.id for m in again]  # a retried turn sends the same ids
    (message,) = messages
    assert (message.subject, message.type, message.data) == ("cfo", "plan.review", {"doc": 1})
    assert message.correlationid == "corr-7"
    assert message.traceparent == TRACE
    assert message.source == "/aos/agents/ceo"


async def test_declined_decision_sends_nothing(store: AgentStore) -> None:
    event = EventEnvelope(id="e", source="/s", type="t", data={"options": ["Order pizza"]})
    decision = await decided(store, event)
    assert decision is not None and decision.outcome == "decline"
    assert outgoing_messages("ceo", event, decision, None) == []
    assert turn_outcome(decision, [])["outcome"] == "decline"


async def test_informational_event_needs_no_decision(store: AgentStore) -> None:
    event = EventEnvelope(id="e", source="/s", type="t", data={"amount": 3})
    assert await decided(store, event) is None
    assert turn_outcome(None, [])["status"] == "observed"


async def test_workflow_task_decision_is_audited_once_per_step(store: AgentStore) -> None:
    task = {"options": ["Order pizza", "Plan revenue growth"]}
    first = await decide_task(store, SNAPSHOT.model_dump(mode="json"), task, "wf-1", 0)
    retried = await decide_task(store, SNAPSHOT.model_dump(mode="json"), task, "wf-1", 0)
    assert first.chosen == retried.chosen == "Plan revenue growth"
    (record,) = (await store.audit.list("ceo")).items
    assert record.kind == "decision"
    assert record.correlation_id == "wf-1"
    assert record.data["decision_id"] == first.decision_id


async def test_record_is_idempotent_and_context_sees_it(store: AgentStore) -> None:
    event = request()
    outcome = turn_outcome(await decided(store, event), ["msg-1"])
    await record_turn(store, "ceo", event, outcome)
    await record_turn(store, "ceo", event, outcome)
    await store.context.remember("ceo", Memory(memory_id="board", content="Board meets monthly"))

    recalled = await load_context(store, "ceo", None)
    assert recalled.recent_events == [
        {
            "id": "e-1",
            "type": "board.request",
            "outcome": "decided",
            "chosen": "Draft a strategic plan to grow revenue",
        }
    ]
    assert recalled.memories[0]["excerpt"] == "Board meets monthly"


async def test_large_event_waits_in_the_queue_without_its_data(store: AgentStore) -> None:
    big = EventEnvelope(
        id="big", source="/s", type="t", data={"options": ["Plan growth"], "pad": "x" * 10_000}
    )
    queued = compact(big)
    assert queued.data is None
    assert (queued.model_extra or {})[DATA_REF] == "context"
    assert len(queued.model_dump_json()) < INLINE_EVENT_BYTES

    await store.context.append_event("ceo", big)  # the delivery keeps it first
    restored = await full_event(store, "ceo", queued.model_dump(mode="json"))
    assert restored.data == big.data
