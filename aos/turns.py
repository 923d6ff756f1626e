"""The slow parts of an agent's turn, each run as an activity: context retrieval, the decision,
acting on it (messages to other agents), and writing the event and outcome to the context store.

Every step is safe to retry: the decision is a pure function of its input, message ids derive
from the agent and event, and the context store drops a second append of the same event.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
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
from aos.agents.state import Lifecycle
from aos.errors import AOSError
from aos.governance.audit import agent_actor
from aos.governance.policy import Verdict, evaluate, resolve_approval
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


class PolicyViolationError(AOSError):
    """An attempt to act without a verdict that allows exactly these actions."""

    code = "policy_violation"


def correlation(event: EventEnvelope) -> str:
    return event.correlationid or event.id


async def govern(
    store: AgentStore,
    snapshot: Snapshot,
    event: EventEnvelope,
    decision: Decision | None,
    now: datetime,
    approval: dict[str, Any] | None = None,
    asked: dict[str, Any] | None = None,
) -> Verdict:
    """The policy check before any action: the verdict of the policies binding the agent on
    what the decision would do. The decision, and a denial or approval request, go to the
    agent's audit chain.

    After an approval wait the turn asks again, with the person's `approval` answer to what was
    `asked` and a fresh snapshot: policies that now deny the action or want other approvals, or
    an agent paused or retired meanwhile, win over the answer; otherwise the answer decides.
    """
    agent_id = snapshot.definition.agent_id
    with span("activity turn_govern", event.traceparent, {"aos.agent_id": agent_id}):
        policies = await store.policies.binding(snapshot.definition)
        verdict = evaluate(policies, decision, snapshot.policy_usage, now.date())
        if decision is None:
            return verdict
        audit = TurnAudit(store, agent_id, event)
        if approval is not None:
            verdict = _still_covered(verdict, asked or {}, snapshot.lifecycle)
            return await _settle_approval(audit, verdict, approval)
        summary = {**decision.summary(), "policies": verdict.policies}
        await audit.record("decision", "decision", summary)
        if verdict.status == "denied":
            await audit.record("denial", "denial", _denial(verdict))
        elif verdict.status == "approval_required":
            assert verdict.approval is not None
            await audit.record(
                "approval",
                "approval-requested",
                {"status": "requested", "reason": verdict.reason, **verdict.approval.model_dump()},
            )
        return verdict


def _still_covered(verdict: Verdict, asked: dict[str, Any], lifecycle: Lifecycle) -> Verdict:
    """The fresh verdict, denied if the approval given no longer covers the action: the agent
    was paused or retired meanwhile, or other rules or approvers now have a say."""
    reason = None
    if lifecycle in (Lifecycle.PAUSED, Lifecycle.RETIRED):
        reason = f"the agent was {lifecycle.value} while the approval was pending"
    elif verdict.approval is not None and (
        not set(verdict.approval.rules) <= set(asked.get("rules", []))
        or not set(verdict.approval.approvers) <= set(asked.get("approvers", []))
    ):
        reason = (
            f"the approval no longer covers the action: while it was pending the rules came "
            f"to require {', '.join(verdict.approval.rules)}; ask again with a new event"
        )
    if reason is None:
        return verdict
    return verdict.model_copy(update={"status": "denied", "reason": reason, "counted": {}})


async def _settle_approval(audit: TurnAudit, verdict: Verdict, approval: dict[str, Any]) -> Verdict:
    verdict = resolve_approval(verdict, approval)
    by = approval.get("by")
    await audit.record(
        "approval",
        "approval-answered",
        {"status": verdict.status, "answer": approval.get("status"), "reason": verdict.reason},
        actor=f"approver:{by}" if by else None,
    )
    if not verdict.executable:
        await audit.record("denial", "denial-after-approval", _denial(verdict))
    return verdict


def _denial(verdict: Verdict) -> dict[str, Any]:
    return {
        "rule": verdict.rule,
        "reason": verdict.reason,
        "action": verdict.action.model_dump() if verdict.action else None,
        "status": verdict.status,
    }


class TurnAudit:
    """Appends a turn's records to the agent's chain; keys derive from the event, so a retried
    activity finds its records already there."""

    def __init__(self, store: AgentStore, agent_id: str, event: EventEnvelope) -> None:
        self._store, self._agent_id, self._event = store, agent_id, event

    async def record(
        self, kind: str, name: str, data: dict[str, Any], actor: str | None = None
    ) -> None:
        await self._store.audit.append(
            self._agent_id,
            kind,
            actor=actor or agent_actor(self._agent_id),
            key=f"turn/{self._event.id}/{name}",
            data={"event_id": self._event.id, **data},
            correlation_id=correlation(self._event),
        )


async def act(
    settings: Settings,
    store: AgentStore,
    agent_id: Slug,
    event: EventEnvelope,
    decision: Decision | None,
    definition: AgentDefinition,
    verdict: Verdict,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Carry out the decision as far as `verdict` allows: nothing when it refuses; else publish
    its messages to other agents and make its MCP tool calls, each recorded in the audit chain
    first. Returns the message ids and the tool results (a failed call is a result)."""
    from aos.mcp.client import call_tools
    from aos.messaging.publisher import publisher_from_settings

    if decision is None or decision.outcome != "act" or not verdict.executable:
        return [], []
    if not verdict.permits(decision):
        raise PolicyViolationError(
            f"agent '{agent_id}' may not act on decision {decision.decision_id}: "
            f"the policy verdict is '{verdict.status}' ({verdict.reason})",
            field="verdict",
        )
    with span("activity turn_act", event.traceparent, {"aos.agent_id": agent_id}):
        # Each effect is recorded just before it is made (keyed, so a retry records nothing
        # twice): a failure to record stops the turn before anything happens, not after.
        audit = TurnAudit(store, agent_id, event)
        messages = outgoing_messages(agent_id, event, decision, current_traceparent())
        for message in messages:
            data = {"kind": "message", "type": message.type, "to": message.subject}
            await audit.record("action", f"message/{message.id}", {**data, "id": message.id})
        for index, call in enumerate(decision.tool_calls):
            data = {"kind": "tool", "server": call.server, "tool": call.tool}
            await audit.record("action", f"tool/{index}", data)
        await audit.record(
            "action",
            "option",
            {"kind": "option", "action": decision.chosen, "cost": decision.cost},
        )
        if messages:
            async with publisher_from_settings(settings, store.clients) as publisher:
                await publisher.publish(settings.messages_topic, messages)
        tools = []
        if decision.tool_calls:
            results = await call_tools(definition.mcp_servers, decision.tool_calls)
            tools = [result.model_dump() for result in results]
        return [m.id for m in messages], tools


