"""The agent as a Durable Entity: its state and the operations that change it.

Pure and synchronous, as Python entity functions must be: no I/O, no signals. The entity is the
agent's single writer. It queues events in their explicit order, hands out one turn at a time,
and takes back each turn's outcome. Operations are idempotent, because client signals are
delivered at least once and may arrive out of order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, ValidationError

from aos.agents.models import (
    AgentDefinition,
    AwareDatetime,
    EventEnvelope,
    Goal,
    Model,
    Slug,
    utcnow,
)
from aos.agents.state import AgentState, Lifecycle, MemoryItem
from aos.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from aos.governance.policy import PolicyUsage, RuleUsage

ENTITY_NAME = "agent"
MAX_PENDING_EVENTS = 32
# Events larger than this wait in the queue without their data (which the context store holds),
# so the entity's state stays small: at most about MAX_PENDING_EVENTS x INLINE_EVENT_BYTES.
INLINE_EVENT_BYTES = 4096
DATA_REF = "aosdataref"
# A delivery releases a turn whose orchestration it finds failed or terminated. As a last resort
# a turn not committed for this long is taken over by the next delivery (long enough that a
# holder delayed by an outage or slow inference is not overtaken while it is still alive).
TURN_LEASE = timedelta(hours=6)


class PendingEvent(Model):
    event: EventEnvelope
    enqueued_at: AwareDatetime
    arrival: int = Field(ge=0)

    @property
    def order(self) -> tuple[Any, ...]:
        """Explicit order: the CloudEvents `sequence` extension, then `time`, then arrival."""
        sequence = (self.event.model_extra or {}).get("sequence")
        return (
            int(sequence) if isinstance(sequence, int | str) and str(sequence).isdigit() else -1,
            self.event.time or self.enqueued_at,
            self.arrival,
        )


class ActiveTurn(Model):
    event_id: str
    instance_id: str
    started_at: AwareDatetime
    awaiting_approval: str | None = Field(None, description="The approval workflow's id.")
    held_until: AwareDatetime | None = None

    def held(self, now: datetime) -> bool:
        """Whether the holder may still be alive: within the lease, or waiting for a person."""
        return now - self.started_at < TURN_LEASE or (
            self.held_until is not None and now < self.held_until
        )


class TurnFailure(Model):
    event_id: str
    step: str
    error: str
    at: AwareDatetime


class AgentEntityState(Model):
    """What the entity stores. Small by construction: bounded queue, windows in AgentState."""

    definition: AgentDefinition
    state: AgentState
    queue: list[PendingEvent] = Field(default_factory=list)
    arrivals: int = 0
    turn: ActiveTurn | None = None
    turns_failed: int = 0
    last_failure: TurnFailure | None = None
    turns_deferred: int = 0
    definition_revision: AwareDatetime | None = None
    policy_usage: PolicyUsage = Field(default_factory=PolicyUsage)


class Snapshot(Model):
    """What a turn's activities get to work with: the definition and the live parts of state."""

    definition: AgentDefinition
    lifecycle: Lifecycle
    goals: list[Goal]
    working_memory: list[MemoryItem]
    policy_usage: PolicyUsage = Field(default_factory=PolicyUsage)


class Grant(Model):
    """The entity's answer to "may I run a turn?"."""

    status: Literal["granted", "busy", "idle", "paused", "retired", "done", "deferred"]
    event: EventEnvelope | None = None
    snapshot: Snapshot | None = None


class TurnOutcome(Model):
    """What a turn reports back when it commits."""

    event_id: str
    instance_id: str
    status: Literal["decided", "observed", "failed", "deferred"]
    decision_outcome: Literal["act", "decline", "denied"] | None = None
    chosen: str | None = None
    failed_step: str | None = None
    error: str | None = None
    usage: dict[str, int] | None = None
    counted: dict[str, RuleUsage] | None = Field(
        None, description="What the actions that ran used of the agent's policy limits."
    )
    reason: str | None = None
    now: AwareDatetime | None = None


def _now(payload: dict[str, Any] | None) -> datetime:
    value = (payload or {}).get("now")
    return datetime.fromisoformat(value) if isinstance(value, str) else utcnow()


