"""The turn orchestration: one agent, one event at a time, in order.

The orchestration asks the agent's entity for the turn (`begin_turn`); the entity grants it for
the head of the agent's queue, or answers busy/idle/paused/done. The holder of the turn runs the
activities, commits the outcome, and carries on with the next queued event until the queue is
empty — so events are processed one at a time, in order, and no event waits for a delivery that
will not come. Every `TURNS_PER_EXECUTION` turns the orchestration continues as new, so its
history (replayed on every step) stays short however long the agent lives.

Before the agent acts, `turn_govern` checks the decision against the policies that bind the
agent (aos.governance). An action that needs a person's approval waits in the approval workflow
(`approval_instance_id`) while the turn holds the agent; later events queue behind it, in order.

Activity failures are retried (`TURN_RETRY`), then recorded as a failed turn: the event's outcome
says which step failed and why, and the agent goes on with its next event. When the agent's
model endpoint is down (its circuit is open), the decision step defers instead: the event stays
queued and the turn tries again after `DEFER_SECONDS`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from aos.agents.entity import ENTITY_NAME
from aos.observability.tracing import orchestration_step

ORCHESTRATOR = "agent_turn"
TURNS_PER_EXECUTION = 20
# Activity retries: 3 attempts, the first retry after 2 s (the SDK doubles nothing by itself).
TURN_RETRY_FIRST_INTERVAL_MS = 2000
TURN_RETRY_ATTEMPTS = 3
# How long a turn waits before trying again an event it had to defer (the model was down).
DEFER_SECONDS = 60


def turn_instance_id(agent_id: str, event_id: str) -> str:
    """Deterministic, so a redelivered event finds the turn it already started."""
    return f"turn-{agent_id}-{hashlib.sha256(event_id.encode()).hexdigest()[:24]}"


class TurnLostError(Exception):
    """Another turn took the agent over (after the lease): this one must not act."""


def approval_instance_id(agent_id: str, event_id: str) -> str:
    """The approval workflow a turn waits on: answer it at /api/workflows/{id}/approval."""
    return f"approval-{agent_id}-{hashlib.sha256(event_id.encode()).hexdigest()[:24]}"


def _retry() -> Any:
    import azure.durable_functions as df

    return df.RetryOptions(TURN_RETRY_FIRST_INTERVAL_MS, TURN_RETRY_ATTEMPTS)


def agent_turn(context: Any) -> Generator[Any, Any, Any]:
    import azure.durable_functions as df

    payload = context.get_input()
    agent_id = payload["agent_id"]
    entity = df.EntityId(ENTITY_NAME, agent_id)
    turns = payload.get("turns", 0)
    grant = payload.get("grant")
    if grant is None:
        event = payload.get("event")
        orchestration_step(context, "begin_turn", (event or {}).get("traceparent"))
        grant = yield context.call_entity(
            entity,
            "begin_turn",
            {
                "instance_id": context.instance_id,
                "event": event,
                "now": context.current_utc_datetime.isoformat(),
            },
        )
    while grant["status"] == "granted":
        outcome = yield from run_turn(context, agent_id, grant)
        summary = {
            "event_id": grant["event"]["id"],
            "instance_id": context.instance_id,
            "status": outcome["status"],
            "decision_outcome": outcome.get("outcome"),
            "chosen": outcome.get("chosen"),
            "failed_step": outcome.get("failed_step"),
            "error": outcome.get("error"),
            "usage": outcome.get("usage"),
            "counted": (outcome.get("policy") or {}).get("counted"),
            "reason": (outcome.get("policy") or {}).get("reason"),
            "now": context.current_utc_datetime.isoformat(),
        }
        orchestration_step(context, "commit_turn", grant["event"].get("traceparent"))
        grant = yield context.call_entity(entity, "commit_turn", summary)
        if grant["status"] == "deferred":
            # The event waits at the head of the queue; try again after a pause, as a fresh
            # execution (a delivery in the meantime may take the turn first: then this one ends).
            yield context.create_timer(
                context.current_utc_datetime + timedelta(seconds=DEFER_SECONDS)
            )
            context.continue_as_new({"agent_id": agent_id, "turns": turns})
            return None
        turns += 1
        context.set_custom_status({"agent_id": agent_id, "turns": turns, "last": summary})
        if grant["status"] == "granted" and turns % TURNS_PER_EXECUTION == 0:
            context.continue_as_new({"agent_id": agent_id, "grant": grant, "turns": turns})
            return None
    return {"agent_id": agent_id, "turns": turns, "ended": grant["status"]}


def run_turn(context: Any, agent_id: str, grant: dict[str, Any]) -> Generator[Any, Any, Any]:
    """The activities of one turn. Returns the outcome; never raises for an activity failure."""
    import azure.durable_functions as df

    event = grant["event"]
    traceparent = event.get("traceparent")
    retry = _retry()
    step = "turn_load_context"
    usage: dict[str, int] = {}
    outcome: dict[str, Any] = {}
    definition = grant["snapshot"]["definition"]
    try:
        orchestration_step(context, step, traceparent)
        recalled = yield context.call_activity_with_retry(
            step, retry, {"agent_id": agent_id, "event": event}
        )
        step = "turn_decide"
        orchestration_step(context, step, traceparent)
        made = yield context.call_activity_with_retry(
            step, retry, {"snapshot": grant["snapshot"], "event": event, "context": recalled}
        )
        usage = made["usage"]
        if made["defer"]:
            return {"status": "deferred", "error": made["defer"], "usage": usage}
        step = "turn_govern"
        orchestration_step(context, step, traceparent)
        verdict = yield context.call_activity_with_retry(
            step,
            retry,
            {
                "event": event,
                "decision": made["decision"],
                "snapshot": grant["snapshot"],
                "now": context.current_utc_datetime.isoformat(),
            },
        )
        if verdict["status"] == "approval_required":
            step = "approval"
            approval = yield from wait_for_approval(context, agent_id, event, verdict, made)
            # Judge again with the answer, the policies and the agent as they are now.
            step = "turn_govern"
            snapshot = yield context.call_entity(df.EntityId(ENTITY_NAME, agent_id), "snapshot")
            definition = snapshot["definition"]  # act with the MCP servers as they are now
            verdict = yield context.call_activity_with_retry(
                step,
                retry,
                {
                    "event": event,
                    "decision": made["decision"],
                    "snapshot": snapshot,
                    "now": context.current_utc_datetime.isoformat(),
                    "approval": approval,
                    "asked": verdict["approval"],
                },
            )
        step = "turn_act"
        orchestration_step(context, step, traceparent)
        outcome = yield context.call_activity_with_retry(
            step,
            retry,
            {
                "agent_id": agent_id,
                "event": event,
                "decision": made["decision"],
                "definition": definition,
                "verdict": verdict,
            },
        )
        outcome = {**outcome, "usage": usage}
        step = "turn_record"
        orchestration_step(context, step, traceparent)
        yield context.call_activity_with_retry(
            step, retry, {"agent_id": agent_id, "event": event, "outcome": outcome}
        )
        return outcome
    except TurnLostError as exc:
        # The event is another turn's now: record nothing for it (its commit from here is
        # ignored as stale).
        return {"status": "failed", "failed_step": step, "error": str(exc), "usage": usage}
    except Exception as exc:  # the activity failed every attempt
        acted = outcome if step == "turn_record" else {}
        outcome = {
            "status": "failed",
            "failed_step": step,
            "error": str(exc)[:1000],
            "usage": usage,  # what the model cost before the failure still counts
            "policy": {"counted": (acted.get("policy") or {}).get("counted")},  # and what ran
        }
        if step != "turn_record":
            # Best effort: the failure is committed to the entity whatever happens here.
            with contextlib.suppress(Exception):
                yield context.call_activity(
                    "turn_record", {"agent_id": agent_id, "event": event, "outcome": outcome}
                )
        return outcome


def wait_for_approval(
    context: Any, agent_id: str, event: dict[str, Any], verdict: dict[str, Any], made: dict
) -> Generator[Any, Any, Any]:
    """Route the decision into the approval workflow and wait for its answer. The entity holds
    the turn until the approval's deadline, so no later delivery takes it over meanwhile."""
    import azure.durable_functions as df

    needed = verdict["approval"]
    decision = made["decision"]
    approval_id = approval_instance_id(agent_id, event["id"])
    until = context.current_utc_datetime + timedelta(seconds=needed["timeout_seconds"] + 3600)
    hold = yield context.call_entity(
        df.EntityId(ENTITY_NAME, agent_id),
        "await_approval",
        {
            "instance_id": context.instance_id,
            "approval_id": approval_id,
            "until": until.isoformat(),
        },
    )
    if not hold["held"]:
        raise TurnLostError(f"turn {context.instance_id} no longer holds agent '{agent_id}'")
    context.set_custom_status({"agent_id": agent_id, "awaiting_approval": approval_id})
    answer = yield context.call_sub_orchestrator(
        "workflow_approval",
        {
            "subject": f"{agent_id}: {decision['chosen']}"[:500],
            "details": {
                "agent_id": agent_id,
                "event_id": event["id"],
                "decision_id": decision["decision_id"],
                "action": decision["chosen"],
                "rules": needed["rules"],
                "reason": verdict["reason"],
            },
            "approvers": needed["approvers"],
            "timeout_seconds": needed["timeout_seconds"],
        },
        approval_id,
    )
    return answer
