"""The agent registry: one Table row per agent with its definition and state.

The row key is fixed and the partition is the agent id, so agents spread across partitions and a
crafted id can only ever address its own row. State is stored as JSON spread over binary
properties (Tables caps a property at 64 KiB); writes use ETags so two writers cannot silently
overwrite each other.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from aos.agents.models import AgentDefinition, Slug, utcnow
from aos.agents.state import AgentState, Lifecycle, load_state
from aos.errors import InvalidInputError, NotFoundError
from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.paging import MAX_PAGE_SIZE, Page, query_page
from aos.storage.tables import TableSet, dumps, join_bytes, split_bytes, storage_errors

MAX_STATE_BYTES = 512 * 1024
_ROW = "agent"


class AgentRecord(BaseModel):
    """A registered agent as stored. `etag` identifies the version that was read."""

    definition: AgentDefinition
    state: AgentState
    registered_at: datetime
    updated_at: datetime
    etag: str | None = None

    @property
    def agent_id(self) -> str:
        return self.definition.agent_id


class AgentRegistry:
    def __init__(self, clients: StorageClients, settings: Settings) -> None:
        self._tables = TableSet(clients.tables())
        self.table_name = f"{settings.storage_prefix}agents"

    async def register(
        self, definition: AgentDefinition, state: AgentState | None = None
    ) -> AgentRecord:
        """Add a new agent. Raises AlreadyExistsError if the id is taken."""
        state = state or AgentState(agent_id=definition.agent_id)
        if state.agent_id != definition.agent_id:
            raise InvalidInputError(
                f"state belongs to '{state.agent_id}', not '{definition.agent_id}'",
                field="agent_id",
            )
        now = utcnow()
        record = AgentRecord(definition=definition, state=state, registered_at=now, updated_at=now)
        table = await self._tables.get(self.table_name)
        with storage_errors(f"agent '{definition.agent_id}'", field="agent_id"):
            meta = await table.create_entity(self._to_entity(record))
        return record.model_copy(update={"etag": meta["etag"]})

    async def get(self, agent_id: Slug) -> AgentRecord:
        table = await self._tables.get(self.table_name)
        with storage_errors(f"agent '{agent_id}'", field="agent_id"):
            entity = await table.get_entity(agent_id, _ROW)
        return self._from_entity(entity)

    async def exists(self, agent_id: Slug) -> bool:
        try:
            await self.get(agent_id)
        except NotFoundError:
            return False
        return True

    async def save(self, record: AgentRecord) -> AgentRecord:
        """Write a changed record back, only if nobody changed it since it was read."""
        if record.etag is None:
            raise InvalidInputError(
                "save needs a record read from the registry (it has no etag)", field="etag"
            )
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        record = record.model_copy(update={"updated_at": utcnow()})
        table = await self._tables.get(self.table_name)
        with storage_errors(f"agent '{record.agent_id}'", field="agent_id"):
            meta = await table.update_entity(
                self._to_entity(record),
                mode=UpdateMode.REPLACE,
                etag=record.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        return record.model_copy(update={"etag": meta["etag"]})

    async def list(
        self,
        *,
        page_size: int = 50,
        continuation: str | None = None,
        lifecycle: Lifecycle | None = None,
    ) -> Page[AgentRecord]:
        """Agents in id order, a page at a time, optionally only those in one lifecycle state."""
        query, params = "RowKey eq @row", {"row": _ROW}
        if lifecycle is not None:
            query += " and lifecycle eq @lifecycle"
            params["lifecycle"] = Lifecycle(lifecycle).value
        table = await self._tables.get(self.table_name)
        entities, token = await query_page(
            table,
            scope=f"agents:{query}:{params.get('lifecycle', '')}",
            query_filter=query,
            parameters=params,
            page_size=page_size,
            continuation=continuation,
        )
        return Page(items=[self._from_entity(e) for e in entities], continuation=token)

    async def all(self, *, lifecycle: Lifecycle | None = None) -> AsyncIterator[AgentRecord]:
        """Every registered agent, fetched a page at a time."""
        continuation = None
        while True:
            page = await self.list(
                page_size=MAX_PAGE_SIZE, continuation=continuation, lifecycle=lifecycle
            )
            for record in page.items:
                yield record
            if page.continuation is None:
                return
            continuation = page.continuation

    async def delete(self, agent_id: Slug) -> None:
        table = await self._tables.get(self.table_name)
        with storage_errors(f"agent '{agent_id}'", field="agent_id"):
            await table.delete_entity(agent_id, _ROW)

    @staticmethod
    def _to_entity(record: AgentRecord) -> dict[str, Any]:
        state = dumps(record.state.model_dump(mode="json")).encode()
        if len(state) > MAX_STATE_BYTES:
            raise InvalidInputError(
                f"agent state is {len(state)} bytes, over the {MAX_STATE_BYTES}-byte limit: "
                "keep long histories in the context store",
                field="state",
            )
        return {
            "PartitionKey": record.agent_id,
            "RowKey": _ROW,
            "definition": dumps(record.definition.model_dump(mode="json")),
            "lifecycle": record.state.lifecycle.value,
            "role": record.definition.role or "",
            "registered_at": record.registered_at,
            "updated_at": record.updated_at,
            **split_bytes(state, "state"),
        }

    @staticmethod
    def _from_entity(entity: dict[str, Any]) -> AgentRecord:
        return AgentRecord(
            definition=AgentDefinition.model_validate_json(entity["definition"]),
            state=load_state(json.loads(join_bytes(entity, "state"))),
            registered_at=entity["registered_at"],
            updated_at=entity["updated_at"],
            etag=entity.metadata["etag"],
        )