def _require(entity: AgentEntityState | None, agent_id: str) -> AgentEntityState:
    if entity is None:
        raise NotFoundError(f"agent '{agent_id}' is not registered", field="agent_id")
    return entity


def _enqueue(
    entity: AgentEntityState, event: EventEnvelope, now: datetime, delivery: bool = True
) -> tuple[bool, str]:
    """Queue an event unless it is known. `delivery` is False for the turn orchestration's own
    copy of the event, which is not a second delivery and so not counted as a duplicate."""
    if entity.state.lifecycle is Lifecycle.RETIRED:
        return False, "the agent is retired"
    reason = None
    if entity.state.has_processed(event.id):
        reason = "already processed"
    elif any(p.event.id == event.id for p in entity.queue) or (
        entity.turn and entity.turn.event_id == event.id
    ):
        reason = "already queued"
    if reason is not None:
        if delivery:
            entity.state.counters.duplicates_dropped += 1
        return False, reason
    if len(entity.queue) >= MAX_PENDING_EVENTS:
        # Deliveries check for room first (aos.delivery); one that raced past the check is
        # refused here rather than failing the operation, and stays in the agent's history.
        return False, "the queue is full"
    entity.arrivals += 1
    entity.queue.append(
        PendingEvent(event=compact(event), enqueued_at=now, arrival=entity.arrivals)
    )
    entity.queue.sort(key=lambda pending: pending.order)
    entity.state.counters.events_received += 1
    return True, "queued"


def compact(event: EventEnvelope) -> EventEnvelope:
    """The event as the queue keeps it: data over INLINE_EVENT_BYTES is left in the context store
    (the delivery stored it there first) and marked with the `aosdataref` extension."""
    size = len(event.model_dump_json(include={"data"}))
    if size <= INLINE_EVENT_BYTES:
        return event
    return EventEnvelope.model_validate(
        {**event.model_dump(mode="json", exclude={"data"}), DATA_REF: "context"}
    )


def _snapshot(entity: AgentEntityState) -> Snapshot:
    state = entity.state
    return Snapshot(
        definition=entity.definition,
        lifecycle=state.lifecycle,
        goals=state.active_goals(),
        working_memory=state.working_memory,
        policy_usage=entity.policy_usage,
    )


def _grant(entity: AgentEntityState, instance_id: str, now: datetime) -> Grant:
    state = entity.state
    if state.lifecycle is Lifecycle.RETIRED:
        return Grant(status="retired")
    if entity.turn is not None:
        if entity.turn.instance_id != instance_id and entity.turn.held(now):
            return Grant(status="busy")
        if state.lifecycle is Lifecycle.AWAKE:  # taking over a lost turn
            state.transition(Lifecycle.SLEEPING, now)
        entity.turn = None
    if state.lifecycle is Lifecycle.PAUSED:
        return Grant(status="paused")
    if not entity.queue:
        return Grant(status="idle")
    head = entity.queue[0].event
    state.transition(Lifecycle.AWAKE, now)
    entity.turn = ActiveTurn(event_id=head.id, instance_id=instance_id, started_at=now)
    return Grant(status="granted", event=head, snapshot=_snapshot(entity))


# -- operations: each takes the current state (None if the entity does not exist yet) and the
# operation's input, and returns (new state, result).

Op = Callable[[AgentEntityState | None, Any, str], tuple[AgentEntityState | None, Any]]


