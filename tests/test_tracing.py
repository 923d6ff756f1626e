"""Spans follow an event: the message's traceparent is the parent, outgoing messages carry ours."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aos.agents.entity import Snapshot
from aos.agents.models import AgentDefinition, EventEnvelope
from aos.agents.state import Lifecycle
from aos.observability.tracing import current_traceparent, orchestration_step, span
from aos.settings import Settings
from aos.storage.store import AgentStore
from aos.turns import decide_turn

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    return memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def test_span_continues_the_message_trace(spans: InMemorySpanExporter) -> None:
    with span("receive event", PARENT, {"aos.event_id": "e-1", "skipped": None}):
        outgoing = current_traceparent()
    (finished,) = spans.get_finished_spans()
    assert format(finished.context.trace_id, "032x") == TRACE_ID
    assert format(finished.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert finished.attributes == {"aos.event_id": "e-1"}
    assert outgoing is not None
    assert outgoing.split("-")[1] == TRACE_ID
    assert outgoing.split("-")[2] == format(finished.context.span_id, "016x")


async def test_activity_span_is_a_child_of_the_event(spans: InMemorySpanExporter) -> None:
    definition = AgentDefinition(agent_id="ceo", purpose="Company growth")
    snapshot = Snapshot(
        definition=definition, lifecycle=Lifecycle.AWAKE, goals=[], working_memory=[]
    )
    event = EventEnvelope(
        id="e", source="/s", type="t", traceparent=PARENT, data={"options": ["Grow"]}
    )
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    async with AgentStore.from_settings(settings) as store:  # no I/O without an endpoint
        await decide_turn(settings, store, snapshot, event)
    (finished,) = spans.get_finished_spans()
    assert finished.name == "activity turn_decide"
    assert format(finished.context.trace_id, "032x") == TRACE_ID


def test_orchestration_step_spans_once_not_on_replay(spans: InMemorySpanExporter) -> None:
    live = SimpleNamespace(is_replaying=False, instance_id="i-1")
    replay = SimpleNamespace(is_replaying=True, instance_id="i-1")
    orchestration_step(live, "turn_decide", PARENT)
    orchestration_step(replay, "turn_decide", PARENT)
    (finished,) = spans.get_finished_spans()
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left open behind
    assert finished.name == "orchestration turn_decide"
    assert finished.attributes["aos.instance_id"] == "i-1"
