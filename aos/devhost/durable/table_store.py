"""A ``DurableStore`` on Azure Tables and Blobs (Azurite locally), so work survives a restart.

Layout, under the AOS storage prefix and the task hub name:

- blob container ``<prefix>-<hub>-instances``: one JSON blob per orchestration instance holding
  the whole ``InstanceRecord`` (status, payloads, history, engine bookkeeping);
- table ``<prefix><hub>Instances``: an index row per instance (name, status, created time) for
  queries;
- table ``<prefix><hub>Messages``: one row per pending message, partitioned by target, with a
  sequence for arrival order and the due time of timers;
- table ``<prefix><hub>Work``: one row per activity waiting to run;
- table ``<prefix><hub>Entities``: one row per entity (existence, state, consumed message ids).

Commits are not atomic across these writes; they are ordered so a crash anywhere leaves a state
the engine recovers from without doing anything twice: produced messages and work items first
(their ids are deterministic, so writing one again is a no-op), then the record (which lists the
ids of the messages it consumed), then the deletion of the consumed messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from aos.settings import Settings
from aos.storage.clients import StorageClients
from aos.storage.tables import TableSet, join_bytes, split_bytes

from . import history as h
from .history import OrchestrationStatus
from .store import (
    DurableStore,
    EntityRecord,
    InstanceQuery,
    InstanceRecord,
    Message,
    WorkItem,
    matches,
)


def _key(value: str) -> str:
    """A table key for any string (keys may not hold / \\ # ? or control characters)."""
    return quote(value, safe="@:-_.~")


def _time(value: datetime | None) -> str | None:
    return h.format_timestamp(value) if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return h.parse_timestamp(value) if value else None


def _instance_to_json(record: InstanceRecord) -> bytes:
    data = asdict(record)
    data["status"] = record.status.name
    data["created_time"] = _time(record.created_time)
    data["last_updated_time"] = _time(record.last_updated_time)
    return json.dumps(data, separators=(",", ":")).encode()


def _instance_from_json(raw: bytes) -> InstanceRecord:
    data = json.loads(raw)
    data["status"] = OrchestrationStatus[data["status"]]
    data["created_time"] = _parse_time(data["created_time"])
    data["last_updated_time"] = _parse_time(data["last_updated_time"])
    return InstanceRecord(**data)


class TableDurableStore(DurableStore):
    """Durable engine state in Azure Storage tables and blobs."""

    def __init__(self, clients: StorageClients, settings: Settings, task_hub: str) -> None:
        self._clients = clients
        hub = re.sub(r"[^a-z0-9]", "", task_hub.lower())
        base = f"{settings.storage_prefix}{hub}"
        self._instances_table = f"{base}Instances"
        self._messages_table = f"{base}Messages"
        self._work_table = f"{base}Work"
        self._entities_table = f"{base}Entities"
        self._container_name = f"{settings.storage_prefix}-{hub}-instances"
        self._tables: TableSet | None = None
        self._last_seq = 0
        self._container_ready = False
        self._lock = asyncio.Lock()
        # Write-through cache of instance documents. The host is the only writer of its task
        # hub's storage, so what it last wrote is what storage holds; reads then cost no I/O.
        self._instance_cache: dict[str, bytes] = {}
        # Likewise each target's pending message rows, once read (message id -> row).
        self._message_cache: dict[str, dict[str, dict]] = {}
        self._index_rows: dict[str, dict] = {}
        # Writes bump a key's version; a read fills the cache only if no write happened while it
        # was reading, so a slow read can never put back what a write replaced.
        self._versions: dict[str, int] = {}

    async def open(self) -> None:
        self._tables = TableSet(self._clients.tables())
        if not self._container_ready:
            from azure.core.exceptions import ResourceExistsError

            container = self._clients.blobs().get_container_client(self._container_name)
            with contextlib.suppress(ResourceExistsError):
                await container.create_container()
            self._container_ready = True

    async def _table(self, name: str) -> Any:
        if self._tables is None:
            await self.open()
        assert self._tables is not None
        return await self._tables.get(name)

    def _blob(self, instance_id: str) -> Any:
        container = self._clients.blobs().get_container_client(self._container_name)
        return container.get_blob_client(f"{_key(instance_id)}.json")

    def _next_seq(self) -> str:
        self._last_seq = max(self._last_seq + 1, time.time_ns())
        return f"{self._last_seq:020d}"

    # -- instances -------------------------------------------------------------------------------

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        raw = self._instance_cache.get(instance_id)
        if raw is None:
            version = self._versions.get(f"i:{instance_id}", 0)
            try:
                downloader = await self._blob(instance_id).download_blob()
                raw = await downloader.readall()
            except ResourceNotFoundError:
                return None
            if self._versions.get(f"i:{instance_id}", 0) == version:
                self._instance_cache[instance_id] = raw
        return _instance_from_json(raw)

    def _bump(self, key: str) -> None:
        self._versions[key] = self._versions.get(key, 0) + 1

    async def _put_instance(self, record: InstanceRecord) -> None:
        raw = _instance_to_json(record)
        self._bump(f"i:{record.instance_id}")
        self._instance_cache.pop(record.instance_id, None)
        await self._blob(record.instance_id).upload_blob(raw, overwrite=True)
        self._bump(f"i:{record.instance_id}")
        self._instance_cache[record.instance_id] = raw
        row = {
            "PartitionKey": _key(record.instance_id),
            "RowKey": "",
            "InstanceId": record.instance_id,
            "Name": record.name,
            "Status": record.status.name,
            "CreatedTime": _time(record.created_time),
        }
        if self._index_rows.get(record.instance_id) != row:  # the index changes rarely
            table = await self._table(self._instances_table)
            await table.upsert_entity(row)
            self._index_rows[record.instance_id] = row

    async def create_instance(self, record: InstanceRecord, start: Message) -> bool:
        async with self._lock:
            existing = await self.get_instance(record.instance_id)
            if existing is not None and not existing.is_terminal:
                return False
            if existing is not None:
                await self._drop_target(record.instance_id)
            await self._put_instance(record)
            await self.add_messages([start])
            return True

    async def list_instances(self, query: InstanceQuery) -> list[InstanceRecord]:
        table = await self._table(self._instances_table)
        found: list[InstanceRecord] = []
        async for row in table.list_entities():
            if query.instance_id_prefix and not row["InstanceId"].startswith(
                query.instance_id_prefix
            ):
                continue
            record = await self.get_instance(row["InstanceId"])
            if record is not None and matches(record, query):
                found.append(record)
        return sorted(found, key=lambda r: (r.created_time, r.instance_id))

    async def delete_instance(self, instance_id: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        existed = True
        self._bump(f"i:{instance_id}")
        self._instance_cache.pop(instance_id, None)
        self._index_rows.pop(instance_id, None)
        try:
            await self._blob(instance_id).delete_blob()
        except ResourceNotFoundError:
            existed = False
        table = await self._table(self._instances_table)
        await table.delete_entity(_key(instance_id), "")
        await self._drop_target(instance_id)
        return existed

    async def _drop_target(self, instance_id: str) -> None:
        messages = await self.get_messages(instance_id)
        await self.delete_messages(instance_id, [m.id for m in messages])
        work = await self._table(self._work_table)
        for item in await self.list_work_items():
            if item.instance_id == instance_id:
                await work.delete_entity("work", _key(item.id))

    async def commit_orchestration(
        self,
        record: InstanceRecord,
        consumed: list[str],
        messages: list[Message],
        work_items: list[WorkItem],
    ) -> None:
        await self.add_messages(messages)
        await self._add_work(work_items)
        await self._put_instance(record)
        await self.delete_messages(record.instance_id, consumed)

    # -- entities --------------------------------------------------------------------------------

    @staticmethod
    def _entity_from_row(row: dict) -> EntityRecord:
        state = join_bytes(row, "State").decode() if row.get("HasState") else None
        return EntityRecord(
            entity_id=row["EntityId"],
            exists=bool(row.get("Exists")),
            state=state,
            last_modified=_parse_time(row.get("LastModified")),
            consumed=json.loads(row.get("Consumed") or "[]"),
        )

    async def get_entity(self, entity_id: str) -> EntityRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        table = await self._table(self._entities_table)
        try:
            row = await table.get_entity(_key(entity_id), "")
        except ResourceNotFoundError:
            return None
        return self._entity_from_row(row)

    async def list_entities(self) -> list[EntityRecord]:
        table = await self._table(self._entities_table)
        return [self._entity_from_row(row) async for row in table.list_entities()]

    async def commit_entity(
        self, record: EntityRecord, consumed: list[str], messages: list[Message]
    ) -> None:
        await self.add_messages(messages)
        row: dict[str, Any] = {
            "PartitionKey": _key(record.entity_id),
            "RowKey": "",
            "EntityId": record.entity_id,
            "Exists": record.exists,
            "HasState": record.state is not None,
            "LastModified": _time(record.last_modified),
            "Consumed": json.dumps(record.consumed),
        }
        if record.state is not None:
            row.update(split_bytes(record.state.encode(), "State"))
        table = await self._table(self._entities_table)
        await table.upsert_entity(row, mode=_replace())
        await self.delete_messages(record.entity_id, consumed)

    # -- messages --------------------------------------------------------------------------------

    async def add_messages(self, messages: list[Message]) -> None:
        from azure.core.exceptions import ResourceExistsError

        if not messages:
            return
        table = await self._table(self._messages_table)
        for message in messages:
            body = json.dumps(
                {"kind": message.kind, "payload": message.payload, "target": message.target}
            ).encode()
            row = {
                "PartitionKey": _key(message.target),
                "RowKey": _key(message.id),
                "MessageId": message.id,
                "Seq": self._next_seq(),
                "Created": _time(message.created),
                "Due": _time(message.due),
                **split_bytes(body, "Body"),
            }
            # the same message, written again by a replayed commit, is already there
            self._bump(f"m:{message.target}")
            with contextlib.suppress(ResourceExistsError):
                await table.create_entity(row)
                cached = self._message_cache.get(message.target)
                if cached is not None:
                    cached[message.id] = row
            self._bump(f"m:{message.target}")  # a read that began before the write is stale too

    @staticmethod
    def _message_from_row(row: dict, seq: int) -> Message:
        body = json.loads(join_bytes(row, "Body"))
        return Message(
            id=row["MessageId"],
            target=body["target"],
            kind=body["kind"],
            payload=body["payload"],
            created=_parse_time(row["Created"]) or h.utcnow(),
            due=_parse_time(row.get("Due")),
            seq=seq,
        )

    async def get_messages(self, target: str) -> list[Message]:
        cached = self._message_cache.get(target)
        if cached is None:
            version = self._versions.get(f"m:{target}", 0)
            table = await self._table(self._messages_table)
            cached = {
                row["MessageId"]: row
                async for row in table.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": _key(target)}
                )
            }
            if self._versions.get(f"m:{target}", 0) == version:
                self._message_cache[target] = cached
        rows = sorted(cached.values(), key=lambda r: r["Seq"])
        return [self._message_from_row(row, i) for i, row in enumerate(rows)]

    async def delete_messages(self, target: str, ids: list[str]) -> None:
        table = await self._table(self._messages_table)
        cached = self._message_cache.get(target, {})
        self._bump(f"m:{target}")
        for message_id in ids:
            await table.delete_entity(_key(target), _key(message_id))
            cached.pop(message_id, None)
        self._bump(f"m:{target}")

    async def message_targets(self) -> dict[str, datetime | None]:
        table = await self._table(self._messages_table)
        targets: dict[str, datetime | None] = {}
        seen: set[str] = set()
        async for row in table.list_entities(select=["PartitionKey", "Due"]):
            target = unquote(row["PartitionKey"])
            due = _parse_time(row.get("Due"))
            if target not in seen:
                seen.add(target)
                targets[target] = due
            elif due is None or (targets[target] is not None and due < targets[target]):  # type: ignore[operator]
                targets[target] = due
        return targets

    # -- work items ------------------------------------------------------------------------------

    async def _add_work(self, items: list[WorkItem]) -> None:
        from azure.core.exceptions import ResourceExistsError

        if not items:
            return
        table = await self._table(self._work_table)
        for item in items:
            data = asdict(item)
            data["created"] = _time(item.created)
            row = {
                "PartitionKey": "work",
                "RowKey": _key(item.id),
                **split_bytes(json.dumps(data).encode(), "Body"),
            }
            with contextlib.suppress(ResourceExistsError):
                await table.create_entity(row)

    async def list_work_items(self) -> list[WorkItem]:
        table = await self._table(self._work_table)
        items = []
        async for row in table.list_entities():
            data = json.loads(join_bytes(row, "Body"))
            data["created"] = _parse_time(data["created"])
            items.append(WorkItem(**data))
        return items

    async def commit_activity(self, item_id: str, messages: list[Message]) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        table = await self._table(self._work_table)
        try:
            await table.get_entity("work", _key(item_id))
        except ResourceNotFoundError:
            return  # already committed, or its instance was purged
        await self.add_messages(messages)
        await table.delete_entity("work", _key(item_id))


def _replace() -> Any:
    from azure.data.tables import UpdateMode

    return UpdateMode.REPLACE
