"""The models reject bad input with errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from aos.agents.models import (
    MAX_EVENT_DATA_BYTES,
    AgentDefinition,
    DecisionContext,
    EventEnvelope,
)
from aos.agents.state import AgentState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in error["loc"]) for error in exc.errors()}


@pytest.mark.parametrize(
    "agent_id", ["CEO", "has space", "-lead", "trail-", "a" * 65, "", "ünï", "a/b", "a_b"]
)
def test_agent_id_must_be_a_lowercase_slug(agent_id: str) -> None:
    with pytest.raises(ValidationError) as raised:
        AgentDefinition(agent_id=agent_id, purpose="p")
    assert error_fields(raised.value) == {"agent_id"}
    assert "lowercase slug" in str(raised.value)


@pytest.mark.parametrize("agent_id", ["ceo", "a", "sales-lead-2", "a" * 64])
def test_valid_agent_ids(agent_id: str) -> None:
    assert AgentDefinition(agent_id=agent_id, purpose="p").agent_id == agent_id


@pytest.mark.parametrize("purpose", ["", "   "])
def test_purpose_must_not_be_empty(purpose: str) -> None:
    with pytest.raises(ValidationError) as raised:
        AgentDefinition(agent_id="ceo", purpose=purpose)
    assert error_fields(raised.value) == {"purpose"}


def test_unknown_definition_field_is_named() -> None:
    with pytest.raises(ValidationError) as raised:
        AgentDefinition(agent_id="ceo", purpose="p", purpoze="typo")
    assert error_fields(raised.value) == {"purpoze"}


def test_threshold_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        AgentDefinition(agent_id="ceo", purpose="p", alignment_threshold=1.5)
    assert error_fields(raised.value) == {"alignment_threshold"}


@pytest.mark.parametrize("progress", [-0.01, 1.01])
def test_goal_progress_outside_unit_interval_is_refused(progress: float) -> None:
    state = AgentState(agent_id="ceo")
    goal = state.add_goal("Grow revenue", T0, goal_id="revenue")
    with pytest.raises(ValidationError) as raised:
        state.update_goal_progress("revenue", progress, T0)
    assert error_fields(raised.value) == {"progress"}
    assert goal.progress == 0.0


def test_unknown_lifecycle_state_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        AgentState(agent_id="ceo", lifecycle="hibernating")
    assert error_fields(raised.value) == {"lifecycle"}


def test_event_envelope_round_trips_cloudevents_attributes() -> None:
    raw = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/crm",
        "type": "com.example.deal.closed",
        "subject": "ceo",
        "time": "2026-01-01T09:00:00Z",
        "datacontenttype": "application/json",
        "data": {"amount": 100},
        "correlationid": "corr-1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "partitionkey": "ceo",
    }
    event = EventEnvelope.model_validate(raw)
    assert event.model_dump(mode="json", exclude_none=True) == raw


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": ""}, "id"),
        ({"type": None}, "type"),
        ({"specversion": "0.3"}, "specversion"),
        ({"time": "2026-01-01T09:00:00"}, "time"),
        ({"traceparent": "not-a-trace"}, "traceparent"),
        ({"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}, "traceparent"),
        ({"data": {"blob": "x" * MAX_EVENT_DATA_BYTES}}, "data"),
    ],
)
def test_bad_envelopes_name_the_field(changes: dict, field: str) -> None:
    raw = {"id": "e", "source": "/s", "type": "t", **changes}
    with pytest.raises(ValidationError) as raised:
        EventEnvelope.model_validate(raw)
    assert error_fields(raised.value) == {field}


def test_bad_extension_attribute_is_refused() -> None:
    with pytest.raises(ValidationError, match="Bad_Name"):
        EventEnvelope(id="e", source="/s", type="t", Bad_Name="x")


def test_decision_context_needs_options() -> None:
    with pytest.raises(ValidationError) as raised:
        DecisionContext(situation="s", options=[])
    assert error_fields(raised.value) == {"options"}
