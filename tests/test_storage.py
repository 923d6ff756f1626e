"""Registry and context store round trips against a real Azurite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aos.agents.models import AgentDefinition, EventEnvelope
from aos.agents.state import AgentState, Lifecycle
from aos.errors import AlreadyExistsError, ConcurrencyError, InvalidInputError, NotFoundError
from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.context import ContextStore, Memory
from aos.storage.registry import AgentRegistry
from aos.storage.tables import MAX_INLINE_CHARS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def definition(agent_id: str = "ceo") -> AgentDefinition:
    return AgentDefinition(
        agent_id=agent_id,
        purpose="Strategic oversight and company growth",
        success_criteria=["Revenue growth"],
    )


def event(event_id: str, data: object = None) -> EventEnvelope:
    return EventEnvelope(id=event_id, source="/tests", type="test.event", data=data)


@pytest.fixture
def registry(clients: StorageClients, settings: Settings) -> AgentRegistry:
    return AgentRegistry(clients, settings)


@pytest.fixture
def context(clients: StorageClients, settings: Settings) -> ContextStore:
    return ContextStore(clients, settings)


async def test_register_and_read_back(registry: AgentRegistry) -> None:
    state = AgentState(agent_id="ceo")
    state.add_goal("Increase revenue by 50%", T0, goal_id="revenue")
    created = await registry.register(definition(), state)

    read = await registry.get("ceo")

    assert read.definition == definition()
    assert read.state.goals[0].goal_id == "revenue"
    assert read.state.lifecycle is Lifecycle.REGISTERED
    assert read.etag == created.etag


async def test_registering_twice_is_refused(registry: AgentRegistry) -> None:
    await registry.register(definition())
    with pytest.raises(AlreadyExistsError) as raised:
        await registry.register(definition())
    assert raised.value.field == "agent_id"


async def test_unknown_agent_is_not_found(registry: AgentRegistry) -> None:
    with pytest.raises(NotFoundError, match="agent 'ghost'"):
        await registry.get("ghost")


async def test_stale_etag_is_a_conflict_and_writes_nothing(registry: AgentRegistry) -> None:
    await registry.register(definition())
    first, second = await registry.get("ceo"), await registry.get("ceo")
    first.state.transition(Lifecycle.SLEEPING, T0)
    await registry.save(first)

    second.state.transition(Lifecycle.RETIRED, T0)
    with pytest.raises(ConcurrencyError):
        await registry.save(second)
    assert (await registry.get("ceo")).state.lifecycle is Lifecycle.SLEEPING


async def test_large_state_round_trips_across_property_chunks(registry: AgentRegistry) -> None:
    state = AgentState(agent_id="ceo")
    for n in range(100):
        state.add_goal(f"goal {n} " + "x" * 480, T0, goal_id=f"g{n}")
    await registry.register(definition(), state)

    assert (await registry.get("ceo")).state == state


async def test_list_pages_through_every_agent(registry: AgentRegistry) -> None:
    ids = [f"agent-{n:02d}" for n in range(7)]
    for agent_id in ids:
        await registry.register(definition(agent_id))

    seen, token, pages = [], None, 0
    while True:
        page = await registry.list(page_size=3, continuation=token)
        seen += [record.agent_id for record in page.items]
        pages += 1
        token = page.continuation
        if token is None:
            break

    assert seen == ids
    assert pages >= 3


async def test_list_filters_by_lifecycle(registry: AgentRegistry) -> None:
    await registry.register(definition("a"))
    record = await registry.register(definition("b"))
    record.state.transition(Lifecycle.SLEEPING, T0)
    await registry.save(record)

    page = await registry.list(lifecycle=Lifecycle.SLEEPING)
    assert [r.agent_id for r in page.items] == ["b"]


async def test_foreign_or_forged_continuation_is_refused(registry: AgentRegistry) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await registry.list(continuation="bm90LWEtdG9rZW4")
    assert raised.value.field == "continuation"


async def test_bad_page_size_is_refused(registry: AgentRegistry) -> None:
    with pytest.raises(InvalidInputError) as raised:
        await registry.list(page_size=0)
    assert raised.value.field == "page_size"


async def test_events_are_appended_once_per_id(context: ContextStore) -> None:
    assert await context.append_event("ceo", event("e-1", {"n": 1})) is True
    assert await context.append_event("ceo", event("e-1", {"n": 2})) is False

    stored = await context.get_event("ceo", "e-1")
    assert stored.event.data == {"n": 1}
    page = await context.list_events("ceo")
    assert [s.event.id for s in page.items] == ["e-1"]


async def test_history_is_newest_first_and_paged(context: ContextStore) -> None:
    for n in range(5):
        await context.append_event("ceo", event(f"e/{n}#?"), T0 + timedelta(seconds=n))

    first = await context.list_events("ceo", page_size=2)
    second = await context.list_events("ceo", page_size=2, continuation=first.continuation)
    third = await context.list_events("ceo", page_size=2, continuation=second.continuation)

    ids = [s.event.id for page in (first, second, third) for s in page.items]
    assert ids == [f"e/{n}#?" for n in (4, 3, 2, 1, 0)]
    assert third.continuation is None


async def test_histories_of_agents_are_separate(context: ContextStore) -> None:
    await context.append_event("ceo", event("shared-id"))
    assert await context.append_event("cfo", event("shared-id")) is True
    assert (await context.list_events("cto")).items == []
    other = await context.list_events("ceo", page_size=1)
    with pytest.raises(InvalidInputError):
        await context.list_events("cfo", continuation=other.continuation or "x")


async def test_large_event_body_goes_to_a_blob(
    context: ContextStore, clients: StorageClients
) -> None:
    big = {"text": "y" * (MAX_INLINE_CHARS + 10)}
    await context.append_event("ceo", event("big", big))

    assert (await context.get_event("ceo", "big")).event.data == big
    container = clients.blobs().get_container_client(context._bodies.name)
    assert [b.name async for b in container.list_blobs()] != []


async def test_duplicate_large_event_leaves_no_orphan_blob(
    context: ContextStore, clients: StorageClients
) -> None:
    big = {"text": "z" * (MAX_INLINE_CHARS + 10)}
    await context.append_event("ceo", event("big", big))
    assert await context.append_event("ceo", event("big", big)) is False

    container = clients.blobs().get_container_client(context._bodies.name)
    assert len([b async for b in container.list_blobs()]) == 1


async def test_outcome_is_attached_to_the_event(context: ContextStore) -> None:
    await context.append_event("ceo", event("e-1"))
    await context.record_outcome("ceo", "e-1", {"decision": "act", "chosen": "plan"})
    await context.record_outcome("ceo", "e-1", {"decision": "act", "chosen": "plan"})

    assert (await context.get_event("ceo", "e-1")).outcome == {"decision": "act", "chosen": "plan"}


async def test_outcome_for_unknown_event_is_not_found(context: ContextStore) -> None:
    with pytest.raises(NotFoundError):
        await context.record_outcome("ceo", "nope", {})


async def test_memories_round_trip_replace_and_forget(context: ContextStore) -> None:
    await context.remember("ceo", Memory(memory_id="board", content="Board meets monthly"))
    await context.remember(
        "ceo", Memory(memory_id="board", content="Board meets weekly", tags=["governance"])
    )
    big = Memory(memory_id="report", content="r" * (MAX_INLINE_CHARS + 1))
    await context.remember("ceo", big)

    assert (await context.get_memory("ceo", "board")).content == "Board meets weekly"
    assert (await context.get_memory("ceo", "report")).content == big.content
    page = await context.list_memories("ceo", page_size=1)
    rest = await context.list_memories("ceo", page_size=1, continuation=page.continuation)
    assert [m.memory_id for m in page.items + rest.items] == ["board", "report"]

    await context.forget("ceo", "report")
    with pytest.raises(NotFoundError):
        await context.get_memory("ceo", "report")


async def test_failed_index_write_leaves_no_blob_behind(
    context: ContextStore, clients: StorageClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.core.exceptions import ServiceRequestError
    from azure.data.tables.aio import TableClient

    async def storage_down(self: TableClient, *args: object, **kwargs: object) -> None:
        raise ServiceRequestError("connection reset")

    big = {"text": "q" * (MAX_INLINE_CHARS + 10)}
    monkeypatch.setattr(TableClient, "submit_transaction", storage_down)
    with pytest.raises(ServiceRequestError):
        await context.append_event("ceo", event("big", big))
    monkeypatch.undo()

    container = clients.blobs().get_container_client(context._bodies.name)
    assert [b.name async for b in container.list_blobs()] == []
    assert (await context.list_events("ceo")).items == []
    assert await context.append_event("ceo", event("big", big)) is True


async def test_a_later_outcome_replaces_an_earlier_one_of_any_size(
    context: ContextStore, clients: StorageClients
) -> None:
    await context.append_event("ceo", event("e-1"))
    large = {"notes": "n" * (MAX_INLINE_CHARS + 10)}
    await context.record_outcome("ceo", "e-1", {"status": "small"})
    await context.record_outcome("ceo", "e-1", large)
    assert (await context.get_event("ceo", "e-1")).outcome == large
    await context.record_outcome("ceo", "e-1", large)  # a retry: still one blob
    await context.record_outcome("ceo", "e-1", {"status": "small again"})

    assert (await context.get_event("ceo", "e-1")).outcome == {"status": "small again"}
    container = clients.blobs().get_container_client(context._bodies.name)
    assert [b.name async for b in container.list_blobs()] == []
