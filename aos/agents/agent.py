"""PurposeDrivenAgent: the seed's public API over an agent's definition, state and context.

Every change is written through to storage (registry row with an ETag, context store for history
and memories), so an agent picked up by another process, or after a restart, carries on where it
stood. Decisions are made by the deterministic scorer here; an inference endpoint joins in when
one is configured (aos.inference).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from uuid import uuid4

from pydantic import BaseModel

from aos.agents.alignment import DeterministicAlignmentScorer, Terms
from aos.agents.models import (
    AgentDefinition,
    Alignment,
    Decision,
    DecisionContext,
    EventEnvelope,
    Goal,
    ScoredOption,
    utcnow,
)
from aos.agents.state import AgentState, Counters, Lifecycle, MemoryItem
from aos.errors import AOSError, ConcurrencyError, InvalidTransitionError, NotFoundError
from aos.settings import Settings
from aos.storage.registry import AgentRecord
from aos.storage.store import AgentStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How much advancing an active goal counts when ranking aligned options.
GOAL_WEIGHT = 0.2
_SAVE_ATTEMPTS = 5


class PurposeStatus(BaseModel):
    """What `get_purpose_status` reports."""

    agent_id: str
    purpose: str
    purpose_scope: str
    success_criteria: list[str]
    lifecycle: Lifecycle
    goals: list[Goal]
    overall_progress: float
    counters: Counters
    recent_memory: list[MemoryItem]


class TurnResult(BaseModel):
    """What came of one event: None decision when the event was a duplicate or carried no choice."""

    event_id: str
    duplicate: bool
    decision: Decision | None = None
    outcome: dict[str, Any] = {}


def rank_options(
    definition: AgentDefinition,
    goals: Iterable[Goal],
    context: DecisionContext,
    scorer: DeterministicAlignmentScorer,
) -> list[ScoredOption]:
    """Score every option for alignment, credit those that advance active goals, best first."""
    goals = list(goals)
    scored = []
    for option in context.options:
        alignment = scorer.score(option.action, definition)
        option_terms = Terms.of(option.action)
        advanced, goal_score = [], 0.0
        for goal in goals:
            goal_terms = Terms.of(goal.description)
            if not goal_terms:
                continue
            cover = len(goal_terms.matched_by(option_terms)) / len(goal_terms.words)
            if cover > 0:
                advanced.append(goal.goal_id)
                goal_score = max(goal_score, cover)
        rank = alignment.score
        if not alignment.violations:
            rank = (1 - GOAL_WEIGHT) * alignment.score + GOAL_WEIGHT * goal_score
        scored.append(
            ScoredOption(
                action=option.action,
                alignment=alignment,
                goals_advanced=advanced,
                rank_score=rank,
                messages=option.messages,
                tool_calls=option.tool_calls,
                cost=option.cost,
            )
        )
    return sorted(scored, key=lambda s: s.rank_score, reverse=True)  # stable: ties keep order


def decide(
    definition: AgentDefinition,
    goals: Iterable[Goal],
    context: DecisionContext,
    scorer: DeterministicAlignmentScorer,
    decision_id: str,
) -> Decision:
    """Choose the best-ranked aligned option, or decline when none is aligned."""
    ranked = rank_options(definition, goals, context, scorer)
    best_aligned = next((s for s in ranked if s.alignment.aligned), None)
    if best_aligned is None:
        best = ranked[0]
        reasons = [
            f"no option reached the alignment threshold {definition.alignment_threshold:.2f}; "
            f"the best was '{best.action}' at {best.alignment.score:.2f}",
            *best.alignment.reasons,
        ]
        outcome, chosen = "decline", None
    else:
        reasons = [
            f"chose '{best_aligned.action}' (alignment {best_aligned.alignment.score:.2f})",
            *best_aligned.alignment.reasons,
        ]
        if best_aligned.goals_advanced:
            reasons.append(f"advances goal(s) {', '.join(best_aligned.goals_advanced)}")
        outcome, chosen = "act", best_aligned.action
    return Decision(
        decision_id=decision_id,
        agent_id=definition.agent_id,
        situation=context.situation,
        outcome=outcome,
        chosen=chosen,
        options=ranked,
        reasons=reasons,
        event_id=context.event_id,
        decided_at=utcnow(),
    )


def decision_id_for(agent_id: str, event_id: str | None) -> str:
    """Decisions about an event get an id derived from it, so a retried turn reuses the id."""
    if event_id is None:
        return f"d-{uuid4().hex[:16]}"
    return "d-" + hashlib.sha256(f"{agent_id}\n{event_id}".encode()).hexdigest()[:16]


def context_from_event(event: EventEnvelope) -> DecisionContext | None:
    """The choice an event asks for: `data.options` (candidates) or `data.action` (a proposal).

    Returns None for an event that only informs (the agent records it and sleeps).
    """
    data = event.data if isinstance(event.data, Mapping) else {}
    options = data.get("options")
    if options is None and data.get("action") is not None:
        options = [data["action"]]
    if options is None:
        return None
    try:
        return DecisionContext(
            situation=str(data.get("situation", "")), options=options, event_id=event.id
        )
    except ValueError as exc:
        raise AOSError(f"event data does not describe a decision: {exc}", field="data") from None


class PurposeDrivenAgent:
    """A perpetual agent with a purpose. See README.md for the lifecycle and the seed's usage."""

    def __init__(
        self,
        agent_id: str,
        purpose: str,
        purpose_scope: str = "",
        success_criteria: Iterable[str] = (),
        adapter_name: str | None = None,
        *,
        constraints: Iterable[str] = (),
        role: str | None = None,
        subscriptions: Iterable[str] = (),
        policies: Iterable[str] = (),
        alignment_threshold: float = 0.5,
        store: AgentStore | None = None,
    ) -> None:
        definition = AgentDefinition(
            agent_id=agent_id,
            purpose=purpose,
            purpose_scope=purpose_scope,
            success_criteria=list(success_criteria),
            adapter_name=adapter_name,
            constraints=list(constraints),
            role=role,
            subscriptions=list(subscriptions),
            policies=list(policies),
            alignment_threshold=alignment_threshold,
        )
        self._init(definition, store)

    @classmethod
    def from_definition(
        cls, definition: AgentDefinition, store: AgentStore | None = None
    ) -> PurposeDrivenAgent:
        agent = cls.__new__(cls)
        agent._init(definition, store)
        return agent

    def _init(self, definition: AgentDefinition, store: AgentStore | None) -> None:
        self.definition = definition
        self.scorer = DeterministicAlignmentScorer()
        self._store = store
        self._owns_store = store is None
        self._record: AgentRecord | None = None

    @property
    def agent_id(self) -> str:
        return self.definition.agent_id

    @property
    def state(self) -> AgentState:
        return self._require_record().state

    # -- lifecycle -------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Register the agent, or load it if it is already registered (its state is kept).

        A changed definition (say, a refined purpose) replaces the stored one.
        """
        if self._store is None:
            self._store = AgentStore.from_settings()
        registry = self._store.registry
        try:
            self._record = await registry.get(self.agent_id)
        except NotFoundError:
            try:
                self._record = await registry.register(self.definition)
                logger.info("registered agent %s", self.agent_id)
                return
            except AOSError as exc:  # lost a race with another registration: load theirs
                if exc.code != "already_exists":
                    raise
                self._record = await registry.get(self.agent_id)
        if self._record.definition != self.definition:
            logger.info("agent %s: definition changed; storing the new one", self.agent_id)
            self._record = await registry.save(
                self._record.model_copy(update={"definition": self.definition})
            )

    async def start(self) -> None:
        """Make the agent live: it sleeps until an event wakes it. Starting it again is a no-op."""
        await self._mutate(lambda state, now: _ensure(state, Lifecycle.SLEEPING, now))

    async def stop(self) -> None:
        """Pause the agent: it keeps its state and history and ignores nothing it already has."""
        await self._mutate(lambda state, now: _ensure(state, Lifecycle.PAUSED, now))

    async def retire(self) -> None:
        """End the agent's life for good. Its history stays readable."""
        await self._mutate(lambda state, now: _ensure(state, Lifecycle.RETIRED, now))

    async def close(self) -> None:
        if self._owns_store and self._store is not None:
            await self._store.close()
            self._store = None

    # -- purpose ---------------------------------------------------------------------------

    async def evaluate_purpose_alignment(self, action: str | Mapping[str, Any]) -> Alignment:
        """Score an action (text, or a mapping with `action`/`description`) against the purpose:
        the agent's model and the deterministic scorer combined when inference is configured
        (both scores are in the reasons), the deterministic scorer alone otherwise."""
        if isinstance(action, Mapping):
            text = action.get("action") or action.get("description")
            if not isinstance(text, str):
                raise AOSError(
                    "action must be text, or a mapping with an 'action' or 'description' string",
                    field="action",
                )
            action = text
        from aos.inference.decisions import align_for_agent

        made = await align_for_agent(
            Settings.from_env(), self._clients(), action, self.definition, scorer=self.scorer
        )
        await self._account(made.usage.model_dump())
        return made.alignment

    async def make_purpose_driven_decision(
        self, context: DecisionContext | Mapping[str, Any]
    ) -> Decision:
        """Choose among `context['options']` the action that best serves the purpose and goals."""
        if not isinstance(context, DecisionContext):
            context = DecisionContext.model_validate(context)
        decision, usage = await self._decide(context)
        if self._record is not None:
            await self._mutate(lambda state, now: _count_decision(state, decision, now, usage))
        return decision

    async def _decide(self, context: DecisionContext) -> tuple[Decision, dict[str, int]]:
        """Decide with the agent's model when inference is configured, else deterministically.

        Raises InferenceUnavailableError when the endpoint is down, so the caller keeps the
        event for later rather than deciding without the model it was configured to use.
        """
        from aos.inference.decisions import decide_for_turn
        from aos.inference.errors import InferenceUnavailableError

        made = await decide_for_turn(
            Settings.from_env(),
            self._clients(),
            self.definition,
            self.state.active_goals() if self._record else [],
            context,
            decision_id_for(self.agent_id, context.event_id),
            scorer=self.scorer,
        )
        if made.endpoint_unavailable:
            raise InferenceUnavailableError(
                f"agent '{self.agent_id}' cannot decide now: {made.fallback_reason}; "
                "the event is kept, deliver it again later"
            )
        if self._store is not None:
            # Into the agent's audit chain, once per decision id (an event's is fixed, so a
            # redelivered event adds nothing).
            from aos.governance.audit import agent_actor

            decision = made.decision
            await self._store.audit.append(
                self.agent_id,
                "decision",
                actor=agent_actor(self.agent_id),
                key=f"decision/{decision.decision_id}",
                data={"event_id": context.event_id, **decision.summary()},
                correlation_id=context.event_id or decision.decision_id,
            )
        return made.decision, made.usage.model_dump()

    def _clients(self) -> Any:
        return self._store.clients if self._store is not None else None

    async def _account(self, usage: dict[str, int]) -> None:
        if self._record is not None and usage.get("calls"):
            await self._mutate(lambda state, now: state.counters.add_usage(usage))

    # -- goals -----------------------------------------------------------------------------

    async def add_goal(self, description: str, goal_id: str | None = None) -> str:
        """Add a goal; returns its id. Adding with an existing id returns that goal unchanged."""
        goal_id = goal_id or f"g-{uuid4().hex[:12]}"
        goal = await self._mutate(lambda state, now: state.add_goal(description, now, goal_id))
        return goal.goal_id

    async def update_goal_progress(self, goal_id: str, progress: float) -> Goal:
        return await self._mutate(
            lambda state, now: state.update_goal_progress(goal_id, progress, now)
        )

    async def get_purpose_status(self) -> PurposeStatus:
        state = self.state
        goals = state.goals
        return PurposeStatus(
            agent_id=self.agent_id,
            purpose=self.definition.purpose,
            purpose_scope=self.definition.purpose_scope,
            success_criteria=self.definition.success_criteria,
            lifecycle=state.lifecycle,
            goals=goals,
            overall_progress=sum(g.progress for g in goals) / len(goals) if goals else 0.0,
            counters=state.counters,
            recent_memory=state.working_memory[-5:],
        )

    # -- events ----------------------------------------------------------------------------

    async def handle_event(self, event: EventEnvelope | Mapping[str, Any]) -> TurnResult:
        """One turn: wake, record the event, decide if it asks for a choice, record, sleep.

        Safe to repeat: a delivered-again event whose turn finished changes nothing but the
        duplicate counter; one whose earlier turn broke off part-way is finished, counted once.
        """
        if not isinstance(event, EventEnvelope):
            event = EventEnvelope.model_validate(event)
        store = self._require_store()
        if self.state.lifecycle not in (Lifecycle.SLEEPING, Lifecycle.AWAKE):
            raise InvalidTransitionError(self.state.lifecycle.value, Lifecycle.AWAKE.value)
        context = context_from_event(event)  # validate before anything is written

        if not await store.context.append_event(self.agent_id, event):
            stored = await store.context.get_event(self.agent_id, event.id)
            if stored.outcome is not None:
                await self._mutate(_count_duplicate)
                return TurnResult(event_id=event.id, duplicate=True, outcome=stored.outcome)

        decision, usage = (None, {}) if context is None else await self._decide(context)
        await self._mutate(lambda state, now: _complete_turn(state, event, decision, now, usage))
        outcome = _outcome(decision)
        await store.context.record_outcome(self.agent_id, event.id, outcome)
        return TurnResult(event_id=event.id, duplicate=False, decision=decision, outcome=outcome)

    # -- persistence -----------------------------------------------------------------------

    async def _mutate(self, change: Callable[[AgentState, Any], T | Awaitable[T]]) -> T:
        """Apply `change` to the latest stored state and save it; on a conflict, reload and redo."""
        registry = self._require_store().registry
        record = self._require_record()
        for _ in range(_SAVE_ATTEMPTS):
            state = record.state.model_copy(deep=True)
            result = change(state, utcnow())
            try:
                self._record = await registry.save(record.model_copy(update={"state": state}))
                return result  # type: ignore[return-value]
            except ConcurrencyError:
                record = await registry.get(self.agent_id)
        raise ConcurrencyError(
            f"agent '{self.agent_id}' kept changing under us ({_SAVE_ATTEMPTS} attempts); retry",
            field="agent_id",
        )

    def _require_store(self) -> AgentStore:
        if self._store is None:
            raise AOSError(f"agent '{self.agent_id}' is not initialized: await initialize() first")
        return self._store

    def _require_record(self) -> AgentRecord:
        if self._record is None:
            raise AOSError(f"agent '{self.agent_id}' is not initialized: await initialize() first")
        return self._record


