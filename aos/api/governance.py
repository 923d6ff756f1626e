"""Admin API handlers for governance: policies, audit chains and their verification, and the one
helper every handler uses to put an admin change in the audit trail."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import uuid4

from pydantic import BaseModel

from aos.api.http import ApiRequest, ApiResponse, page_response, requires
from aos.errors import InvalidInputError
from aos.governance.audit import GOVERNANCE_CHAIN
from aos.governance.policy import Policy
from aos.storage.store import AgentStore


async def audit_change(
    store: AgentStore, request: ApiRequest, chain: str, operation: str, data: dict[str, Any]
) -> None:
    """Record an admin change by the authenticated caller in `chain` (an agent's, or the
    governance chain). Handlers call it once the request is validated and before the change is
    made, so no change escapes the chain (one that then fails leaves its attempt there). Every
    request is recorded, a client's retry too: the client's request id is kept in the record,
    not trusted to merge records (anyone can reuse one)."""
    await store.audit.append(
        chain,
        "admin",
        actor=request.actor,
        key=f"admin/{uuid4().hex}/{operation}",
        data={"operation": operation, "request_id": request.request_id, **data},
        correlation_id=request.correlation_id,
    )


def fingerprint(document: BaseModel) -> str:
    """The SHA-256 of a document as stored: the chain records this rather than the document,
    which may be large or hold values (an MCP server's env) that do not belong in an audit log."""
    return hashlib.sha256(document.model_dump_json().encode()).hexdigest()


@requires("reader")
async def list_policies(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    page = await store.policies.list(
        **request.paging(),
    )
    return page_response(page)


@requires("reader")
async def get_policy(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    policy = await store.policies.get(request.slug("name"))
    return ApiResponse(200, policy.model_dump(mode="json"))


@requires("admin")
async def put_policy(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    name = request.slug("name")
    policy = request.json(Policy)
    if policy.name != name:
        raise InvalidInputError(
            f"name in the body ('{policy.name}') must match the URL ('{name}')", field="name"
        )
    created = not await store.policies.exists(policy.name)
    await audit_change(
        store,
        request,
        GOVERNANCE_CHAIN,
        "create_policy" if created else "replace_policy",
        {
            "name": policy.name,
            "roles": policy.roles,
            "default": policy.default,
            "rules": [f"{rule.rule_id}:{rule.effect}" for rule in policy.rules],
            "sha256": fingerprint(policy),
        },
    )
    await store.policies.put(policy)
    return ApiResponse(201 if created else 200, policy.model_dump(mode="json"))


@requires("admin")
async def delete_policy(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    name = request.slug("name")
    await store.policies.get(name)  # 404 for an unknown policy, before anything is recorded
    await audit_change(store, request, GOVERNANCE_CHAIN, "delete_policy", {"name": name})
    await store.policies.delete(name)
    return ApiResponse(204)


def _chain(request: ApiRequest) -> str:
    return request.agent_id() if "agent_id" in request.route_params else GOVERNANCE_CHAIN


@requires("reader")
async def audit_records(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    """An audit chain, oldest record first: an agent's, or the governance chain."""
    page = await store.audit.list(
        _chain(request),
        **request.paging(),
    )
    return page_response(page)


@requires("reader")
async def verify_audit(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    """Walk a chain and report the first broken link (200 either way: the report is the answer)."""
    report = await store.audit.verify(_chain(request))
    return ApiResponse(200, report.model_dump(mode="json"))
