"""An agent's mutable state and the pure rules that change it.

No I/O here: the same methods run inside a Durable Entity (which must stay a fast, pure state
machine) and in the in-process agent. State is kept small on purpose: working memory and the
window of processed event ids are bounded, so an event costs the same however old the agent is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import uuid4

from pydantic import Field, field_validator

from aos.agents.models import (
    MAX_ITEM_LENGTH,
    AwareDatetime,
    EventEnvelope,
    Fraction,
    Goal,
    GoalStatus,
    Model,
    Slug,
)
from aos.errors import InvalidTransitionError, NotFoundError, SchemaVersionError

STATE_SCHEMA_VERSION = 1
WORKING_MEMORY_LIMIT = 32
PROCESSED_EVENTS_WINDOW = 256
MAX_GOALS = 100


class Lifecycle(StrEnum):
    REGISTERED = "registered"
    SLEEPING = "sleeping"
    AWAKE = "awake"
    PAUSED = "paused"
    RETIRED = "retired"


# Where each state may go. Retired is final: a retired agent keeps its history but never wakes.
TRANSITIONS: dict[Lifecycle, frozenset[Lifecycle]] = {
    Lifecycle.REGISTERED: frozenset({Lifecycle.SLEEPING, Lifecycle.PAUSED, Lifecycle.RETIRED}),
    Lifecycle.SLEEPING: frozenset({Lifecycle.AWAKE, Lifecycle.PAUSED, Lifecycle.RETIRED}),
    Lifecycle.AWAKE: frozenset({Lifecycle.SLEEPING, Lifecycle.PAUSED, Lifecycle.RETIRED}),
    Lifecycle.PAUSED: frozenset({Lifecycle.SLEEPING, Lifecycle.RETIRED}),
    Lifecycle.RETIRED: frozenset(),
}


class MemoryItem(Model):
    """One line of working memory: what happened recently, in a sentence."""

    at: AwareDatetime
    kind: Slug
    text: str = Field(max_length=MAX_ITEM_LENGTH)


class Counters(Model):
    events_received: int = Field(0, ge=0)
    duplicates_dropped: int = Field(0, ge=0)
    decisions: int = Field(0, ge=0)
    actions_taken: int = Field(0, ge=0)
    actions_declined: int = Field(0, ge=0)
    actions_denied: int = Field(0, ge=0, description="Chosen actions a policy or person refused.")
    inference_calls: int = Field(0, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    inference_cache_hits: int = Field(0, ge=0)

    def add_usage(self, usage: dict[str, int] | None) -> None:
        """Add what a turn's inference cost (calls, tokens, cache hits)."""
        usage = usage or {}
        self.inference_calls += usage.get("calls", 0)
        self.prompt_tokens += usage.get("prompt_tokens", 0)
        self.completion_tokens += usage.get("completion_tokens", 0)
        self.inference_cache_hits += usage.get("cache_hits", 0)