def register(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    definition = AgentDefinition.model_validate(payload["definition"])
    if definition.agent_id != key:
        raise InvalidInputError(
            f"definition is for '{definition.agent_id}' but this entity is '{key}'",
            field="agent_id",
        )
    if entity is not None:
        if entity.definition == definition:
            return entity, {"registered": False, "reason": "already registered"}  # a retry
        raise AlreadyExistsError(f"agent '{key}' is already registered", field="agent_id")
    now = _now(payload)
    state = AgentState(agent_id=key)
    state.transition(Lifecycle.SLEEPING, now)
    for goal in payload.get("goals", []):
        state.add_goal(goal["description"], now, goal.get("goal_id"))
    return AgentEntityState(definition=definition, state=state), {"registered": True}


def read(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    entity = _require(entity, key)
    return entity, entity.model_dump(mode="json")


def snapshot(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    """The definition and live state a decision needs, without the queue."""
    entity = _require(entity, key)
    return entity, _snapshot(entity).model_dump(mode="json")


def update_definition(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    entity = _require(entity, key)
    definition = AgentDefinition.model_validate(payload["definition"])
    if definition.agent_id != key:
        raise InvalidInputError("agent_id cannot change", field="agent_id")
    # Signals may arrive out of order: an update older than the one applied is dropped.
    revision = datetime.fromisoformat(payload["revision"]) if payload.get("revision") else None
    if revision and entity.definition_revision and revision <= entity.definition_revision:
        return entity, {"updated": False, "reason": "a newer definition is already applied"}
    entity.definition = definition
    entity.definition_revision = revision or entity.definition_revision
    return entity, {"updated": True}


def enqueue(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    entity = _require(entity, key)
    event = EventEnvelope.model_validate(payload["event"])
    accepted, reason = _enqueue(entity, event, _now(payload))
    return entity, {"accepted": accepted, "reason": reason}


def begin_turn(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    """Queue the caller's event if it is new, then grant the turn for the head of the queue."""
    entity = _require(entity, key)
    now = _now(payload)
    if payload.get("event") is not None:
        event = EventEnvelope.model_validate(payload["event"])
        _enqueue(entity, event, now, delivery=False)
        if entity.state.has_processed(event.id) and not (
            entity.turn and entity.turn.instance_id == payload["instance_id"]
        ):
            return entity, Grant(status="done").model_dump(mode="json")
    grant = _grant(entity, payload["instance_id"], now)
    return entity, grant.model_dump(mode="json")


def commit_turn(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    """Take in a turn's outcome, put the agent back to sleep, and grant the next queued event."""
    entity = _require(entity, key)
    outcome = TurnOutcome.model_validate(payload)
    now = outcome.now or utcnow()
    turn = entity.turn
    if turn is None or turn.event_id != outcome.event_id or turn.instance_id != outcome.instance_id:
        return entity, Grant(status="idle").model_dump(mode="json")  # stale or repeated commit
    state = entity.state
    state.counters.add_usage(outcome.usage)
    if outcome.status == "deferred":
        # The event stays at the head of the queue for a later turn (e.g. the model is down).
        entity.turns_deferred += 1
        entity.turn = None
        state.remember("deferred", f"kept {outcome.event_id} for later: {outcome.error}", now)
        if state.lifecycle is Lifecycle.AWAKE:
            state.transition(Lifecycle.SLEEPING, now)
        return entity, Grant(status="deferred").model_dump(mode="json")
    # What ran counts against the limits, even if the turn failed after acting.
    entity.policy_usage.add(now.date(), outcome.counted or {})
    pending = next(p for p in entity.queue if p.event.id == outcome.event_id)
    entity.queue.remove(pending)
    state.processed_event_ids = [*state.processed_event_ids, pending.event.id]
    state.last_event_at = pending.event.time or now
    if outcome.status == "failed":
        entity.turns_failed += 1
        entity.last_failure = TurnFailure(
            event_id=outcome.event_id,
            step=outcome.failed_step or "unknown",
            error=(outcome.error or "")[:500],
            at=now,
        )
        state.remember("failure", f"turn for {outcome.event_id} failed: {outcome.error}", now)
    elif outcome.status == "decided":
        state.counters.decisions += 1
        if outcome.decision_outcome == "denied":
            state.counters.actions_denied += 1
            state.remember("denial", f"did not {outcome.chosen}: {outcome.reason}", now)
        elif outcome.decision_outcome == "act":
            state.counters.actions_taken += 1
            state.remember("decision", f"decided to {outcome.chosen}", now)
        else:
            state.counters.actions_declined += 1
            state.remember("decision", "declined every option", now)
    else:
        state.remember("event", f"observed {pending.event.type} ({pending.event.id})", now)
    entity.turn = None
    if state.lifecycle is Lifecycle.AWAKE:
        state.transition(Lifecycle.SLEEPING, now)
    return entity, _grant(entity, outcome.instance_id, now).model_dump(mode="json")


def count_duplicate(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    """A delivery found the event already handled (perhaps long ago, outside the id window)."""
    entity = _require(entity, key)
    entity.state.counters.duplicates_dropped += 1
    return entity, {"duplicates_dropped": entity.state.counters.duplicates_dropped}


def release_turn(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    """Free the turn held by an orchestration that is gone; its event stays at the queue head."""
    entity = _require(entity, key)
    if entity.turn is not None and entity.turn.instance_id == payload["instance_id"]:
        entity.turn = None
        if entity.state.lifecycle is Lifecycle.AWAKE:
            entity.state.transition(Lifecycle.SLEEPING, _now(payload))
        return entity, {"released": True}
    return entity, {"released": False}


def await_approval(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    """The turn waits for a person: hold it (past the lease) until the approval's deadline."""
    entity = _require(entity, key)
    turn = entity.turn
    if turn is None or turn.instance_id != payload["instance_id"]:
        return entity, {"held": False}
    entity.turn = turn.model_copy(
        update={
            "awaiting_approval": payload["approval_id"],
            "held_until": datetime.fromisoformat(payload["until"]),
        }
    )
    return entity, {"held": True}


def add_goal(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
    entity = _require(entity, key)
    goal = entity.state.add_goal(payload["description"], _now(payload), payload.get("goal_id"))
    return entity, goal.model_dump(mode="json")


def update_goal_progress(
    entity: AgentEntityState | None, payload: Any, key: str
) -> tuple[Any, Any]:
    entity = _require(entity, key)
    goal = entity.state.update_goal_progress(payload["goal_id"], payload["progress"], _now(payload))
    return entity, goal.model_dump(mode="json")


def _lifecycle_op(target: Lifecycle) -> Op:
    def change(entity: AgentEntityState | None, payload: Any, key: str) -> tuple[Any, Any]:
        entity = _require(entity, key)
        state = entity.state
        # Resuming an agent that is mid-turn changes nothing; pausing or retiring one lets the
        # running turn commit, and no further turn is granted.
        mid_turn_resume = target is Lifecycle.SLEEPING and state.lifecycle is Lifecycle.AWAKE
        if state.lifecycle is not target and not mid_turn_resume:
            state.transition(target, _now(payload))
        return entity, {"lifecycle": state.lifecycle.value, "pending": len(entity.queue)}

    return change


OPERATIONS: dict[str, Op] = {
    "register": register,
    "read": read,
    "snapshot": snapshot,
    "update_definition": update_definition,
    "enqueue": enqueue,
    "count_duplicate": count_duplicate,
    "release_turn": release_turn,
    "begin_turn": begin_turn,
    "commit_turn": commit_turn,
    "await_approval": await_approval,
    "add_goal": add_goal,
    "update_goal_progress": update_goal_progress,
    "pause": _lifecycle_op(Lifecycle.PAUSED),
    "resume": _lifecycle_op(Lifecycle.SLEEPING),
    "retire": _lifecycle_op(Lifecycle.RETIRED),
}


def apply_operation(
    stored: dict[str, Any] | None, operation: str, payload: Any, key: Slug
) -> tuple[dict[str, Any] | None, Any]:
    """Run one entity operation over stored (JSON) state; returns the new state and the result.

    Invalid input raises with a message naming the field; the entity's state is unchanged then,
    because each operation works on a fresh copy.
    """
    if operation not in OPERATIONS:
        raise InvalidInputError(
            f"unknown agent operation '{operation}'; known: {', '.join(sorted(OPERATIONS))}",
            field="operation",
        )
    entity = AgentEntityState.model_validate(stored) if stored is not None else None
    try:
        new, result = OPERATIONS[operation](entity, payload or {}, key)
    except (KeyError, TypeError) as exc:
        raise InvalidInputError(
            f"operation '{operation}' input is missing {exc}", field=str(exc).strip("'")
        ) from None
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or operation
        raise InvalidInputError(f"{field}: {error['msg']}", field=field) from None
    return (new.model_dump(mode="json") if new is not None else None), result
