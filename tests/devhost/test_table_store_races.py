"""Regression tests for cache races in the host's Table store, which the end-to-end suite hit
now and then before they were fixed.

The store (aos/devhost/durable/table_store.py) caches instance documents and each target's
message rows in memory. A cache miss fills the cache from storage, and that fill must not land
after a write made while it was reading, or the host keeps an old document (or an inbox without
a message) for as long as it runs. End to end that showed as an orchestration that storage held
as Completed while the host's status API kept answering Running (test_aos.py's approval
workflow, about one run in five). These tests force each interleaving by pausing the read between
reading storage and filling the cache (and, for the last one, the write between deciding and
writing), so a regression fails every time instead of now and then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from aos.devhost.durable.history import OrchestrationStatus
from aos.devhost.durable.orchestrations import EVENT_RAISED, START
from aos.devhost.durable.store import InstanceRecord, Message
from aos.devhost.durable.table_store import TableDurableStore
from aos.settings import Settings
from aos.storage.clients import StorageClients

HUB = "racehub"
WAIT = 5.0  # how long to let one side run before assuming a (fixed) store holds it back


async def settle(task: asyncio.Task[Any] | asyncio.Event) -> None:
    """Let the other side of the race get on, or give up waiting after a while: a store that
    serialises reads and writes may rightly hold it back until the paused side goes on."""
    waiter = task if isinstance(task, asyncio.Task) else asyncio.ensure_future(task.wait())
    await asyncio.wait([waiter], timeout=WAIT)
    if waiter is not task:
        waiter.cancel()


class Gate:
    """Pauses the first call of a patched SDK method (after or before it touches storage)."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def hold(self) -> None:
        self.reached.set()
        await self.opened.wait()


@pytest.fixture
async def store(settings: Settings, clients: StorageClients) -> TableDurableStore:
    """The store as a (re)started host has it: nothing cached yet."""
    store = TableDurableStore(clients, settings, HUB)
    await store.open()
    return store


def pause_first_query_after_reading(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """The next `query_entities` reads storage, then waits at the gate before handing out rows."""
    from azure.data.tables.aio import TableClient

    gate = Gate()
    query = TableClient.query_entities

    def paused_query(self: TableClient, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        monkeypatch.setattr(TableClient, "query_entities", query)  # only this first query

        async def rows() -> AsyncIterator[Any]:
            found = [row async for row in query(self, *args, **kwargs)]
            await gate.hold()
            for row in found:
                yield row

        return rows()

    monkeypatch.setattr(TableClient, "query_entities", paused_query)
    return gate


def event(target: str) -> Message:
    now = datetime.now(UTC)
    return Message(
        id=f"{target}|event|1",
        target=target,
        kind=EVENT_RAISED,
        payload={"name": "go"},
        created=now,
    )


async def test_instance_read_racing_a_commit_does_not_leave_a_stale_document(
    settings: Settings,
    clients: StorageClients,
    store: TableDurableStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.storage.blob.aio import BlobClient

    now = datetime.now(UTC)
    running = InstanceRecord("race", "orchestrator", "e1", OrchestrationStatus.Running, now, now)
    start = Message(id="race|start", target="race", kind=START, payload={}, created=now)
    earlier = TableDurableStore(clients, settings, HUB)  # the host before its restart
    await earlier.open()
    assert await earlier.create_instance(running, start)

    gate = Gate()
    download = BlobClient.download_blob

    async def paused_download(self: BlobClient, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(BlobClient, "download_blob", download)  # only this first read
        downloader = await download(self, *args, **kwargs)
        await gate.hold()
        return downloader

    monkeypatch.setattr(BlobClient, "download_blob", paused_download)
    status_request = asyncio.create_task(store.get_instance("race"))  # e.g. GET status
    await gate.reached.wait()
    completed = running.copy()
    completed.status = OrchestrationStatus.Completed
    completed.output = '"done"'
    commit = asyncio.create_task(store.commit_orchestration(completed, ["race|start"], [], []))
    await settle(commit)  # the engine commits meanwhile
    gate.opened.set()
    await commit
    racing_read = (await status_request).status
    assert racing_read in (OrchestrationStatus.Running, OrchestrationStatus.Completed)  # either

    assert (await store.get_instance("race")).status is OrchestrationStatus.Completed


async def test_message_added_while_the_inbox_is_first_read_is_not_lost(
    store: TableDurableStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = pause_first_query_after_reading(monkeypatch)
    first_look = asyncio.create_task(store.get_messages("inbox"))  # the engine's first look
    await gate.reached.wait()
    add = asyncio.create_task(store.add_messages([event("inbox")]))  # e.g. raise_event
    await settle(add)
    gate.opened.set()
    await add
    assert [m.id for m in await first_look] in ([], ["inbox|event|1"])  # either is fine

    assert [m.id for m in await store.get_messages("inbox")] == ["inbox|event|1"]


async def test_message_whose_write_straddles_the_first_read_is_not_lost(
    store: TableDurableStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.data.tables.aio import TableClient

    write_gate = Gate()
    create = TableClient.create_entity

    async def paused_create(self: TableClient, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(TableClient, "create_entity", create)  # only this first write
        await write_gate.hold()
        return await create(self, *args, **kwargs)

    await store.get_messages("warm-up")  # the table exists; no create_entity for it later
    monkeypatch.setattr(TableClient, "create_entity", paused_create)
    add = asyncio.create_task(store.add_messages([event("inbox")]))
    await write_gate.reached.wait()  # add_messages is under way, its row not yet written
    read_gate = pause_first_query_after_reading(monkeypatch)
    first_look = asyncio.create_task(store.get_messages("inbox"))
    await settle(read_gate.reached)  # the first look has read storage: no row yet
    write_gate.opened.set()
    await settle(add)  # the row is written; add_messages finds no cache to update
    read_gate.opened.set()
    await asyncio.gather(add, first_look)

    assert [m.id for m in await store.get_messages("inbox")] == ["inbox|event|1"]
