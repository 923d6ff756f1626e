"""The agent as a Durable Entity, its turn orchestration, and the turn's activities."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

bp = df.Blueprint()


@bp.entity_trigger(context_name="context", entity_name="agent")
def agent(context: df.DurableEntityContext) -> None:
    from aos.agents.entity import apply_operation

    state, result = apply_operation(
        context.get_state(lambda: None),
        context.operation_name,
        context.get_input(),
        context.entity_key,
    )
    context.set_state(state)
    context.set_result(result)


@bp.orchestration_trigger(context_name="context", orchestration="agent_turn")
def agent_turn(context: df.DurableOrchestrationContext):
    from aos.workflows.turn import agent_turn as run

    return (yield from run(context))


@bp.activity_trigger(input_name="payload", activity="turn_load_context")
async def turn_load_context(payload: dict[str, Any]) -> dict[str, Any]:
    from aos.runtime import agent_store
    from aos.turns import load_context

    event = payload["event"]
    recalled = await load_context(agent_store(), payload["agent_id"], event.get("traceparent"))
    return recalled.model_dump(mode="json")


@bp.activity_trigger(input_name="payload", activity="turn_decide")
async def turn_decide(payload: dict[str, Any]) -> dict[str, Any]:
    from aos.agents.entity import Snapshot
    from aos.runtime import agent_store, settings
    from aos.turns import TurnContext, decide_turn, full_event

    store = agent_store()
    snapshot = Snapshot.model_validate(payload["snapshot"])
    event = await full_event(store, snapshot.definition.agent_id, payload["event"])
    recalled = TurnContext.model_validate(payload["context"]) if payload.get("context") else None
    made = await decide_turn(settings(), store, snapshot, event, recalled)
    return made.model_dump(mode="json")


@bp.activity_trigger(input_name="payload", activity="turn_govern")
async def turn_govern(payload: dict[str, Any]) -> dict[str, Any]:
    from datetime import datetime

    from aos.agents.entity import Snapshot
    from aos.agents.models import Decision, EventEnvelope
    from aos.runtime import agent_store
    from aos.turns import govern

    raw = payload.get("decision")
    verdict = await govern(
        agent_store(),
        Snapshot.model_validate(payload["snapshot"]),
        EventEnvelope.model_validate(payload["event"]),
        Decision.model_validate(raw) if raw else None,
        datetime.fromisoformat(payload["now"]),
        payload.get("approval"),
        payload.get("asked"),
    )
    return verdict.model_dump(mode="json")


@bp.activity_trigger(input_name="payload", activity="turn_act")
async def turn_act(payload: dict[str, Any]) -> dict[str, Any]:
    from aos.agents.models import AgentDefinition, Decision, EventEnvelope
    from aos.governance.policy import Verdict
    from aos.runtime import agent_store, settings
    from aos.turns import act, turn_outcome

    raw = payload.get("decision")
    decision = Decision.model_validate(raw) if raw else None
    verdict = Verdict.model_validate(payload["verdict"])
    sent, tools = await act(
        settings(),
        agent_store(),
        payload["agent_id"],
        EventEnvelope.model_validate(payload["event"]),
        decision,
        AgentDefinition.model_validate(payload["definition"]),
        verdict,
    )
    return turn_outcome(decision, sent, tools=tools, verdict=verdict)


@bp.activity_trigger(input_name="payload", activity="turn_record")
async def turn_record(payload: dict[str, Any]) -> None:
    from aos.runtime import agent_store
    from aos.turns import full_event, record_turn

    store = agent_store()
    event = await full_event(store, payload["agent_id"], payload["event"])
    await record_turn(store, payload["agent_id"], event, payload["outcome"])


@bp.activity_trigger(input_name="payload", activity="agent_decide")
async def agent_decide(payload: dict[str, Any]) -> dict[str, Any]:
    from aos.runtime import agent_store
    from aos.turns import decide_task

    decision = await decide_task(
        agent_store(),
        payload["snapshot"],
        payload["task"],
        payload["workflow"],
        payload.get("step", 0),
    )
    return decision.model_dump(mode="json")
