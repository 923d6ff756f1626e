"""The agent entity's operations: pure state changes, idempotent under redelivery and disorder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aos.agents.entity import MAX_PENDING_EVENTS, TURN_LEASE, apply_operation
from aos.errors import AlreadyExistsError, InvalidInputError, InvalidTransitionError, NotFoundError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEFINITION = {"agent_id": "ceo", "purpose": "Strategic oversight and company growth"}


class Agent:
    """Drives the operations the way the entity function does: JSON state in, JSON state out."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def op(self, name: str, payload: Any = None) -> Any:
        self.state, result = apply_operation(self.state, name, payload, "ceo")
        return result


def event(event_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "source": "/s", "type": "t", **extra}


def now(seconds: int = 0) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
def agent() -> Agent:
    a = Agent()
    a.op("register", {"definition": DEFINITION, "now": now()})
    return a


def begin(agent: Agent, instance: str, ev: dict | None = None, at: int = 0) -> dict:
    return agent.op("begin_turn", {"instance_id": instance, "event": ev, "now": now(at)})


def commit(agent: Agent, instance: str, event_id: str, status: str = "observed", **kw: Any) -> dict:
    return agent.op(
        "commit_turn",
        {"event_id": event_id, "instance_id": instance, "status": status, "now": now(1), **kw},
    )


def test_register_starts_the_agent_sleeping(agent: Agent) -> None:
    assert agent.state is not None
    assert agent.state["state"]["lifecycle"] == "sleeping"


def test_registering_twice_with_another_definition_is_refused(agent: Agent) -> None:
    assert agent.op("register", {"definition": DEFINITION})["registered"] is False  # a retry
    with pytest.raises(AlreadyExistsError):
        agent.op("register", {"definition": {**DEFINITION, "purpose": "Something else"}})


def test_operations_on_an_unregistered_agent_are_not_found() -> None:
    with pytest.raises(NotFoundError, match="'ceo' is not registered"):
        Agent().op("enqueue", {"event": event("e")})


def test_bad_input_names_the_field_and_changes_nothing(agent: Agent) -> None:
    before = agent.state
    with pytest.raises(InvalidInputError) as raised:
        agent.op("enqueue", {"event": {"id": "", "source": "/s", "type": "t"}})
    assert raised.value.field == "id"
    with pytest.raises(InvalidInputError) as raised:
        agent.op("add_goal", {})
    assert raised.value.field == "description"
    with pytest.raises(InvalidInputError, match="unknown agent operation 'explode'"):
        agent.op("explode")
    assert agent.state == before


def test_a_turn_wakes_the_agent_and_commit_puts_it_back_to_sleep(agent: Agent) -> None:
    grant = begin(agent, "turn-1", event("e-1"))
    assert grant["status"] == "granted"
    assert grant["event"]["id"] == "e-1"
    assert grant["snapshot"]["definition"]["agent_id"] == "ceo"
    assert agent.state["state"]["lifecycle"] == "awake"

    after = commit(agent, "turn-1", "e-1", "decided", decision_outcome="act", chosen="plan")
    assert after["status"] == "idle"
    state = agent.state["state"]
    assert state["lifecycle"] == "sleeping"
    assert state["processed_event_ids"] == ["e-1"]
    assert state["counters"]["decisions"] == 1


def test_duplicate_delivery_has_one_effect(agent: Agent) -> None:
    agent.op("enqueue", {"event": event("e-1")})
    assert agent.op("enqueue", {"event": event("e-1")}) == {
        "accepted": False,
        "reason": "already queued",
    }
    begin(agent, "turn-1", event("e-1"))
    commit(agent, "turn-1", "e-1")
    assert agent.op("enqueue", {"event": event("e-1")})["reason"] == "already processed"
    assert begin(agent, "turn-1-again", event("e-1"))["status"] == "done"
    assert agent.state["state"]["counters"]["events_received"] == 1
    assert commit(agent, "turn-1", "e-1")["status"] == "idle"  # a repeated commit is ignored
    assert agent.state["state"]["processed_event_ids"] == ["e-1"]


def test_one_turn_at_a_time_and_the_holder_drains_the_queue(agent: Agent) -> None:
    assert begin(agent, "turn-a", event("a"))["status"] == "granted"
    assert begin(agent, "turn-b", event("b"))["status"] == "busy"  # b waits in the queue

    follow_on = commit(agent, "turn-a", "a")
    assert follow_on["status"] == "granted"
    assert follow_on["event"]["id"] == "b"  # the holder of the turn carries on with b
    assert commit(agent, "turn-a", "b")["status"] == "idle"
    assert agent.state["state"]["processed_event_ids"] == ["a", "b"]


def test_out_of_order_signals_are_processed_in_explicit_order(agent: Agent) -> None:
    agent.op("enqueue", {"event": event("late", time="2026-01-01T10:00:00Z")})
    agent.op("enqueue", {"event": event("early", time="2026-01-01T09:00:00Z")})
    grant = begin(agent, "turn", None)
    assert grant["event"]["id"] == "early"
    assert commit(agent, "turn", "early")["event"]["id"] == "late"