class AgentState(Model):
    schema_version: int = Field(STATE_SCHEMA_VERSION, ge=1)
    agent_id: Slug
    lifecycle: Lifecycle = Lifecycle.REGISTERED
    goals: list[Goal] = Field(default_factory=list, max_length=MAX_GOALS)
    working_memory: list[MemoryItem] = Field(default_factory=list)
    processed_event_ids: list[str] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)
    last_event_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None

    # Windows keep the newest entries: older ones live in the context store.
    @field_validator("working_memory")
    @classmethod
    def _window_memory(cls, value: list[MemoryItem]) -> list[MemoryItem]:
        return value[-WORKING_MEMORY_LIMIT:]

    @field_validator("processed_event_ids")
    @classmethod
    def _window_events(cls, value: list[str]) -> list[str]:
        return value[-PROCESSED_EVENTS_WINDOW:]

    # -- lifecycle -------------------------------------------------------------------------

    def can_transition(self, target: Lifecycle) -> bool:
        return target in TRANSITIONS[self.lifecycle]

    def transition(self, target: Lifecycle | str, now: datetime) -> None:
        target = Lifecycle(target)
        if not self.can_transition(target):
            raise InvalidTransitionError(self.lifecycle.value, target.value)
        self.lifecycle = target
        self.updated_at = now

    # -- events ----------------------------------------------------------------------------

    def has_processed(self, event_id: str) -> bool:
        return event_id in self.processed_event_ids

    def record_event(self, event: EventEnvelope, now: datetime) -> bool:
        """Note an incoming event. Returns False (and changes only a counter) for a duplicate."""
        if self.has_processed(event.id):
            self.counters.duplicates_dropped += 1
            return False
        self.processed_event_ids = [*self.processed_event_ids, event.id]
        self.counters.events_received += 1
        self.last_event_at = event.time or now
        self.remember("event", f"{event.type} from {event.source} (id {event.id})", now)
        return True

    def remember(self, kind: str, text: str, now: datetime) -> None:
        item = MemoryItem(at=now, kind=kind, text=_clip(text))
        self.working_memory = [*self.working_memory, item]
        self.updated_at = now

    # -- goals -----------------------------------------------------------------------------

    def add_goal(self, description: str, now: datetime, goal_id: str | None = None) -> Goal:
        goal_id = goal_id or f"g-{uuid4().hex[:12]}"
        existing = self.find_goal(goal_id)
        if existing is not None:
            return existing  # adding the same goal id twice is a retry, not a second goal
        goal = Goal(goal_id=goal_id, description=description, created_at=now, updated_at=now)
        self.goals = [*self.goals, goal]  # assignment re-validates the MAX_GOALS bound
        self.updated_at = now
        return goal

    def find_goal(self, goal_id: str) -> Goal | None:
        return next((goal for goal in self.goals if goal.goal_id == goal_id), None)

    def get_goal(self, goal_id: str) -> Goal:
        goal = self.find_goal(goal_id)
        if goal is None:
            raise NotFoundError(f"agent '{self.agent_id}' has no goal '{goal_id}'", field="goal_id")
        return goal

    def update_goal_progress(self, goal_id: str, progress: Fraction, now: datetime) -> Goal:
        goal = self.get_goal(goal_id)
        goal.progress = progress  # validated on assignment: outside [0, 1] names `progress`
        if goal.progress >= 1.0 and goal.status is GoalStatus.ACTIVE:
            goal.status = GoalStatus.COMPLETED
        goal.updated_at = now
        self.updated_at = now
        return goal

    def active_goals(self) -> list[Goal]:
        return [goal for goal in self.goals if goal.status is GoalStatus.ACTIVE]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ITEM_LENGTH else text[: MAX_ITEM_LENGTH - 1] + "…"


# -- schema versions ---------------------------------------------------------------------------

# MIGRATIONS[n] turns a version-n document into a version-(n + 1) one. Add an entry (and bump
# STATE_SCHEMA_VERSION) whenever AgentState changes shape; stored state upgrades as it is read.
Migration = Callable[[dict[str, Any]], dict[str, Any]]
MIGRATIONS: dict[int, Migration] = {}


def load_state(
    document: Mapping[str, Any],
    *,
    migrations: Mapping[int, Migration] = MIGRATIONS,
    current: int = STATE_SCHEMA_VERSION,
) -> AgentState:
    """Read stored state of any known schema version, upgrading it to the current one."""
    data = dict(document)
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise SchemaVersionError(
            f"stored agent state has schema_version {version!r}; expected a positive integer",
            field="schema_version",
        )
    if version > current:
        raise SchemaVersionError(
            f"stored agent state has schema_version {version}, newer than this AOS supports "
            f"({current}): upgrade AOS before reading it",
            field="schema_version",
        )
    while version < current:
        if version not in migrations:
            raise SchemaVersionError(
                f"no migration from agent state schema_version {version} to {version + 1}",
                field="schema_version",
            )
        data = migrations[version](data)
        version += 1
        data["schema_version"] = version
    return AgentState.model_validate(data)