def turn_outcome(
    decision: Decision | None,
    sent: list[str],
    failure: tuple[str, str] | None = None,
    tools: list[dict[str, Any]] | None = None,
    verdict: Verdict | None = None,
) -> dict[str, Any]:
    """The outcome stored with the event (and summarised for the entity). An action the policy
    check or a person refused has the outcome `denied`, with the verdict's reason."""
    if failure is not None:
        step, error = failure
        return {"status": "failed", "failed_step": step, "error": error}
    if decision is None:
        return {"status": "observed", "reason": "the event asked for no decision"}
    chosen = next((o for o in decision.options if o.action == decision.chosen), None)
    denied = verdict is not None and decision.outcome == "act" and not verdict.executable
    outcome = {
        "status": "decided",
        "decision_id": decision.decision_id,
        "outcome": "denied" if denied else decision.outcome,
        "chosen": decision.chosen,
        "score": chosen.alignment.score if chosen else None,
        "method": decision.method,
        "reasons": decision.reasons,
        "messages_sent": sent,
        "tool_results": tools or [],
    }
    if verdict is not None:
        outcome["policy"] = {
            "verdict": verdict.status,
            "reason": verdict.reason,
            "rule": verdict.rule,
            "counted": {ref: used.model_dump() for ref, used in verdict.counted.items()}
            if verdict.executable
            else {},
        }
    return outcome


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


async def decide_task(
    store: AgentStore, snapshot: dict[str, Any], task: dict[str, Any], workflow: str, step: int
) -> Decision:
    """An agent's decision on a workflow's task, its id derived from the workflow and step. It
    goes to the agent's audit chain once, however often the activity is retried."""
    state = Snapshot.model_validate(snapshot)
    agent_id = state.definition.agent_id
    with span("activity agent_decide", None, {"aos.agent_id": agent_id}):
        decision = decide(
            state.definition,
            state.goals,
            DecisionContext.model_validate(task),
            DeterministicAlignmentScorer(),
            decision_id_for(agent_id, f"{workflow}/{step}"),  # the same on a retry
        )
        await store.audit.append(
            agent_id,
            "decision",
            actor=agent_actor(agent_id),
            key=f"workflow/{workflow}/{step}/decision",
            data={"workflow": workflow, **decision.summary()},
            correlation_id=workflow,
        )
        return decision
