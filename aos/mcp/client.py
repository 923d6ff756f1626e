"""Calling tools on the MCP servers an agent's definition lists (its `mcp_servers`).

Used by the turn's action step: a chosen option's `tool_calls` are made with the SDK's client,
over streamable HTTP (`url`) or stdio (`command`), each within the server's timeout. A failure
(unknown server, timeout, connection error, a tool error) is an outcome, not an exception, so it
is recorded with the turn instead of failing it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel

from aos.agents.models import McpServerRef, ToolCall

MAX_RESULT_CHARS = 2000


class ToolResult(BaseModel):
    server: str
    tool: str
    ok: bool
    content: str = ""
    error: str | None = None


def _target(server: McpServerRef) -> Any:
    if server.url is not None:
        return server.url
    from mcp import StdioServerParameters

    assert server.command is not None
    return StdioServerParameters(
        command=server.command[0], args=server.command[1:], env={**os.environ, **server.env}
    )


def _text(result: Any) -> str:
    parts = [getattr(block, "text", "") for block in getattr(result, "content", None) or []]
    text = "\n".join(p for p in parts if p)
    return text if len(text) <= MAX_RESULT_CHARS else text[: MAX_RESULT_CHARS - 1] + "…"


async def call_tool(server: McpServerRef, call: ToolCall) -> ToolResult:
    from mcp import Client

    async def run() -> ToolResult:
        async with Client(_target(server), cache=None) as client:
            result = await client.call_tool(call.tool, call.arguments)
        if getattr(result, "is_error", False):
            return ToolResult(server=server.name, tool=call.tool, ok=False, error=_text(result))
        return ToolResult(server=server.name, tool=call.tool, ok=True, content=_text(result))

    try:
        return await asyncio.wait_for(run(), server.timeout_seconds)
    except TimeoutError:
        error = f"no answer within {server.timeout_seconds:g}s"
    except Exception as exc:  # any transport or protocol failure is the call's outcome
        error = f"{type(exc).__name__}: {exc}"[:MAX_RESULT_CHARS]
    return ToolResult(server=server.name, tool=call.tool, ok=False, error=error)


async def call_tools(servers: list[McpServerRef], calls: list[ToolCall]) -> list[ToolResult]:
    """Make each call in order (an action's calls may depend on each other)."""
    by_name = {server.name: server for server in servers}
    results = []
    for call in calls:
        server = by_name.get(call.server)
        if server is None:
            known = ", ".join(sorted(by_name)) or "none"
            results.append(
                ToolResult(
                    server=call.server,
                    tool=call.tool,
                    ok=False,
                    error=f"the agent lists no MCP server '{call.server}' (it lists: {known})",
                )
            )
            continue
        results.append(await call_tool(server, call))
    return results
