"""Admin API handlers for agents: register, list, read, update, lifecycle, events, goals,
history and memories.

The registry (Table) answers listings and guards registration; the agent's entity holds its live
state and is changed only through its operations (signals).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from pydantic import Field

from aos.agents.entity import ENTITY_NAME
from aos.agents.models import (
    AgentDefinition,
    EventEnvelope,
    Fraction,
    Item,
    Model,
    Slug,
    utcnow,
)
from aos.agents.state import MAX_GOALS, AgentState, Lifecycle
from aos.api.governance import audit_change, fingerprint
from aos.api.http import ApiRequest, ApiResponse, page_response, requires
from aos.delivery import deliver, ensure_turn
from aos.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
)
from aos.storage.store import AgentStore


class NewGoal(Model):
    description: Item
    goal_id: Slug | None = None


class GoalProgress(Model):
    progress: Fraction


class RegisterAgent(Model):
    definition: AgentDefinition
    goals: list[NewGoal] = Field(default_factory=list, max_length=20)


def _entity(agent_id: str) -> Any:
    import azure.durable_functions as df

    return df.EntityId(ENTITY_NAME, agent_id)


async def _entity_state(client: Any, agent_id: str) -> dict[str, Any]:
    response = await client.read_entity_state(_entity(agent_id))
    if not response.entity_exists or response.entity_state is None:
        raise NotFoundError(f"agent '{agent_id}' does not exist", field="agent_id")
    return response.entity_state


def _definition_record(definition: AgentDefinition) -> dict[str, Any]:
    return {
        "role": definition.role,
        "policies": definition.policies,
        "sha256": fingerprint(definition),
    }


def _summary(definition: AgentDefinition, lifecycle: str) -> dict[str, Any]:
    return {
        "agent_id": definition.agent_id,
        "purpose": definition.purpose,
        "role": definition.role,
        "lifecycle": lifecycle,
    }


@requires("admin")
async def register(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    body = request.json(RegisterAgent)
    agent_id = body.definition.agent_id
    if await store.registry.exists(agent_id):  # 409 before anything is recorded
        raise AlreadyExistsError(f"agent '{agent_id}' already exists", field="agent_id")
    await audit_change(store, request, agent_id, "register", _definition_record(body.definition))
    state = AgentState(agent_id=agent_id)
    state.transition(Lifecycle.SLEEPING, utcnow())
    await store.registry.register(body.definition, state)  # 409 if it was taken meanwhile
    try:
        await client.signal_entity(
            _entity(agent_id),
            "register",
            {
                "definition": body.definition.model_dump(mode="json"),
                "goals": [g.model_dump(mode="json") for g in body.goals],
                "now": utcnow().isoformat(),
            },
        )
    except BaseException:
        await store.registry.delete(agent_id)  # nothing half written
        raise
    return ApiResponse(
        201,
        {"agent": _summary(body.definition, "sleeping")},
        {"Location": f"/api/agents/{agent_id}"},
    )


@requires("reader")
async def list_agents(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    lifecycle = request.params.get("lifecycle")
    if lifecycle is not None and lifecycle not in Lifecycle.__members__.values():
        raise InvalidInputError(
            f"lifecycle must be one of {', '.join(Lifecycle)}, not {lifecycle!r}",
            field="lifecycle",
        )
    page = await store.registry.list(
        **request.paging(),
        lifecycle=Lifecycle(lifecycle) if lifecycle else None,
    )
    return ApiResponse(
        200,
        {
            "items": [_summary(r.definition, r.state.lifecycle.value) for r in page.items],
            "continuation": page.continuation,
        },
    )


@requires("reader")
async def get_agent(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    agent_id = request.agent_id()
    entity = await _entity_state(client, agent_id)
    state = entity["state"]
    return ApiResponse(
        200,
        {
            "definition": entity["definition"],
            "lifecycle": state["lifecycle"],
            "goals": state["goals"],
            "counters": state["counters"],
            "working_memory": state["working_memory"],
            "last_event_at": state.get("last_event_at"),
            "pending_events": [p["event"]["id"] for p in entity["queue"]],
            "active_turn": entity.get("turn"),
            "turns_failed": entity.get("turns_failed", 0),
            "last_failure": entity.get("last_failure"),
            "policy_usage": entity.get("policy_usage"),
        },
    )


@requires("admin")
async def update_agent(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    agent_id = request.agent_id()
    definition = request.json(AgentDefinition)
    if definition.agent_id != agent_id:
        raise InvalidInputError(
            f"agent_id in the body ('{definition.agent_id}') must match the URL ('{agent_id}')",
            field="agent_id",
        )
    record = await store.registry.get(agent_id)
    if_match = request.headers.get("if-match")
    if if_match and if_match.strip('"') != (record.etag or "").strip('"'):
        from aos.errors import ConcurrencyError

        raise ConcurrencyError(
            f"agent '{agent_id}' changed since the ETag you sent; read it again", field="If-Match"
        )
    await audit_change(
        store, request, agent_id, "update_definition", _definition_record(definition)
    )
    saved = await store.registry.save(record.model_copy(update={"definition": definition}))
    await client.signal_entity(
        _entity(agent_id),
        "update_definition",
        {
            "definition": definition.model_dump(mode="json"),
            "revision": saved.updated_at.isoformat(),  # the registry's order of updates
        },
    )
    return ApiResponse(
        200,
        {"agent": _summary(definition, saved.state.lifecycle.value)},
        {"ETag": saved.etag or ""},
    )


@requires("operator")
async def pause_or_resume(
    request: ApiRequest, client: Any, store: AgentStore, target: Lifecycle
) -> ApiResponse:
    return await change_lifecycle(request, client, store, target)


@requires("admin")
async def retire(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    """Retiring is for good, so it takes an admin."""
    return await change_lifecycle(request, client, store, Lifecycle.RETIRED)


async def change_lifecycle(
    request: ApiRequest, client: Any, store: AgentStore, target: Lifecycle
) -> ApiResponse:
    """pause / resume / retire: checked against the current state, then signalled."""
    agent_id = request.agent_id()
    entity = await _entity_state(client, agent_id)
    current = Lifecycle(entity["state"]["lifecycle"])
    operation = {Lifecycle.PAUSED: "pause", Lifecycle.SLEEPING: "resume"}.get(target, "retire")
    mid_turn_resume = target is Lifecycle.SLEEPING and current is Lifecycle.AWAKE
    if current is not target and not mid_turn_resume:
        probe = AgentState(agent_id=agent_id, lifecycle=current)
        if not probe.can_transition(target):
            raise InvalidTransitionError(current.value, target.value)
    await audit_change(store, request, agent_id, operation, {"from": current.value})
    # The registry's copy (for listing by lifecycle) first: if it cannot be written, nothing is.
    await _record_lifecycle(store, agent_id, target)
    await client.signal_entity(_entity(agent_id), operation, {"now": utcnow().isoformat()})
    body: dict[str, Any] = {"agent_id": agent_id, "lifecycle": target.value}
    if target is Lifecycle.SLEEPING and entity["queue"]:
        body["drain"] = (await ensure_turn(client, agent_id, None)).model_dump()
    return ApiResponse(202, body)


async def _record_lifecycle(store: AgentStore, agent_id: str, target: Lifecycle) -> None:
    """Set the registry's lifecycle (its coarse copy: paused, sleeping, retired), re-reading on
    a concurrent change."""
    from aos.errors import ConcurrencyError

    for _ in range(5):
        record = await store.registry.get(agent_id)
        record.state.lifecycle = target
        try:
            await store.registry.save(record)
            return
        except ConcurrencyError:
            continue
    raise ConcurrencyError(f"agent '{agent_id}' kept changing; retry", field="agent_id")


@requires("operator")
async def post_event(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    agent_id = request.agent_id()
    event = request.json(EventEnvelope)
    if event.subject is not None and event.subject != agent_id:
        raise InvalidInputError(
            f"subject '{event.subject}' names another agent than the URL ('{agent_id}')",
            field="subject",
        )
    await store.registry.get(agent_id)  # 404 for an unknown agent, before anything is written
    event = event.model_copy(update={"subject": agent_id})
    await audit_change(
        store, request, agent_id, "post_event", {"event_id": event.id, "type": event.type}
    )
    (delivery,) = await deliver(client, store, event, only=agent_id)
    return ApiResponse(
        202,
        {
            "event_id": event.id,
            "agent_id": agent_id,
            "turn": delivery.model_dump(),
            "history_uri": f"/api/agents/{agent_id}/history",
        },
    )


@requires("operator")
async def add_goal(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    agent_id = request.agent_id()
    goal = request.json(NewGoal)
    state = (await _entity_state(client, agent_id))["state"]
    if state["lifecycle"] == Lifecycle.RETIRED:
        raise InvalidTransitionError(Lifecycle.RETIRED.value, "a new goal")
    if len(state["goals"]) >= MAX_GOALS:
        raise AlreadyExistsError(
            f"agent '{agent_id}' already has {MAX_GOALS} goals, the most it may hold",
            field="goals",
        )
    goal_id = goal.goal_id or f"g-{uuid4().hex[:12]}"
    await audit_change(
        store, request, agent_id, "add_goal", {"goal_id": goal_id, "description": goal.description}
    )
    await client.signal_entity(
        _entity(agent_id),
        "add_goal",
        {"description": goal.description, "goal_id": goal_id, "now": utcnow().isoformat()},
    )
    return ApiResponse(
        202, {"goal_id": goal_id, "description": goal.description, "agent_id": agent_id}
    )


@requires("operator")
async def update_goal(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    agent_id = request.agent_id()
    change = request.json(GoalProgress)
    goal_id = request.slug("goal_id")
    entity = await _entity_state(client, agent_id)
    if not any(g["goal_id"] == goal_id for g in entity["state"]["goals"]):
        raise NotFoundError(f"agent '{agent_id}' has no goal '{goal_id}'", field="goal_id")
    await audit_change(
        store, request, agent_id, "update_goal", {"goal_id": goal_id, "progress": change.progress}
    )
    await client.signal_entity(
        _entity(agent_id),
        "update_goal_progress",
        {"goal_id": goal_id, "progress": change.progress, "now": utcnow().isoformat()},
    )
    return ApiResponse(202, {"goal_id": goal_id, "progress": change.progress})


@requires("reader")
async def list_goals(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    agent_id = request.agent_id()
    entity = await _entity_state(client, agent_id)
    return ApiResponse(200, {"items": entity["state"]["goals"]})


@requires("reader")
async def history(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    agent_id = request.agent_id()
    await store.registry.get(agent_id)
    page = await store.context.list_events(
        agent_id,
        **request.paging(),
    )
    return page_response(page)


@requires("reader")
async def memories(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    agent_id = request.agent_id()
    await store.registry.get(agent_id)
    page = await store.context.list_memories(
        agent_id,
        **request.paging(),
    )
    return page_response(page)
