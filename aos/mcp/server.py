"""An MCP server over ONE agent's persistent context: its definition, state, history and memories.

Everything is read from and written to storage on each call (the registry and the context store),
so any number of server instances (stdio processes, per-request HTTP handlers) see the same data,
and nothing is lost when one stops. Goal changes go through a `GoalWriter`: by default straight to
the registry row (ETag-checked, retried on conflict); the function app can plug in its own that
signals the agent's entity instead.

Resources (for agent `<id>`):

- `aos://agents/<id>/definition`  the definition, purpose first
- `aos://agents/<id>/state`       lifecycle, goals, counters, working memory
- `aos://agents/<id>/history`     newest events first; `history{?cursor,limit}` pages on
- `aos://agents/<id>/memories`    memories in id order; `memories{?cursor,limit}` pages on
- `aos://agents/<id>/memories/{memory_id}`

Tools: remember, recall, search_memories, add_goal, update_goal_progress, record_observation.
Prompt: system_prompt.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol, TypeVar, runtime_checkable

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import Field, StringConstraints, ValidationError

from aos.agents.models import (
    MAX_ITEM_LENGTH,
    AgentDefinition,
    Fraction,
    Goal,
    Slug,
    check_slug,
    utcnow,
)
from aos.agents.state import AgentState
from aos.errors import AOSError, ConcurrencyError, InvalidInputError, NotFoundError
from aos.storage.context import MAX_MEMORY_CHARS, Memory
from aos.storage.paging import MAX_PAGE_SIZE
from aos.storage.registry import AgentRecord, AgentRegistry
from aos.storage.store import AgentStore

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
MAX_SEARCH_RESULTS = 100
SAVE_ATTEMPTS = 5

Content = Annotated[str, StringConstraints(min_length=1, max_length=MAX_MEMORY_CHARS)]
Description = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ITEM_LENGTH)
]
Query = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Tags = Annotated[list[Slug], Field(max_length=16)]
Limit = Annotated[int, Field(ge=1, le=MAX_SEARCH_RESULTS)]


# -- goal writers --------------------------------------------------------------------------------


@runtime_checkable
class GoalWriter(Protocol):
    """Changes an agent's live goals. Each method returns the goal as a JSON-ready dict."""

    async def add_goal(
        self, agent_id: str, description: str, goal_id: str | None
    ) -> dict[str, Any]: ...

    async def update_goal_progress(
        self, agent_id: str, goal_id: str, progress: float
    ) -> dict[str, Any]: ...


class RegistryGoalWriter:
    """Goal changes written to the agent's registry row: read, change, save if unchanged, retry."""

    def __init__(self, registry: AgentRegistry, *, attempts: int = SAVE_ATTEMPTS) -> None:
        self._registry = registry
        self._attempts = attempts

    async def add_goal(
        self, agent_id: str, description: str, goal_id: str | None
    ) -> dict[str, Any]:
        goal = await self._mutate(
            agent_id, lambda state, now: state.add_goal(description, now, goal_id)
        )
        return goal.model_dump(mode="json")

    async def update_goal_progress(
        self, agent_id: str, goal_id: str, progress: float
    ) -> dict[str, Any]:
        goal = await self._mutate(
            agent_id, lambda state, now: state.update_goal_progress(goal_id, progress, now)
        )
        return goal.model_dump(mode="json")

    async def _mutate(self, agent_id: str, change: Callable[[AgentState, Any], Goal]) -> Goal:
        for _ in range(self._attempts):
            record = await self._registry.get(agent_id)
            goal = change(record.state, utcnow())
            try:
                await self._registry.save(record)
            except ConcurrencyError:
                continue
            return goal
        raise ConcurrencyError(
            f"agent '{agent_id}' kept changing while its goals were updated "
            f"({self._attempts} attempts); retry",
            field="agent_id",
        )


# -- the server ----------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "input"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _page_size(limit: str, default: int) -> int:
    if not limit:
        return default
    try:
        value = int(limit)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise MCPError(
            code=INVALID_PARAMS, message=f"limit must be an integer from 1 to {MAX_PAGE_SIZE}"
        )
    return value