def test_begin_turn_before_its_enqueue_signal_still_counts_once(agent: Agent) -> None:
    begin(agent, "turn-1", event("e-1"))  # the orchestration's call overtook the trigger's signal
    assert agent.op("enqueue", {"event": event("e-1")})["accepted"] is False
    commit(agent, "turn-1", "e-1")
    assert agent.state["state"]["counters"]["events_received"] == 1


def test_a_failed_turn_is_recorded_and_does_not_wedge_the_agent(agent: Agent) -> None:
    begin(agent, "turn-1", event("e-1"))
    agent.op("enqueue", {"event": event("e-2")})
    nxt = commit(agent, "turn-1", "e-1", "failed", failed_step="turn_decide", error="boom")
    assert nxt["event"]["id"] == "e-2"
    assert agent.state["turns_failed"] == 1
    assert agent.state["last_failure"]["step"] == "turn_decide"


def test_a_lost_turn_is_taken_over_after_the_lease(agent: Agent) -> None:
    begin(agent, "turn-lost", event("e-1"))
    assert begin(agent, "turn-2", event("e-2"), at=60)["status"] == "busy"
    late = int(TURN_LEASE.total_seconds()) + 1  # a last resort: deliveries release dead turns
    taken = begin(agent, "turn-2", event("e-2"), at=late)
    assert taken["status"] == "granted"
    assert taken["event"]["id"] == "e-1"  # the lost turn's event is not lost


def test_paused_agent_queues_but_does_not_turn_until_resumed(agent: Agent) -> None:
    agent.op("pause")
    assert begin(agent, "turn-1", event("e-1"))["status"] == "paused"
    assert agent.op("resume")["pending"] == 1
    assert begin(agent, "turn-1", None)["status"] == "granted"


def test_pausing_mid_turn_lets_the_turn_commit(agent: Agent) -> None:
    begin(agent, "turn-1", event("e-1"))
    agent.op("enqueue", {"event": event("e-2")})
    agent.op("pause")
    assert commit(agent, "turn-1", "e-1")["status"] == "paused"
    assert agent.state["state"]["lifecycle"] == "paused"


def test_retired_agent_takes_no_events(agent: Agent) -> None:
    agent.op("retire")
    assert agent.op("enqueue", {"event": event("e")})["reason"] == "the agent is retired"
    with pytest.raises(InvalidTransitionError, match="'retired' to 'sleeping'"):
        agent.op("resume")


def test_queue_is_bounded_without_failing_the_operation(agent: Agent) -> None:
    for n in range(MAX_PENDING_EVENTS):
        agent.op("enqueue", {"event": event(f"e-{n}")})
    refused = agent.op("enqueue", {"event": event("one-too-many")})
    assert refused == {"accepted": False, "reason": "the queue is full"}
    assert len(agent.state["queue"]) == MAX_PENDING_EVENTS


def test_a_turn_held_by_a_gone_orchestration_is_released(agent: Agent) -> None:
    begin(agent, "turn-dead", event("e-1"))
    assert agent.op("release_turn", {"instance_id": "someone-else"}) == {"released": False}
    assert agent.op("release_turn", {"instance_id": "turn-dead"}) == {"released": True}
    again = begin(agent, "turn-new", None)
    assert again["status"] == "granted"
    assert again["event"]["id"] == "e-1"  # the event was kept


def test_a_duplicate_found_by_the_delivery_is_counted(agent: Agent) -> None:
    assert agent.op("count_duplicate", {})["duplicates_dropped"] == 1


def test_goals(agent: Agent) -> None:
    goal = agent.op("add_goal", {"description": "Grow revenue", "goal_id": "revenue"})
    assert goal["goal_id"] == "revenue"
    assert (
        agent.op("update_goal_progress", {"goal_id": "revenue", "progress": 0.5})["progress"] == 0.5
    )
    with pytest.raises(InvalidInputError) as raised:
        agent.op("update_goal_progress", {"goal_id": "revenue", "progress": 2})
    assert raised.value.field == "progress"


def test_concurrent_redelivery_counts_as_a_duplicate_but_the_turns_own_copy_does_not(
    agent: Agent,
) -> None:
    agent.op("enqueue", {"event": event("e-1")})
    agent.op("enqueue", {"event": event("e-1")})  # redelivered while still queued
    begin(agent, "turn-1", event("e-1"))  # the turn orchestration brings its own copy
    commit(agent, "turn-1", "e-1")
    counters = agent.state["state"]["counters"]
    assert (counters["events_received"], counters["duplicates_dropped"]) == (1, 1)


def test_definition_updates_arriving_out_of_order_keep_the_newest(agent: Agent) -> None:
    newer = {"definition": {**DEFINITION, "purpose": "Newer"}, "revision": now(20)}
    older = {"definition": {**DEFINITION, "purpose": "Older"}, "revision": now(10)}
    assert agent.op("update_definition", newer) == {"updated": True}
    assert agent.op("update_definition", older)["updated"] is False
    assert agent.state["definition"]["purpose"] == "Newer"
