"""Admin API handlers for workflows: start one, read its status, answer an approval."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from aos.api.governance import audit_change
from aos.api.http import ApiRequest, ApiResponse, requires
from aos.errors import (
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from aos.governance.audit import GOVERNANCE_CHAIN
from aos.governance.auth import Role
from aos.storage.store import AgentStore
from aos.workflows.multi import (
    APPROVAL_EVENT,
    MAX_BY,
    WORKFLOWS,
    Approval,
    ApprovalRequest,
    json_text_value,
    named_agents,
    orchestrator_name,
)
from aos.workflows.turn import approval_instance_id


@requires("operator")
async def start(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    name = request.route("workflow")
    if name not in WORKFLOWS:
        raise NotFoundError(
            f"no workflow '{name}'; available: {', '.join(WORKFLOWS)}", field="workflow"
        )
    body = request.json(WORKFLOWS[name])
    agents = named_agents(body.model_dump())
    for agent_id in agents:
        await store.registry.get(agent_id)  # every named agent must exist
    instance_id = f"workflow-{uuid4().hex}"
    for chain in agents or [GOVERNANCE_CHAIN]:
        await audit_change(
            store, request, chain, "start_workflow", {"workflow": name, "instance_id": instance_id}
        )
    await client.start_new(orchestrator_name(name), instance_id, body.model_dump(mode="json"))
    # AOS's own status route, not the Durable management URLs: those carry the system key.
    status_uri = f"/api/workflows/{instance_id}"
    return ApiResponse(
        202,
        {"id": instance_id, "workflow": name, "status_uri": status_uri},
        {"Location": status_uri},
    )


def _status_body(status: Any) -> dict[str, Any]:
    return {
        "id": status.instance_id,
        "name": status.name,
        "runtime_status": status.runtime_status.value if status.runtime_status else None,
        "input": json_text_value(status.input_),
        "output": json_text_value(status.output),
        "custom_status": status.custom_status,
        "created_time": status.created_time,
        "last_updated_time": status.last_updated_time,
    }


async def _status(client: Any, instance_id: str) -> Any:
    """A workflow's status; other Durable instances (turns, entities) are not workflows."""
    status = await client.get_status(instance_id)
    if (
        status is None
        or status.runtime_status is None
        or not (status.name or "").startswith(orchestrator_name(""))
    ):
        raise NotFoundError(f"no workflow instance '{instance_id}'", field="instance_id")
    return status


@requires("reader")
async def get(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    status = await _status(client, request.route("instance_id"))
    return ApiResponse(200, _status_body(status))


@requires("operator")
async def approve(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    instance_id = request.route("instance_id")
    answer = request.json(Approval)
    status = await _status(client, instance_id)
    if status.name != orchestrator_name("approval"):
        raise InvalidInputError(
            f"instance '{instance_id}' is a {status.name}, not an approval workflow",
            field="instance_id",
        )
    runtime = status.runtime_status.value
    if runtime not in ("Running", "Pending"):
        raise InvalidTransitionError(runtime.lower(), "approved")
    asked = ApprovalRequest.model_validate(json_text_value(status.input_))
    check_approver(request.caller, asked.approvers)
    answer = answer.model_copy(update={"by": answerer(request.caller, answer)})
    chain = _approval_chain(instance_id, asked)
    await audit_change(
        store,
        request,
        chain,
        "answer_approval",
        {"instance_id": instance_id, "subject": asked.subject, **answer.model_dump(mode="json")},
    )
    await client.raise_event(instance_id, APPROVAL_EVENT, answer.model_dump(mode="json"))
    return ApiResponse(202, {"id": instance_id, "sent": answer.model_dump(mode="json")})


def _approval_chain(instance_id: str, asked: ApprovalRequest) -> str:
    """The agent's chain for a turn's approval (its instance id proves whose it is); the
    governance chain for one started by hand, whose details anyone could have written."""
    details = asked.details if isinstance(asked.details, dict) else {}
    agent_id, event_id = details.get("agent_id"), details.get("event_id")
    if (
        isinstance(agent_id, str)
        and isinstance(event_id, str)
        and instance_id == approval_instance_id(agent_id, event_id)
    ):
        return agent_id
    return GOVERNANCE_CHAIN


def answerer(caller: Any, answer: Approval) -> str:
    """Who answers, as recorded: a signed-in person as who they are, whatever the body says; a
    function key's holder by the name they give, marked as such (a key names no person)."""
    if caller is None or caller.kind == "key":
        return f"key:{answer.by}"[:MAX_BY]
    return (caller.username or caller.subject)[:MAX_BY]


def check_approver(caller: Any, approvers: list[str]) -> None:
    """When an approval names its approvers, only they may answer: a signed-in user by sign-in
    name (upn) or object id, never by display name; not an application acting as itself; a
    function key only with the admin role (a key names no person)."""
    if not approvers or caller is None:
        return
    if caller.kind == "key":
        if caller.role == Role.ADMIN:
            return
        allowed = False
    else:
        names = {value.lower() for value in (caller.username, caller.subject) if value}
        allowed = not caller.app_only and bool(names & {a.lower() for a in approvers})
    if not allowed:
        raise PermissionDeniedError(
            f"{caller.actor} is not among this approval's approvers ({', '.join(approvers)})",
            field="approvers",
        )
