"""The durable engine on Azure Tables and Blobs (Azurite): work survives an engine restart."""

from __future__ import annotations

import asyncio
import uuid

from aos.devhost.durable import DurableEngine
from aos.devhost.durable.history import EventType
from aos.devhost.durable.table_store import TableDurableStore
from aos.settings import Settings
from aos.storage.clients import StorageClients

from .durable_app import COMPLETIONS, FUNCTIONS, GATES


def _store(clients: StorageClients, settings: Settings) -> TableDurableStore:
    return TableDurableStore(clients, settings, task_hub="testhub")


async def test_patterns_run_on_table_storage(clients: StorageClients, settings: Settings) -> None:
    async with DurableEngine(FUNCTIONS, store=_store(clients, settings)) as engine:
        chained = await engine.start_new("hello_orchestrator")
        fanned = await engine.start_new("fan_out_fan_in", input=4)
        key = uuid.uuid4().hex
        counted = await engine.start_new("counter_orchestrator", input=key)
        approval = await engine.start_new("approval_workflow", input=0.05)
        assert (await engine.wait_for(chained, 30))["output"] == [
            "Hello Tokyo",
            "Hello Seattle",
            "Hello London",
        ]
        assert (await engine.wait_for(fanned, 30))["output"] == 30
        assert (await engine.wait_for(counted, 30))["output"]["value"] == 7
        assert (await engine.wait_for(approval, 30))["output"] == "escalated"
        assert (await engine.read_entity("Counter", key)).state == 7
        page, _ = await engine.list_instances(runtime_status=["Completed"])
        assert {chained, fanned, counted, approval} <= {s["instanceId"] for s in page}
        assert await engine.purge(chained) == 1
        assert await engine.get_status(chained) is None


async def test_a_killed_engine_is_resumed_and_completes_exactly_once(
    clients: StorageClients, settings: Settings
) -> None:
    key = uuid.uuid4().hex
    started, release = asyncio.Event(), asyncio.Event()
    GATES[key] = (started, release)

    first = DurableEngine(FUNCTIONS, store=_store(clients, settings))
    await first.start()
    instance_id = await first.start_new("resumable_orchestrator", input=key)
    await asyncio.wait_for(started.wait(), 30)
    await first.stop()  # killed mid-orchestration, with the gate activity in flight

    status = await first.store.get_instance(instance_id)
    assert status is not None and status.status.name == "Running"

    release.set()
    async with DurableEngine(FUNCTIONS, store=_store(clients, settings)) as second:
        status = await second.wait_for(instance_id, 30)
        assert status["runtimeStatus"] == "Completed"
        assert status["output"] == ["Hello before", f"released {key}", 1]
        record = await second.store.get_instance(instance_id)
    assert COMPLETIONS[key] == 1
    completed = [e for e in record.history if e["EventType"] == EventType.ExecutionCompleted]
    assert len(completed) == 1
    scheduled = [e["Name"] for e in record.history if e["EventType"] == EventType.TaskScheduled]
    assert scheduled == ["hello", "wait_at_gate", "record_completion"]
