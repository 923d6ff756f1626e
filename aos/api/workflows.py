"""Admin API handlers for workflows: start one, read its status, answer an approval."""

from __future__ import annotations

from typing import Any

from aos.api.governance import audit_change
from aos.api.http import ApiRequest, ApiResponse, requires
from aos.errors import (
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from aos.governance.audit import GOVERNANCE_CHAIN
from aos.storage.store import AgentStore
from aos.workflows.multi import (
    APPROVAL_EVENT,
    WORKFLOWS,
    Approval,
    ApprovalRequest,
    json_text_value,
    orchestrator_name,
)


@requires("operator")
async def start(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    name = request.route("workflow")
    if name not in WORKFLOWS:
        raise NotFoundError(
            f"no workflow '{name}'; available: {', '.join(WORKFLOWS)}", field="workflow"
        )
    body = request.json(WORKFLOWS[name])
    agents = getattr(body, "agents", None) or [getattr(body, "agent_id", None)]
    for agent_id in filter(None, agents):
        await store.registry.get(agent_id)  # every named agent must exist
    instance_id = await client.start_new(
        orchestrator_name(name), None, body.model_dump(mode="json")
    )
    for agent_id in [a for a in agents if a] or [GOVERNANCE_CHAIN]:
        await audit_change(
            store,
            request,
            agent_id,
            "start_workflow",
            {"workflow": name, "instance_id": instance_id},
        )
    urls = client.create_http_management_payload(instance_id)
    return ApiResponse(
        202,
        {"id": instance_id, "workflow": name, **urls},
        {"Location": urls["statusQueryGetUri"]},
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
    await client.raise_event(instance_id, APPROVAL_EVENT, answer.model_dump(mode="json"))
    details = asked.details if isinstance(asked.details, dict) else {}
    await audit_change(
        store,
        request,
        details.get("agent_id") or GOVERNANCE_CHAIN,
        "answer_approval",
        {"instance_id": instance_id, "subject": asked.subject, **answer.model_dump(mode="json")},
    )
    return ApiResponse(202, {"id": instance_id, "sent": answer.model_dump(mode="json")})


def check_approver(caller: Any, approvers: list[str]) -> None:
    """When an approval names its approvers, a signed-in person must be one of them (by name or
    object id). Function keys carry no person: their holders are trusted as administrators."""
    if not approvers or caller is None or caller.kind == "key":
        return
    names = {value.lower() for value in (caller.name, caller.subject) if value}
    if not names & {approver.lower() for approver in approvers}:
        raise PermissionDeniedError(
            f"{caller.actor} is not among this approval's approvers ({', '.join(approvers)})",
            field="approvers",
        )
