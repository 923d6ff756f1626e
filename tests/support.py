"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from aos.devhost.durable import DurableEngine, ManagementApi


@functools.cache
def app_functions() -> dict[str, func.FunctionBuilder]:
    """The app's functions, indexed once as the host does (indexing twice reports duplicates)."""
    from function_app import app

    return {f.get_function_name(): f for f in app.get_functions()}


# Agent definitions the function-app and end-to-end tests share.
CEO = {
    "agent_id": "ceo",
    "purpose": "Strategic oversight and company growth",
    "purpose_scope": "Strategic planning, major decisions",
    "success_criteria": ["Revenue growth", "Team expansion"],
    "constraints": ["Never disclose customer data"],
    "subscriptions": ["board.request"],
}
CFO = {
    "agent_id": "cfo",
    "purpose": "Keep the company financially healthy and costs under control",
    "purpose_scope": "Budgets, forecasts, spending approvals",
    "success_criteria": ["Costs within budget"],
    "subscriptions": ["finance.*"],
}
CTO = {
    "agent_id": "cto",
    "purpose": "Build reliable technology that supports company growth",
    "purpose_scope": "Engineering, platform, hiring engineers",
    "success_criteria": ["Platform reliability", "Team expansion"],
}


# The function app driven through the Durable Functions SDK's handlers (see the `app` fixture).


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class App:
    engine: DurableEngine
    api: ManagementApi

    async def call(
        self,
        function: str,
        method: str,
        path: str,
        body: Any = None,
        route: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Reply:
        request = func.HttpRequest(
            method=method,
            url=f"http://localhost:7071/api/{path}",
            route_params=route or {},
            params=params or {},
            # The host checked this key before the function runs (function auth level).
            headers={"x-functions-key": "host-checked-key", **(headers or {})},
            body=raw
            if raw is not None
            else (json.dumps(body).encode() if body is not None else b""),
        )
        handler = app_functions()[function].get_user_function()
        response = await handler(req=request, client=self.api.client_binding_json())
        text = response.get_body()
        return Reply(response.status_code, _decoded(text), dict(response.headers))

    async def register(
        self, definition: dict, goals: list | None = None, headers: dict | None = None
    ) -> Reply:
        return await self.call(
            "register_agent",
            "POST",
            "agents",
            {"definition": definition, "goals": goals or []},
            headers=headers,
        )

    async def agent(self, agent_id: str) -> dict:
        reply = await self.call(
            "get_agent", "GET", f"agents/{agent_id}", route={"agent_id": agent_id}
        )
        assert reply.status == 200, reply.body
        return reply.body

    async def post_event(self, agent_id: str, event: dict) -> Reply:
        return await self.call(
            "post_event", "POST", f"agents/{agent_id}/events", event, route={"agent_id": agent_id}
        )

    async def settle(self) -> None:
        await self.engine.wait_until_idle(timeout=30)


def _decoded(text: bytes) -> Any:
    """A reply's JSON body; a body that is not JSON (an MCP error, say) as text."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text.decode(errors="replace")


def board_request(event_id: str, **data: Any) -> dict:
    options = data.pop("options", ["Order pizza", "Draft a strategic plan to grow revenue"])
    return {
        "id": event_id,
        "source": "/board",
        "type": "board.request",
        "data": {"situation": "Budget approved", "options": options, **data},
    }
