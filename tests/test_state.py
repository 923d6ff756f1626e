"""Lifecycle rules, bounded windows and schema migration of AgentState."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aos.agents.models import EventEnvelope
from aos.agents.state import (
    PROCESSED_EVENTS_WINDOW,
    STATE_SCHEMA_VERSION,
    TRANSITIONS,
    WORKING_MEMORY_LIMIT,
    AgentState,
    Lifecycle,
    load_state,
)
from aos.errors import InvalidTransitionError, NotFoundError, SchemaVersionError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in targets]
FORBIDDEN = [(a, b) for a in Lifecycle for b in Lifecycle if b not in TRANSITIONS[a]]


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_allowed_transitions(current: Lifecycle, target: Lifecycle) -> None:
    state = AgentState(agent_id="a", lifecycle=current)
    state.transition(target, T0)
    assert state.lifecycle is target


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_illegal_transition_names_both_states(current: Lifecycle, target: Lifecycle) -> None:
    state = AgentState(agent_id="a", lifecycle=current)
    with pytest.raises(InvalidTransitionError) as raised:
        state.transition(target, T0)
    assert f"'{current.value}'" in str(raised.value)
    assert f"'{target.value}'" in str(raised.value)
    assert state.lifecycle is current


def test_the_documented_lifecycle() -> None:
    assert (Lifecycle.REGISTERED, Lifecycle.SLEEPING) in ALLOWED
    assert (Lifecycle.SLEEPING, Lifecycle.AWAKE) in ALLOWED
    assert (Lifecycle.AWAKE, Lifecycle.SLEEPING) in ALLOWED
    assert (Lifecycle.PAUSED, Lifecycle.SLEEPING) in ALLOWED
    assert TRANSITIONS[Lifecycle.RETIRED] == frozenset()
    assert (Lifecycle.REGISTERED, Lifecycle.AWAKE) in FORBIDDEN


def test_duplicate_event_changes_only_the_duplicate_counter() -> None:
    state = AgentState(agent_id="a")
    event = EventEnvelope(id="e-1", source="/s", type="t")
    assert state.record_event(event, T0) is True
    before = state.model_dump()

    assert state.record_event(event, T0) is False
    after = state.model_dump()
    assert after["counters"].pop("duplicates_dropped") == 1
    before["counters"].pop("duplicates_dropped")
    assert after == before


def test_windows_stay_bounded_and_keep_the_newest() -> None:
    state = AgentState(agent_id="a")
    for n in range(PROCESSED_EVENTS_WINDOW + 10):
        state.record_event(EventEnvelope(id=f"e-{n}", source="/s", type="t"), T0)

    assert len(state.processed_event_ids) == PROCESSED_EVENTS_WINDOW
    assert state.processed_event_ids[-1] == f"e-{PROCESSED_EVENTS_WINDOW + 9}"
    assert not state.has_processed("e-0")
    assert len(state.working_memory) == WORKING_MEMORY_LIMIT
    assert state.counters.events_received == PROCESSED_EVENTS_WINDOW + 10


def test_long_memory_text_is_clipped() -> None:
    state = AgentState(agent_id="a")
    state.remember("note", "x" * 5000, T0)
    assert len(state.working_memory[0].text) == 500


def test_adding_a_goal_id_twice_keeps_one_goal() -> None:
    state = AgentState(agent_id="a")
    state.add_goal("Grow revenue", T0, goal_id="g")
    state.add_goal("Grow revenue", T0, goal_id="g")
    assert len(state.goals) == 1


def test_full_progress_completes_a_goal() -> None:
    state = AgentState(agent_id="a")
    state.add_goal("Grow revenue", T0, goal_id="g")
    goal = state.update_goal_progress("g", 1.0, T0)
    assert goal.status == "completed"
    assert state.active_goals() == []


def test_progress_on_unknown_goal_is_not_found() -> None:
    with pytest.raises(NotFoundError) as raised:
        AgentState(agent_id="a").update_goal_progress("nope", 0.5, T0)
    assert raised.value.field == "goal_id"


def test_state_upgrades_through_each_migration() -> None:
    old = {"schema_version": 1, "agent_id": "a", "mood": "calm"}

    def drop_mood(doc: dict) -> dict:
        return {k: v for k, v in doc.items() if k != "mood"}

    def add_counter(doc: dict) -> dict:
        return {**doc, "counters": {"decisions": 7}}

    state = load_state(old, migrations={1: drop_mood, 2: add_counter}, current=3)
    assert state.schema_version == 3
    assert state.counters.decisions == 7


def test_state_from_a_newer_aos_is_refused() -> None:
    with pytest.raises(SchemaVersionError, match="newer"):
        load_state({"schema_version": STATE_SCHEMA_VERSION + 1, "agent_id": "a"})


def test_missing_migration_is_reported() -> None:
    with pytest.raises(SchemaVersionError, match=r"no migration from .* 1 to 2"):
        load_state({"schema_version": 1, "agent_id": "a"}, migrations={}, current=2)
