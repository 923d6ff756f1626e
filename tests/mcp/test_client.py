"""The agents' MCP client: tool calls over stdio, timeouts and errors as results."""

from __future__ import annotations

import sys
from pathlib import Path

from aos.agents.models import McpServerRef, ToolCall
from aos.mcp.client import call_tool, call_tools
from aos.settings import Settings
from aos.storage.store import AgentStore

ROOT = Path(__file__).resolve().parents[2]


def stdio_server(settings: Settings, tmp_path: Path, **extra: object) -> McpServerRef:
    return McpServerRef(
        name="ceo-context",
        command=[sys.executable, "-m", "aos.mcp", "--agent", "ceo", "--settings",
                 str(tmp_path / "none.json")],
        env={
            "AzureWebJobsStorage": settings.get("AzureWebJobsStorage") or "",
            "AOS_STORAGE_PREFIX": settings.storage_prefix,
            "PYTHONPATH": str(ROOT),
        },
        **extra,
    )  # fmt: skip


async def test_tool_call_over_stdio(ceo: AgentStore, settings: Settings, tmp_path: Path) -> None:
    call = ToolCall(
        server="ceo-context", tool="remember", arguments={"content": "hi", "memory_id": "m1"}
    )
    result = await call_tool(stdio_server(settings, tmp_path), call)
    assert result.ok, result.error
    assert (await ceo.context.get_memory("ceo", "m1")).content == "hi"


async def test_tool_errors_and_timeouts_are_results(
    ceo: AgentStore, settings: Settings, tmp_path: Path
) -> None:
    server = stdio_server(settings, tmp_path)
    bad = await call_tool(server, ToolCall(server="ceo-context", tool="recall", arguments={}))
    assert bad.ok is False and bad.error

    slow = stdio_server(settings, tmp_path, timeout_seconds=0.01)
    timed_out = await call_tool(slow, ToolCall(server="ceo-context", tool="recall"))
    assert timed_out.ok is False
    assert "no answer within" in (timed_out.error or "")

    (unknown,) = await call_tools([server], [ToolCall(server="other", tool="x")])
    assert "lists no MCP server 'other'" in (unknown.error or "")
