"""The OpenAPI 3.1 document of the HTTP routes, served at /api/openapi.json.

The route table below is the one description of the API; a test checks it against the
functions the app actually indexes, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aos import __version__
from aos.agents.models import AgentDefinition, EventEnvelope
from aos.api.agents import GoalProgress, NewGoal, RegisterAgent
from aos.governance.policy import Policy
from aos.workflows.multi import WORKFLOWS, Approval


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    status: int
    body: type[BaseModel] | None = None
    auth: bool = True
    paged: bool = False
    role: str = "reader"  # the least role that may call it (see aos.governance.auth)


AGENT = "/api/agents/{agent_id}"

ROUTES = (
    Route("post", "/api/agents", "register_agent", "Register an agent", 201, RegisterAgent,
          role="admin"),
    Route("get", "/api/agents", "list_agents", "List agents (paged)", 200, paged=True),
    Route("get", AGENT, "get_agent", "Read an agent's live state", 200),
    Route("put", AGENT, "update_agent", "Replace a definition", 200, AgentDefinition,
          role="admin"),
    Route("post", f"{AGENT}/pause", "pause_agent", "Pause an agent", 202, role="operator"),
    Route("post", f"{AGENT}/resume", "resume_agent", "Resume an agent", 202, role="operator"),
    Route("post", f"{AGENT}/retire", "retire_agent", "Retire an agent", 202, role="admin"),
    Route("post", f"{AGENT}/events", "post_event", "Send an event", 202, EventEnvelope,
          role="operator"),
    Route("post", f"{AGENT}/goals", "add_goal", "Add a goal", 202, NewGoal, role="operator"),
    Route("get", f"{AGENT}/goals", "list_goals", "List goals", 200),
    Route(
        "put", f"{AGENT}/goals/{{goal_id}}", "update_goal", "Set progress", 202,
        GoalProgress, role="operator",
    ),
    Route("get", f"{AGENT}/history", "agent_history", "Event history", 200, paged=True),
    Route("get", f"{AGENT}/memories", "agent_memories", "Memories", 200, paged=True),
    Route("post", f"{AGENT}/mcp", "agent_mcp", "MCP: streamable HTTP, JSON responses", 200,
          role="operator"),
    Route("get", f"{AGENT}/mcp", "agent_mcp", "MCP: no SSE stream here (405)", 405,
          role="operator"),
    Route("delete", f"{AGENT}/mcp", "agent_mcp", "MCP: no sessions here (405)", 405,
          role="operator"),
    Route("post", "/api/workflows/{workflow}", "start_workflow", "Start a workflow", 202,
          role="operator"),
    Route("get", "/api/workflows/{instance_id}", "workflow_status", "Workflow status", 200),
    Route(
        "post", "/api/workflows/{instance_id}/approval", "send_approval", "Answer an approval",
        202, Approval, role="operator",
    ),
    Route("get", "/api/policies", "list_policies", "List policies (paged)", 200, paged=True),
    Route("get", "/api/policies/{name}", "get_policy", "Read a policy", 200),
    Route("put", "/api/policies/{name}", "put_policy", "Create or replace a policy", 200, Policy,
          role="admin"),
    Route("delete", "/api/policies/{name}", "delete_policy", "Delete a policy", 204, role="admin"),
    Route("get", f"{AGENT}/audit", "agent_audit", "An agent's audit chain", 200, paged=True),
    Route("get", f"{AGENT}/audit/verify", "verify_agent_audit", "Verify an agent's chain", 200),
    Route(
        "get", "/api/governance/audit", "governance_audit", "The policy changes' chain (paged)",
        200, paged=True,
    ),
    Route(
        "get", "/api/governance/audit/verify", "verify_governance_audit",
        "Verify the policy changes' chain", 200,
    ),
    Route("get", "/api/health", "health", "Health of the app and its storage", 200, auth=False),
    Route("get", "/api/openapi.json", "openapi", "This document", 200, auth=False),
)  # fmt: skip

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}


def _parameters(route: Route) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in route.path.split("/") if part.startswith("{")]
    params = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]
    if route.paged:
        params += [
            {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            {"name": "continuation", "in": "query", "schema": {"type": "string"}},
        ]
    return params


def build() -> dict[str, Any]:
    models = {r.body for r in ROUTES if r.body} | set(WORKFLOWS.values())
    _, schemas = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    shared = {
        r.operation_id for r in ROUTES if sum(o.operation_id == r.operation_id for o in ROUTES) > 1
    }
    for route in ROUTES:
        operation_id = route.operation_id
        if operation_id in shared and route.method != "post":  # operation ids must be unique
            operation_id = f"{operation_id}_{route.method}"
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": route.summary,
            "description": f"Needs the {route.role} role or higher."
            if route.auth
            else "Anonymous.",
            "parameters": _parameters(route),
            "responses": {
                str(route.status): {"description": "success"},
                "401": {"description": "no credentials, or ones that are not valid"},
                "403": {"description": "the caller's role does not allow this route"},
                "4XX": {
                    "description": "the request was refused; the error names the field",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
        if route.operation_id == "start_workflow":
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": f"#/components/schemas/{m.__name__}"}
                                for m in WORKFLOWS.values()
                            ]
                        }
                    }
                },
            }
        elif route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}
                    }
                },
            }
        if route.auth:
            operation["x-aos-role"] = route.role
        else:
            operation["security"] = []
        paths.setdefault(route.path, {})[route.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "AOS admin API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {**schemas.get("$defs", {}), "Error": _ERROR},
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "entraId": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        # AOS_ADMIN_AUTH picks one: function keys (the default) or Entra ID bearer tokens.
        "security": [{"functionKey": []}, {"entraId": []}],
    }


@cache
def document() -> str:
    return json.dumps(build())
