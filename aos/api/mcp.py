"""The MCP endpoint of each agent in the function app: `/api/agents/{agent_id}/mcp`.

Streamable HTTP in stateless JSON-response mode, one request per invocation, with the admin
API's auth. The agent's definition and live state come from its entity; goal changes are
signalled to the entity, so they take effect in the agent's own order of operations.
"""

from __future__ import annotations

from typing import Any

from aos.agents.entity import ENTITY_NAME
from aos.agents.models import utcnow
from aos.agents.state import load_state
from aos.api.governance import audit_change
from aos.api.http import ApiRequest, ApiResponse, requires
from aos.errors import NotFoundError
from aos.storage.registry import AgentRecord, AgentRegistry
from aos.storage.store import AgentStore


def _entity(agent_id: str) -> Any:
    import azure.durable_functions as df

    return df.EntityId(ENTITY_NAME, agent_id)


class EntityRecords:
    """Agent records whose definition and state are the entity's (the registry row for the
    rest), so MCP clients see the agent as it is now."""

    def __init__(self, client: Any, registry: AgentRegistry) -> None:
        self._client = client
        self._registry = registry

    async def get(self, agent_id: str) -> AgentRecord:
        record = await self._registry.get(agent_id)
        response = await self._client.read_entity_state(_entity(agent_id))
        if not response.entity_exists or response.entity_state is None:
            raise NotFoundError(f"agent '{agent_id}' does not exist", field="agent_id")
        entity = response.entity_state
        return record.model_copy(
            update={
                "definition": type(record.definition).model_validate(entity["definition"]),
                "state": load_state(entity["state"]),
            }
        )


class EntityGoalWriter:
    """Goal changes as entity signals (applied in order by the agent's entity)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def add_goal(self, agent_id: str, description: str, goal_id: str | None) -> dict:
        from uuid import uuid4

        goal_id = goal_id or f"g-{uuid4().hex[:12]}"
        payload = {"description": description, "goal_id": goal_id, "now": utcnow().isoformat()}
        await self._client.signal_entity(_entity(agent_id), "add_goal", payload)
        return {"goal_id": goal_id, "description": description, "status": "accepted"}

    async def update_goal_progress(self, agent_id: str, goal_id: str, progress: float) -> dict:
        payload = {"goal_id": goal_id, "progress": progress, "now": utcnow().isoformat()}
        await self._client.signal_entity(_entity(agent_id), "update_goal_progress", payload)
        return {"goal_id": goal_id, "progress": progress, "status": "accepted"}


@requires("operator")
async def serve(request: ApiRequest, client: Any, store: AgentStore) -> ApiResponse:
    from aos.mcp.http import handle_mcp_request
    from aos.mcp.server import ContextMCPServer

    agent_id = request.agent_id()

    async def audit_tool_change(tool: str, result: dict[str, Any]) -> None:
        # Ids and numbers only: memory contents stay in the context store.
        kept = {k: result[k] for k in ("memory_id", "kind", "goal_id", "progress") if k in result}
        await audit_change(store, request, agent_id, f"mcp_{tool}", kept)

    server = ContextMCPServer(
        agent_id,
        store,
        goals=EntityGoalWriter(client),
        records=EntityRecords(client, store.registry),
        on_change=audit_tool_change,
    )
    status, headers, body = await handle_mcp_request(
        server, request.method, request.headers, request.body
    )
    return ApiResponse(status, body, headers)