def _ensure(state: AgentState, target: Lifecycle, now: Any) -> None:
    if state.lifecycle is not target and not (
        target is Lifecycle.SLEEPING and state.lifecycle is Lifecycle.AWAKE
    ):
        state.transition(target, now)


def _count_duplicate(state: AgentState, now: Any) -> None:
    state.counters.duplicates_dropped += 1
    state.updated_at = now


def _complete_turn(
    state: AgentState,
    event: EventEnvelope,
    decision: Decision | None,
    now: Any,
    usage: dict[str, int],
) -> None:
    """Wake, take in the event and its decision, sleep: one state change, applied once per event."""
    if state.has_processed(event.id):
        return  # an earlier attempt of this turn got this far
    state.transition(Lifecycle.AWAKE, now)
    state.record_event(event, now)
    if decision is not None:
        _count_decision(state, decision, now, usage)
    state.transition(Lifecycle.SLEEPING, now)


def _count_decision(
    state: AgentState, decision: Decision, now: Any, usage: dict[str, int] | None = None
) -> None:
    state.counters.decisions += 1
    state.counters.add_usage(usage)
    if decision.outcome == "act":
        state.counters.actions_taken += 1
        state.remember("decision", f"decided to {decision.chosen}", now)
    else:
        state.counters.actions_declined += 1
        state.remember("decision", f"declined: {decision.reasons[0]}", now)


def _outcome(decision: Decision | None) -> dict[str, Any]:
    if decision is None:
        return {"status": "observed", "reason": "the event asked for no decision"}
    return {
        "status": "decided",
        "decision_id": decision.decision_id,
        "outcome": decision.outcome,
        "chosen": decision.chosen,
        "score": next(
            (o.alignment.score for o in decision.options if o.action == decision.chosen), None
        ),
        "reasons": decision.reasons,
    }
