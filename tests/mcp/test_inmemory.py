"""The context server through the SDK's own client, in-process."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from aos.agents.models import EventEnvelope
from aos.errors import InvalidInputError
from aos.mcp import ContextMCPServer
from aos.storage.context import Memory
from aos.storage.store import AgentStore

BASE = "aos://agents/ceo"


def client(server: ContextMCPServer) -> Client:
    return Client(server.mcp, cache=None, raise_exceptions=False)


async def read_json(c: Client, uri: str) -> Any:
    result = await c.read_resource(uri)
    return json.loads(result.contents[0].text)


async def call(c: Client, tool: str, **arguments: Any) -> Any:
    result = await c.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def call_error(c: Client, tool: str, **arguments: Any) -> str:
    result = await c.call_tool(tool, arguments)
    assert result.is_error
    return result.content[0].text


async def test_lists_resources_tools_and_prompts(ceo: AgentStore) -> None:
    async with client(ContextMCPServer("ceo", ceo)) as c:
        uris = {str(r.uri) for r in (await c.list_resources()).resources}
        assert {
            f"{BASE}/definition",
            f"{BASE}/state",
            f"{BASE}/history",
            f"{BASE}/memories",
        } <= uris
        templates = {t.uri_template for t in (await c.list_resource_templates()).resource_templates}
        assert f"{BASE}/memories/{{memory_id}}" in templates
        assert f"{BASE}/history{{?cursor,limit}}" in templates
        tools = {t.name for t in (await c.list_tools()).tools}
        assert tools == {
            "remember",
            "recall",
            "search_memories",
            "add_goal",
            "update_goal_progress",
            "record_observation",
        }
        assert [p.name for p in (await c.list_prompts()).prompts] == ["system_prompt"]


async def test_definition_and_state(ceo: AgentStore) -> None:
    async with client(ContextMCPServer("ceo", ceo)) as c:
        definition = await read_json(c, f"{BASE}/definition")
        assert definition["purpose"] == "Strategic oversight and company growth"
        assert definition["definition"]["constraints"]
        state = await read_json(c, f"{BASE}/state")
        assert state["lifecycle"] == "registered"
        assert state["goals"] == [] and state["counters"]["events_received"] == 0


async def test_memory_tools_round_trip_through_storage(ceo: AgentStore) -> None:
    async with client(ContextMCPServer("ceo", ceo)) as c:
        stored = await call(c, "remember", content="Q3 revenue up 12%", tags=["finance"])
        assert stored["kind"] == "note" and stored["tags"] == ["finance"]
        again = await call(c, "recall", memory_id=stored["memory_id"])
        assert again["content"] == "Q3 revenue up 12%"
        named = await call(c, "remember", content="board meets monthly", memory_id="board")
        assert named["memory_id"] == "board"
        observed = await call(c, "record_observation", text="Competitor cut prices")
        assert observed["kind"] == "observation"

        # Written to the store, not kept in the server.
        assert (await ceo.context.get_memory("ceo", "board")).content == "board meets monthly"
        one = await read_json(c, f"{BASE}/memories/board")
        assert one["content"] == "board meets monthly"
        listed = await read_json(c, f"{BASE}/memories")
        assert {m["memory_id"] for m in listed["memories"]} == {
            stored["memory_id"],
            "board",
            observed["memory_id"],
        }


async def test_search_pages_through_the_store(ceo: AgentStore) -> None:
    for i in range(7):
        content = f"Revenue note {i}" if i % 2 == 0 else f"Hiring plan {i}"
        await ceo.context.remember("ceo", Memory(memory_id=f"m{i}", content=content))
    server = ContextMCPServer("ceo", ceo, search_page_size=2)
    async with client(server) as c:
        found = await call(c, "search_memories", query="REVENUE note")
        assert [m["memory_id"] for m in found["matches"]] == ["m0", "m2", "m4", "m6"]
        assert found["scanned"] == 7
        limited = await call(c, "search_memories", query="hiring", limit=2)
        assert [m["memory_id"] for m in limited["matches"]] == ["m1", "m3"]
        assert limited["scanned"] == 4
        tagged = await call(c, "search_memories", query="note")  # kind is searched too
        assert len(tagged["matches"]) == 7
        none = await call(c, "search_memories", query="nothing like this")
        assert none["matches"] == []


async def test_memory_listing_pages_with_a_cursor(ceo: AgentStore) -> None:
    for i in range(5):
        await ceo.context.remember("ceo", Memory(memory_id=f"m{i}", content=f"memory {i}"))
    async with client(ContextMCPServer("ceo", ceo, page_size=2)) as c:
        seen: list[str] = []
        page = await read_json(c, f"{BASE}/memories")
        while True:
            seen += [m["memory_id"] for m in page["memories"]]
            if page["next_cursor"] is None:
                break
            assert len(page["memories"]) == 2
            page = await read_json(c, page["next_uri"])
        assert seen == ["m0", "m1", "m2", "m3", "m4"]
        bigger = await read_json(c, f"{BASE}/memories?limit=5")
        assert len(bigger["memories"]) == 5
        with pytest.raises(MCPError, match="limit"):
            await c.read_resource(f"{BASE}/memories?limit=500")
        with pytest.raises(MCPError, match="continuation"):
            await c.read_resource(f"{BASE}/memories?cursor=bogus")


async def test_history_newest_first_with_paging(ceo: AgentStore) -> None:
    for i in range(3):
        await ceo.context.append_event(
            "ceo", EventEnvelope(id=f"e{i}", source="/tests", type="test.event", data={"i": i})
        )
    async with client(ContextMCPServer("ceo", ceo, page_size=2)) as c:
        first = await read_json(c, f"{BASE}/history")
        assert [e["event"]["id"] for e in first["events"]] == ["e2", "e1"]
        rest = await read_json(c, first["next_uri"])
        assert [e["event"]["id"] for e in rest["events"]] == ["e0"]
        assert rest["next_cursor"] is None


async def test_goals_through_the_default_registry_writer(ceo: AgentStore) -> None:
    async with client(ContextMCPServer("ceo", ceo)) as c:
        goal = await call(c, "add_goal", description="Grow revenue 20%", goal_id="grow")
        assert goal["goal_id"] == "grow" and goal["status"] == "active"
        generated = await call(c, "add_goal", description="Hire a CFO")
        assert generated["goal_id"].startswith("g-")
        done = await call(c, "update_goal_progress", goal_id="grow", progress=1.0)
        assert done["status"] == "completed"
        state = await read_json(c, f"{BASE}/state")
        assert state["active_goals"] == [generated["goal_id"]]
        record = await ceo.registry.get("ceo")
        assert record.state.get_goal("grow").progress == 1.0

        prompt = await c.get_prompt("system_prompt")
        text = prompt.messages[0].content.text
        assert "Purpose: Strategic oversight and company growth" in text
        assert "Scope: Company-wide strategy" in text
        assert "- Revenue growth" in text
        assert "- Never share confidential financials externally" in text
        assert "Hire a CFO" in text and "Grow revenue" not in text  # only active goals


class RecordingGoals:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def add_goal(self, agent_id: str, description: str, goal_id: str | None) -> dict:
        self.calls.append(("add", agent_id, description, goal_id))
        return {"goal_id": goal_id or "x", "description": description}

    async def update_goal_progress(self, agent_id: str, goal_id: str, progress: float) -> dict:
        self.calls.append(("progress", agent_id, goal_id, progress))
        return {"goal_id": goal_id, "progress": progress}


async def test_goal_writer_is_injectable(ceo: AgentStore) -> None:
    goals = RecordingGoals()
    async with client(ContextMCPServer("ceo", ceo, goals=goals)) as c:
        await call(c, "add_goal", description="Enter Europe", goal_id="europe")
        await call(c, "update_goal_progress", goal_id="europe", progress=0.5)
    assert goals.calls == [
        ("add", "ceo", "Enter Europe", "europe"),
        ("progress", "ceo", "europe", 0.5),
    ]
    assert (await ceo.registry.get("ceo")).state.goals == []


async def test_bad_arguments_are_clear_tool_errors(ceo: AgentStore) -> None:
    async with client(ContextMCPServer("ceo", ceo)) as c:
        assert "content" in await call_error(c, "remember", content="")
        assert "lowercase slug" in await call_error(c, "remember", content="x", kind="Not A Slug")
        assert "memory_id" in await call_error(c, "recall", memory_id="../etc")
        assert "memory 'missing' of agent 'ceo' does not exist" in await call_error(
            c, "recall", memory_id="missing"
        )
        assert "progress" in await call_error(
            c, "update_goal_progress", goal_id="grow", progress=1.5
        )
        assert "has no goal 'nope'" in await call_error(
            c, "update_goal_progress", goal_id="nope", progress=0.5
        )
        assert "limit" in await call_error(c, "search_memories", query="x", limit=0)
        assert "query" in await call_error(c, "search_memories", query="   ")
        assert "description" in await call_error(c, "add_goal", description="")
        with pytest.raises(MCPError, match="memory 'missing' of agent 'ceo' does not exist"):
            await c.read_resource(f"{BASE}/memories/missing")


async def test_unknown_agent_fails_every_call_naming_it(store: AgentStore) -> None:
    async with client(ContextMCPServer("ghost", store)) as c:
        for tool, arguments in [
            ("remember", {"content": "x"}),
            ("recall", {"memory_id": "m"}),
            ("search_memories", {"query": "x"}),
            ("add_goal", {"description": "x"}),
            ("update_goal_progress", {"goal_id": "g", "progress": 0.1}),
            ("record_observation", {"text": "x"}),
        ]:
            assert "agent 'ghost' is not registered" in await call_error(c, tool, **arguments)
        for suffix in ["definition", "state", "history", "memories", "memories/m"]:
            with pytest.raises(MCPError, match="agent 'ghost' is not registered"):
                await c.read_resource(f"aos://agents/ghost/{suffix}")
        with pytest.raises(MCPError, match="agent 'ghost' is not registered"):
            await c.get_prompt("system_prompt")
    # Nothing was written for the unknown agent.
    assert (await store.context.list_memories("ghost")).items == []


def test_agent_id_must_be_a_slug(store: AgentStore) -> None:
    with pytest.raises(InvalidInputError, match="agent id"):
        ContextMCPServer("Not/An/Id", store)


async def test_limit_is_kept_in_next_uri(ceo: AgentStore) -> None:
    for i in range(3):
        await ceo.context.remember("ceo", Memory(memory_id=f"m{i}", content=f"memory {i}"))
    async with client(ContextMCPServer("ceo", ceo)) as c:
        first = await read_json(c, f"{BASE}/memories?limit=2")
        assert first["next_uri"].endswith("&limit=2") and len(first["memories"]) == 2
        rest = await read_json(c, first["next_uri"])
        assert [m["memory_id"] for m in rest["memories"]] == ["m2"]


async def test_registry_goal_writer_retries_on_etag_conflict(ceo: AgentStore) -> None:
    from aos.mcp import RegistryGoalWriter

    registry = ceo.registry
    real_save = registry.save
    conflicts = 0

    class Racing:
        async def get(self, agent_id: str):
            return await registry.get(agent_id)

        async def save(self, record):
            nonlocal conflicts
            if conflicts == 0:  # someone else writes between our read and our save
                conflicts += 1
                other = await registry.get("ceo")
                other.state.remember("note", "concurrent write", other.updated_at)
                await real_save(other)
            return await real_save(record)

    writer = RegistryGoalWriter(Racing())  # type: ignore[arg-type]
    goal = await writer.add_goal("ceo", "Survive a race", "race")
    assert goal["goal_id"] == "race" and conflicts == 1
    state = (await registry.get("ceo")).state
    assert state.find_goal("race") is not None
    assert state.working_memory[-1].text == "concurrent write"  # the other write was kept
