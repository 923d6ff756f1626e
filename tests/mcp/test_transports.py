"""The context server over real transports (stdio subprocess, streamable HTTP) and restarts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from mcp import Client, StdioServerParameters

from aos.mcp import ContextMCPServer
from aos.mcp.http import handle_mcp_request
from aos.settings import Settings
from aos.storage.store import AgentStore

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {
    "remember",
    "recall",
    "search_memories",
    "add_goal",
    "update_goal_progress",
    "record_observation",
}


def stdio_params(settings: Settings, tmp_path: Path) -> StdioServerParameters:
    env = {
        **os.environ,
        "AzureWebJobsStorage": settings.get("AzureWebJobsStorage") or "",
        "AOS_STORAGE_PREFIX": settings.storage_prefix,
    }
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "aos.mcp", "--agent", "ceo", "--settings", str(tmp_path / "none.json")],
        env=env,
        cwd=str(ROOT),
    )


async def test_stdio_subprocess_remembers_across_processes(
    ceo: AgentStore, settings: Settings, tmp_path: Path
) -> None:
    async with Client(stdio_params(settings, tmp_path), cache=None) as c:
        assert {t.name for t in (await c.list_tools()).tools} == TOOLS
        result = await c.call_tool("remember", {"content": "from stdio", "memory_id": "s1"})
        assert not result.is_error, result.content
        read = await c.read_resource("aos://agents/ceo/memories/s1")
        assert json.loads(read.contents[0].text)["content"] == "from stdio"

    # A new process reads it back from Azurite.
    async with Client(stdio_params(settings, tmp_path), cache=None) as c:
        result = await c.call_tool("recall", {"memory_id": "s1"})
        assert result.structured_content["content"] == "from stdio"
    assert (await ceo.context.get_memory("ceo", "s1")).content == "from stdio"


def test_stdio_entry_point_rejects_bad_settings(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "AOS_STORAGE_PREFIX": "Bad-Prefix"}
    done = subprocess.run(
        [sys.executable, "-m", "aos.mcp", "--agent", "ceo", "--settings", str(tmp_path / "x")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "AOS_STORAGE_PREFIX" in done.stderr


@pytest.fixture
async def http_url(ceo: AgentStore) -> AsyncIterator[str]:
    """A tiny aiohttp app that serves each request through `handle_mcp_request`, with a fresh
    server per request, as an HTTP-triggered function would."""

    async def mcp_endpoint(request: web.Request) -> web.Response:
        server = ContextMCPServer(request.match_info["agent"], ceo)
        status, headers, body = await handle_mcp_request(
            server, request.method, dict(request.headers), await request.read()
        )
        headers.pop("content-length", None)
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_route("*", "/agents/{agent}/mcp", mcp_endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/agents"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_streamable_http_per_request(http_url: str, ceo: AgentStore, mode: str) -> None:
    async with Client(f"{http_url}/ceo/mcp", cache=None, mode=mode) as c:
        assert {t.name for t in (await c.list_tools()).tools} == TOOLS
        stored = await c.call_tool("remember", {"content": f"over http ({mode})", "tags": ["web"]})
        assert not stored.is_error, stored.content
        memory_id = stored.structured_content["memory_id"]
        read = await c.read_resource(f"aos://agents/ceo/memories/{memory_id}")
        assert json.loads(read.contents[0].text)["tags"] == ["web"]
        found = await c.call_tool("search_memories", {"query": f"HTTP ({mode})"})
        assert [m["memory_id"] for m in found.structured_content["matches"]] == [memory_id]
        prompt = await c.get_prompt("system_prompt")
        assert "Strategic oversight" in prompt.messages[0].content.text
        bad = await c.call_tool("update_goal_progress", {"goal_id": "g", "progress": 2})
        assert bad.is_error

    async with Client(f"{http_url}/ghost/mcp", cache=None, mode=mode) as c:
        result = await c.call_tool("recall", {"memory_id": "m"})
        assert result.is_error and "agent 'ghost' is not registered" in result.content[0].text


async def test_http_handler_refuses_long_lived_methods(ceo: AgentStore) -> None:
    server = ContextMCPServer("ceo", ceo)
    for method in ("GET", "DELETE"):
        status, headers, body = await handle_mcp_request(
            server, method, {"accept": "text/event-stream"}, b""
        )
        assert status == 405 and headers["allow"] == "POST"
        assert "stateless" in json.loads(body)["error"]["message"]


async def test_http_handler_answers_raw_json_rpc(ceo: AgentStore) -> None:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    status, headers, body = await handle_mcp_request(
        ContextMCPServer("ceo", ceo),
        "POST",
        {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
        json.dumps(request).encode(),
    )
    assert status == 200 and headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "aos-agent-ceo"


async def test_memories_survive_a_server_and_store_restart(
    ceo: AgentStore, settings: Settings
) -> None:
    async with Client(ContextMCPServer("ceo", ceo).mcp, cache=None) as c:
        result = await c.call_tool("remember", {"content": "keep me", "memory_id": "kept"})
        assert not result.is_error
        await c.call_tool("add_goal", {"description": "Outlast restarts", "goal_id": "last"})

    async with AgentStore.from_settings(settings) as fresh:
        server = ContextMCPServer("ceo", fresh)
        async with Client(server.mcp, cache=None) as c:
            result = await c.call_tool("recall", {"memory_id": "kept"})
            assert result.structured_content["content"] == "keep me"
            read = await c.read_resource("aos://agents/ceo/state")
            assert [g["goal_id"] for g in json.loads(read.contents[0].text)["goals"]] == ["last"]
