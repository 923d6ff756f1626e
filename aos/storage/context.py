"""The context store: each agent's event history and memories, kept for as long as it lives.

Tables hold the index (partition = agent id, so one agent's context is one partition and a
crafted id cannot reach another's); bodies too large for a Table property go to a blob, which is
written first and removed again if the index write fails, so a failed write leaves nothing behind.

Events: two rows per event, written in one transaction — `e_<key>` finds an event by id (and
makes a second append of the same id fail, which is how duplicates are dropped), `t_<time>_<key>`
orders the history newest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import uuid4

from pydantic import BaseModel, Field, StringConstraints

from aos.agents.models import AwareDatetime, EventEnvelope, Model, Slug, utcnow
from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.paging import Page, query_page
from aos.storage.tables import MAX_INLINE_CHARS, TableSet, dumps, storage_errors

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

MAX_MEMORY_CHARS = 1024 * 1024
_MAX_MICROS = 10**17 - 1


def _key(identifier: str) -> str:
    """A Table-safe, fixed-length key for any id (ids may hold '/', '#', '?' and the like)."""
    return hashlib.sha256(identifier.encode()).hexdigest()[:40]


def _newest_first(at: datetime) -> str:
    return f"{_MAX_MICROS - int(at.timestamp() * 1_000_000):017d}"


class StoredEvent(BaseModel):
    agent_id: str
    event: EventEnvelope
    recorded_at: datetime
    outcome: dict[str, Any] | None = None


class Memory(Model):
    """Something an agent keeps: a fact, an observation, a summary. Addressed by `memory_id`."""

    memory_id: Slug = Field(
        default_factory=lambda: f"m-{_newest_first(utcnow())}-{uuid4().hex[:6]}"
    )
    content: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MEMORY_CHARS)]
    kind: Slug = "note"
    tags: list[Slug] = Field(default_factory=list, max_length=16)
    created_at: AwareDatetime = Field(default_factory=utcnow)


class _Bodies:
    """Large text bodies in one blob container, created on first use."""

    def __init__(self, clients: StorageClients, container: str) -> None:
        self._clients = clients
        self.name = container
        self._lock = asyncio.Lock()
        self._ready = False

    async def _container(self) -> ContainerClient:
        container = self._clients.blobs().get_container_client(self.name)
        if not self._ready:
            from azure.core.exceptions import ResourceExistsError

            async with self._lock:
                if not self._ready:
                    with contextlib.suppress(ResourceExistsError):
                        await container.create_container()
                    self._ready = True
        return container

    async def store(self, prop: str, text: str, blob_name: str) -> dict[str, str]:
        """Entity properties for a body: inline when small, else a reference to a new blob."""
        if len(text) <= MAX_INLINE_CHARS:
            return {prop: text}
        container = await self._container()
        await container.upload_blob(blob_name, text.encode(), overwrite=True)
        return {f"{prop}_blob": blob_name}

    async def load(self, entity: dict[str, Any], prop: str) -> str | None:
        if prop in entity:
            return entity[prop]
        if f"{prop}_blob" not in entity:
            return None
        container = await self._container()
        with storage_errors(f"body blob '{entity[f'{prop}_blob']}'"):
            download = await container.download_blob(entity[f"{prop}_blob"])
            return (await download.readall()).decode()

    async def discard(self, props: dict[str, str], prop: str) -> None:
        """Remove a blob written for a body whose index write did not happen."""
        if f"{prop}_blob" in props:
            from azure.core.exceptions import ResourceNotFoundError

            container = await self._container()
            with contextlib.suppress(ResourceNotFoundError):
                await container.delete_blob(props[f"{prop}_blob"])


class ContextStore:
    def __init__(self, clients: StorageClients, settings: Settings) -> None:
        self._tables = TableSet(clients.tables())
        self._bodies = _Bodies(clients, f"{settings.storage_prefix}-context")
        self.events_table = f"{settings.storage_prefix}events"
        self.memories_table = f"{settings.storage_prefix}memories"

    # -- events ----------------------------------------------------------------------------

    async def append_event(
        self, agent_id: Slug, event: EventEnvelope, recorded_at: datetime | None = None
    ) -> bool:
        """Add an event to the agent's history. Returns False if that event id is already there."""
        from azure.data.tables import TableTransactionError

        recorded_at = recorded_at or utcnow()
        key = _key(event.id)
        timeline = f"t_{_newest_first(recorded_at)}_{key}"
        body = await self._bodies.store(
            "body", event.model_dump_json(), f"{agent_id}/events/{timeline}.json"
        )
        index_row = {"PartitionKey": agent_id, "RowKey": f"e_{key}", "timeline": timeline}
        timeline_row = {
            "PartitionKey": agent_id,
            "RowKey": timeline,
            "event_id": event.id,
            "type": event.type,
            "recorded_at": recorded_at,
            **body,
        }
        table = await self._tables.get(self.events_table)
        try:
            await table.submit_transaction([("create", index_row), ("create", timeline_row)])
        except TableTransactionError as exc:
            await self._bodies.discard(body, "body")
            if exc.error_code == "EntityAlreadyExists":
                return False
            raise
        except BaseException:
            await self._bodies.discard(body, "body")
            raise
        return True

    async def get_event(self, agent_id: Slug, event_id: str) -> StoredEvent:
        table = await self._tables.get(self.events_table)
        with storage_errors(f"event '{event_id}' of agent '{agent_id}'", field="event_id"):
            index = await table.get_entity(agent_id, f"e_{_key(event_id)}")
            entity = await table.get_entity(agent_id, index["timeline"])
        return await self._stored_event(entity)

    async def record_outcome(self, agent_id: Slug, event_id: str, outcome: dict[str, Any]) -> None:
        """Attach what came of an event (decision, actions, errors), replacing any earlier
        outcome. Repeating it is harmless; a large outcome always has the same blob name."""
        from azure.data.tables import UpdateMode

        table = await self._tables.get(self.events_table)
        with storage_errors(f"event '{event_id}' of agent '{agent_id}'", field="event_id"):
            index = await table.get_entity(agent_id, f"e_{_key(event_id)}")
            row = dict(await table.get_entity(agent_id, index["timeline"]))
            earlier_blob = row.pop("outcome_blob", None)
            row.pop("outcome", None)
            props = await self._bodies.store(
                "outcome", dumps(outcome), f"{agent_id}/outcomes/{index['timeline']}.json"
            )
            await table.update_entity({**row, **props}, mode=UpdateMode.REPLACE)
            if earlier_blob and earlier_blob != props.get("outcome_blob"):
                await self._bodies.discard({"outcome_blob": earlier_blob}, "outcome")

    async def list_events(
        self, agent_id: Slug, *, page_size: int = 50, continuation: str | None = None
    ) -> Page[StoredEvent]:
        """The agent's history, newest first."""
        table = await self._tables.get(self.events_table)
        entities, token = await query_page(
            table,
            scope=f"events:{agent_id}",
            query_filter="PartitionKey eq @agent and RowKey ge 't_' and RowKey lt 't`'",
            parameters={"agent": agent_id},
            page_size=page_size,
            continuation=continuation,
        )
        return Page(items=[await self._stored_event(e) for e in entities], continuation=token)

    async def _stored_event(self, entity: dict[str, Any]) -> StoredEvent:
        outcome = await self._bodies.load(entity, "outcome")
        return StoredEvent(
            agent_id=entity["PartitionKey"],
            event=EventEnvelope.model_validate_json(await self._bodies.load(entity, "body") or ""),
            recorded_at=entity["recorded_at"],
            outcome=json.loads(outcome) if outcome else None,
        )

    # -- memories --------------------------------------------------------------------------

    async def remember(self, agent_id: Slug, memory: Memory) -> Memory:
        """Store a memory under its id, replacing one with the same id."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import UpdateMode

        table = await self._tables.get(self.memories_table)
        try:
            previous = await table.get_entity(agent_id, memory.memory_id)
        except ResourceNotFoundError:
            previous = {}
        props = await self._bodies.store(
            "content",
            memory.content,
            f"{agent_id}/memories/{memory.memory_id}-{uuid4().hex[:8]}.txt",
        )
        entity = {
            "PartitionKey": agent_id,
            "RowKey": memory.memory_id,
            "kind": memory.kind,
            "tags": dumps(memory.tags),
            "created_at": memory.created_at,
            **props,
        }
        try:
            await table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except BaseException:
            await self._bodies.discard(props, "content")
            raise
        if previous.get("content_blob") and previous["content_blob"] != props.get("content_blob"):
            await self._bodies.discard(dict(previous), "content")
        return memory

    async def get_memory(self, agent_id: Slug, memory_id: str) -> Memory:
        table = await self._tables.get(self.memories_table)
        with storage_errors(f"memory '{memory_id}' of agent '{agent_id}'", field="memory_id"):
            entity = await table.get_entity(agent_id, memory_id)
        return await self._memory(entity)

    async def list_memories(
        self, agent_id: Slug, *, page_size: int = 50, continuation: str | None = None
    ) -> Page[Memory]:
        """The agent's memories in id order (generated ids sort newest first)."""
        table = await self._tables.get(self.memories_table)
        entities, token = await query_page(
            table,
            scope=f"memories:{agent_id}",
            query_filter="PartitionKey eq @agent",
            parameters={"agent": agent_id},
            page_size=page_size,
            continuation=continuation,
        )
        return Page(items=[await self._memory(e) for e in entities], continuation=token)

    async def forget(self, agent_id: Slug, memory_id: str) -> None:
        table = await self._tables.get(self.memories_table)
        with storage_errors(f"memory '{memory_id}' of agent '{agent_id}'", field="memory_id"):
            entity = await table.get_entity(agent_id, memory_id)
            await table.delete_entity(agent_id, memory_id)
        await self._bodies.discard(dict(entity), "content")

    async def _memory(self, entity: dict[str, Any]) -> Memory:
        return Memory(
            memory_id=entity["RowKey"],
            content=await self._bodies.load(entity, "content") or "",
            kind=entity["kind"],
            tags=json.loads(entity["tags"]),
            created_at=entity["created_at"],
        )