def _next_uri(uri: str, continuation: str | None, limit: str) -> str | None:
    if continuation is None:
        return None
    return f"{uri}?cursor={continuation}" + (f"&limit={limit}" if limit else "")


class RecordReader(Protocol):
    """Where the server reads an agent's definition and live state (the registry by default;
    the function app reads the agent's entity)."""

    async def get(self, agent_id: str) -> AgentRecord: ...


ChangeRecorder = Callable[[str, dict[str, Any]], Awaitable[None]]


class ContextMCPServer:
    """The MCP server of one agent, backed by an `AgentStore`.

    `server.mcp` is the SDK `MCPServer`: hand it to `mcp.Client(...)` in-process, run it over
    stdio with `await server.run_stdio()`, or serve it over HTTP with `aos.mcp.http`.
    """

    def __init__(
        self,
        agent_id: str,
        store: AgentStore,
        goals: GoalWriter | None = None,
        *,
        records: RecordReader | None = None,
        on_change: ChangeRecorder | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        search_page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        try:
            check_slug(agent_id)
        except ValueError as exc:
            raise InvalidInputError(f"agent id '{agent_id}' {exc}", field="agent_id") from None
        self.agent_id = agent_id
        self.store = store
        self.goals: GoalWriter = goals or RegistryGoalWriter(store.registry)
        self.records: RecordReader = records or store.registry
        # Told of every change a tool made (its name and result), e.g. to audit it.
        self.on_change = on_change
        self.page_size = page_size
        self.search_page_size = search_page_size
        self.base_uri = f"aos://agents/{agent_id}"
        self.mcp: MCPServer = MCPServer(
            name=f"aos-agent-{agent_id}",
            title=f"AOS agent '{agent_id}'",
            instructions=(
                f"The persistent context of AOS agent '{agent_id}': read its definition, state, "
                "history and memories as resources; remember, recall and search memories, and "
                "manage its goals with tools; get its purpose-framed system prompt as a prompt."
            ),
        )
        self._register_resources()
        self._register_tools()
        self._register_prompts()

    async def run_stdio(self) -> None:
        await self.mcp.run_stdio_async()

    # -- storage access ----------------------------------------------------------------------

    def _unknown(self) -> str:
        return (
            f"agent '{self.agent_id}' is not registered in this AOS; register it first "
            "(or check the agent id)"
        )

    async def _record_or(self, error: Callable[[str], Exception]) -> AgentRecord:
        try:
            return await self.records.get(self.agent_id)
        except NotFoundError:
            raise error(self._unknown()) from None

    async def _for_resource(self) -> AgentRecord:
        return await self._record_or(ResourceNotFoundError)

    async def _for_tool(self) -> AgentRecord:
        return await self._record_or(ToolError)

    async def _tool_call(self, action: Callable[[], Any], change: str | None = None) -> Any:
        """Run a tool body, turning AOS and validation errors into clear tool errors. A tool
        that changes the agent names the `change`, reported to `on_change` once made."""
        await self._for_tool()
        try:
            result = await action()
            if change is not None and self.on_change is not None:
                await self.on_change(change, result)
            return result
        except ValidationError as exc:
            raise ToolError(_validation_message(exc)) from None
        except NotFoundError as exc:
            if exc.field == "agent_id":
                raise ToolError(self._unknown()) from None
            raise ToolError(exc.message) from None
        except AOSError as exc:
            raise ToolError(exc.message) from None

    # -- resources ---------------------------------------------------------------------------

    def _register_resources(self) -> None:
        base = self.base_uri
        mcp = self.mcp

        @mcp.resource(
            f"{base}/definition",
            name="definition",
            description="The agent's definition: purpose, scope, success criteria, constraints.",
            mime_type="application/json",
        )
        async def definition() -> str:
            record = await self._for_resource()
            return _json(_definition(record.definition))

        @mcp.resource(
            f"{base}/state",
            name="state",
            description="The agent's lifecycle, goals, counters and working memory.",
            mime_type="application/json",
        )
        async def state() -> str:
            record = await self._for_resource()
            return _json(_state(record))

        async def page_of(
            lister: Callable[..., Any], key: str, path: str, cursor: str, limit: str
        ) -> str:
            """One page of a listing as a resource, with the cursor and URI of the next."""
            await self._for_resource()
            try:
                page = await lister(
                    self.agent_id,
                    page_size=_page_size(limit, self.page_size),
                    continuation=cursor or None,
                )
            except InvalidInputError as exc:
                raise MCPError(code=INVALID_PARAMS, message=exc.message) from None
            return _json(
                {
                    "agent_id": self.agent_id,
                    key: [item.model_dump(mode="json") for item in page.items],
                    "next_cursor": page.continuation,
                    "next_uri": _next_uri(f"{base}/{path}", page.continuation, limit),
                }
            )

        async def history_page(cursor: str = "", limit: str = "") -> str:
            return await page_of(self.store.context.list_events, "events", "history", cursor, limit)

        async def memories_page(cursor: str = "", limit: str = "") -> str:
            lister = self.store.context.list_memories
            return await page_of(lister, "memories", "memories", cursor, limit)

        async def history() -> str:
            return await history_page()

        async def memories() -> str:
            return await memories_page()

        history_doc = "The agent's event history, newest first, a page at a time."
        memories_doc = "The agent's memories in id order (generated ids sort newest first)."
        for uri, fn, name, doc in (
            (f"{base}/history", history, "history", history_doc),
            (f"{base}/history{{?cursor,limit}}", history_page, "history_page", history_doc),
            (f"{base}/memories", memories, "memories", memories_doc),
            (f"{base}/memories{{?cursor,limit}}", memories_page, "memories_page", memories_doc),
        ):
            mcp.resource(uri, name=name, description=doc, mime_type="application/json")(fn)

        @mcp.resource(
            f"{base}/memories/{{memory_id}}",
            name="memory",
            description="One memory by id.",
            mime_type="application/json",
        )
        async def memory(memory_id: str) -> str:
            await self._for_resource()
            try:
                found = await self.store.context.get_memory(self.agent_id, memory_id)
            except NotFoundError as exc:
                raise ResourceNotFoundError(exc.message) from None
            return _json(found.model_dump(mode="json"))

    # -- tools -------------------------------------------------------------------------------

    def _register_tools(self) -> None:
        mcp = self.mcp
        agent_id = self.agent_id

        @mcp.tool(description="Store a memory for the agent; returns it with its id.")
        async def remember(
            content: Content,
            kind: Slug = "note",
            tags: Tags | None = None,
            memory_id: Slug | None = None,
        ) -> dict[str, Any]:
            async def act() -> dict[str, Any]:
                fields: dict[str, Any] = {"content": content, "kind": kind, "tags": tags or []}
                if memory_id is not None:
                    fields["memory_id"] = memory_id
                stored = await self.store.context.remember(agent_id, Memory(**fields))
                return stored.model_dump(mode="json")

            return await self._tool_call(act, "remember")

        @mcp.tool(description="Read one of the agent's memories by id.")
        async def recall(memory_id: Slug) -> dict[str, Any]:
            async def act() -> dict[str, Any]:
                found = await self.store.context.get_memory(agent_id, memory_id)
                return found.model_dump(mode="json")

            return await self._tool_call(act)

        @mcp.tool(
            description="Find the agent's memories containing every term of the query "
            "(case-insensitive; content, kind and tags are searched)."
        )
        async def search_memories(query: Query, limit: Limit = 10) -> dict[str, Any]:
            async def act() -> dict[str, Any]:
                matches, scanned = await self._search(query, limit)
                return {
                    "query": query,
                    "matches": [m.model_dump(mode="json") for m in matches],
                    "scanned": scanned,
                }

            return await self._tool_call(act)

        @mcp.tool(description="Give the agent a new goal; the same goal id twice is a no-op.")
        async def add_goal(description: Description, goal_id: Slug | None = None) -> dict[str, Any]:
            return await self._tool_call(
                lambda: self.goals.add_goal(agent_id, description, goal_id), "add_goal"
            )

        @mcp.tool(description="Set a goal's progress (0 to 1); at 1 the goal is completed.")
        async def update_goal_progress(goal_id: Slug, progress: Fraction) -> dict[str, Any]:
            return await self._tool_call(
                lambda: self.goals.update_goal_progress(agent_id, goal_id, progress),
                "update_goal_progress",
            )

        @mcp.tool(description="Record what the agent observed (a memory of kind 'observation').")
        async def record_observation(text: Content) -> dict[str, Any]:
            async def act() -> dict[str, Any]:
                memory = Memory(content=text, kind="observation")
                stored = await self.store.context.remember(agent_id, memory)
                return stored.model_dump(mode="json")

            return await self._tool_call(act, "record_observation")

    async def _search(self, query: str, limit: int) -> tuple[list[Memory], int]:
        terms = query.lower().split()
        matches: list[Memory] = []
        scanned = 0
        continuation: str | None = None
        while len(matches) < limit:
            page = await self.store.context.list_memories(
                self.agent_id, page_size=self.search_page_size, continuation=continuation
            )
            for memory in page.items:
                scanned += 1
                haystack = " ".join([memory.content, memory.kind, *memory.tags]).lower()
                if all(term in haystack for term in terms):
                    matches.append(memory)
                    if len(matches) >= limit:
                        break
            if page.continuation is None:
                break
            continuation = page.continuation
        return matches, scanned

    # -- prompts -----------------------------------------------------------------------------

    def _register_prompts(self) -> None:
        @self.mcp.prompt(
            name="system_prompt",
            description="The agent's purpose-framed system prompt: purpose, scope, success "
            "criteria, constraints and active goals.",
        )
        async def system_prompt() -> str:
            record = await self._record_or(
                lambda message: MCPError(code=INVALID_PARAMS, message=message)
            )
            return render_system_prompt(record)


def _definition(definition: AgentDefinition) -> dict[str, Any]:
    return {
        "agent_id": definition.agent_id,
        "purpose": definition.purpose,
        "definition": definition.model_dump(mode="json"),
    }


def _state(record: AgentRecord) -> dict[str, Any]:
    state = record.state
    return {
        "agent_id": record.agent_id,
        "lifecycle": state.lifecycle.value,
        "goals": [goal.model_dump(mode="json") for goal in state.goals],
        "active_goals": [goal.goal_id for goal in state.active_goals()],
        "counters": state.counters.model_dump(mode="json"),
        "working_memory": [item.model_dump(mode="json") for item in state.working_memory],
        "last_event_at": state.last_event_at and state.last_event_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def render_system_prompt(record: AgentRecord) -> str:
    """The agent's system prompt, framed by its purpose."""
    definition = record.definition
    lines = [
        f"You are AOS agent '{definition.agent_id}'"
        + (f", in the role '{definition.role}'" if definition.role else "")
        + ".",
        "",
        f"Purpose: {definition.purpose}",
    ]
    if definition.purpose_scope:
        lines.append(f"Scope: {definition.purpose_scope}")

    def section(title: str, items: list[str], empty: str) -> None:
        lines.extend(["", f"{title}:"])
        lines.extend(f"- {item}" for item in items) if items else lines.append(f"- {empty}")

    section("Success criteria", definition.success_criteria, "(none stated)")
    section("Constraints (never do these)", definition.constraints, "(none stated)")
    section(
        "Active goals",
        [
            f"{goal.description} [{goal.goal_id}, {round(goal.progress * 100)}% done]"
            for goal in record.state.active_goals()
        ],
        "(no active goals)",
    )
    lines.extend(
        [
            "",
            "Judge every action by how well it serves this purpose. Decline actions that break a "
            "constraint or fall outside the scope, and say why.",
        ]
    )
    return "\n".join(lines)
