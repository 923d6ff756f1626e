"""The durable engine runs the documented Durable Functions patterns as the Azure host does."""

from __future__ import annotations

import json
import uuid

import pytest

from aos.devhost.durable import (
    DurableEngine,
    FunctionNotFound,
    InMemoryDurableStore,
    InstanceExists,
    InstanceGone,
    InstanceNotFound,
)

from .durable_app import CHANGING, FUNCTIONS


async def test_function_chaining(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("hello_orchestrator")
    status = await engine.wait_for(instance_id)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello Tokyo", "Hello Seattle", "Hello London"]
    assert status["name"] == "hello_orchestrator"
    assert status["instanceId"] == instance_id


async def test_fan_out_fan_in(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("fan_out_fan_in", input=5)
    status = await engine.wait_for(instance_id)
    assert status["output"] == 1 + 4 + 9 + 16 + 25
    # The input arrives as the SDK client sends it: JSON text in a JSON string.
    assert status["input"] == "5"


async def test_counter_entity_called_and_signalled_from_an_orchestration(
    engine: DurableEngine,
) -> None:
    key = uuid.uuid4().hex
    instance_id = await engine.start_new("counter_orchestrator", input=key)
    status = await engine.wait_for(instance_id)
    assert status["output"] == {"value": 7, "error": "the counter cannot do that"}
    state = await engine.read_entity("Counter", key)
    assert state.exists and state.state == 7


async def test_counter_entity_signalled_by_a_client(engine: DurableEngine) -> None:
    key = uuid.uuid4().hex
    assert not (await engine.read_entity("Counter", key)).exists
    for amount in (1, 2, 3):
        await engine.signal_entity("Counter", key, "add", amount)
    await engine.wait_until_idle()
    assert (await engine.read_entity("Counter", key)).state == 6
    await engine.signal_entity("counter", key, "reset")
    await engine.wait_until_idle()
    assert (await engine.read_entity("COUNTER", key)).state == 0


async def test_signalling_an_unknown_entity_is_refused(engine: DurableEngine) -> None:
    with pytest.raises(FunctionNotFound):
        await engine.signal_entity("NoSuchEntity", "k", "add", 1)


async def test_human_interaction_approved_in_time(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("approval_workflow", input=60)
    await engine.raise_event(instance_id, "Approval", True)
    status = await engine.wait_for(instance_id)
    # The SDK client sends json.dumps(True) as a JSON string, so the orchestration gets "true".
    assert status["output"] == "approved: true"


async def test_human_interaction_times_out(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("approval_workflow", input=0.05)
    status = await engine.wait_for(instance_id)
    assert status["output"] == "escalated"
    with pytest.raises(InstanceGone):
        await engine.raise_event(instance_id, "Approval", True)


# The SDK itself warns when an event is in the history before the orchestration waits for it.
@pytest.mark.filterwarnings("ignore:Potential duplicate Task completion:UserWarning")
async def test_an_event_raised_before_the_orchestration_waits_is_kept(
    engine: DurableEngine,
) -> None:
    instance_id = await engine.start_new("status_reporter")
    await engine.raise_event(instance_id, "Continue", {"go": True})
    status = await engine.wait_for(instance_id)
    assert status["output"] == json.dumps({"go": True})


async def test_sub_orchestrations(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("provision_devices", input=["dev-a", "dev-b"])
    status = await engine.wait_for(instance_id)
    assert status["output"] == {
        "devices": [
            {"device": "dev-a", "parent": instance_id},
            {"device": "dev-b", "parent": instance_id},
        ],
        "chained": ["Hello Tokyo", "Hello Seattle", "Hello London"],
    }
    child = await engine.get_status(f"{instance_id}-dev-a")
    assert child is not None
    assert child["runtimeStatus"] == "Completed"
    assert child["name"] == "provision_device"


async def test_a_failed_sub_orchestration_surfaces_in_the_parent(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("failing_parent")
    status = await engine.wait_for(instance_id)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"].startswith("child failed: Orchestrator function 'failing_child' failed")
    assert "the child gave up" in status["output"]


async def test_activity_retried_until_it_succeeds(engine: DurableEngine) -> None:
    key = uuid.uuid4().hex
    instance_id = await engine.start_new("retrying_orchestrator", input=[key, 3])
    status = await engine.wait_for(instance_id)
    assert status["output"] == "succeeded after 3 attempts"
    history = (await engine.get_status(instance_id, show_history=True))["historyEvents"]
    kinds = [e["EventType"] for e in history]
    assert kinds.count("TaskFailed") == 2
    assert kinds.count("TimerCreated") == 2
    assert kinds.count("TaskCompleted") == 1


async def test_activity_retries_exhausted(engine: DurableEngine) -> None:
    key = uuid.uuid4().hex
    instance_id = await engine.start_new("retrying_orchestrator", input=[key, 2])
    status = await engine.wait_for(instance_id)
    assert status["output"].startswith("gave up: Activity function 'flaky' failed")
    assert "attempt 2 failed" in status["output"]


async def test_custom_status(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("status_reporter")
    await engine.wait_until_idle()
    status = await engine.get_status(instance_id)
    assert status["runtimeStatus"] == "Running"
    assert status["customStatus"]["stage"] == "greeted"
    guid = status["customStatus"]["guid"]
    await engine.raise_event(instance_id, "Continue", "go")
    status = await engine.wait_for(instance_id)
    assert status["customStatus"] == {"stage": "done"}
    assert status["output"] == '"go"'
    # new_uuid is deterministic: replays produced the same value
    assert uuid.UUID(guid)


async def test_eternal_orchestration_continues_as_new_then_stops(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("eternal_cleanup", input={"round": 1, "stop_after": 4})
    status = await engine.wait_for(instance_id)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == 4
    # the status shows the last execution's input
    assert json.loads(status["input"]) == {"round": 4, "stop_after": 4}


async def test_continue_as_new_keeps_unprocessed_events(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("event_collector")
    for value in ("one", "two", "three"):
        await engine.raise_event(instance_id, "item", value)
    status = await engine.wait_for(instance_id)
    assert status["output"] == ['"one"', '"two"', '"three"']


async def test_failed_activity_fails_the_orchestration(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("failing_orchestrator")
    status = await engine.wait_for(instance_id)
    assert status["runtimeStatus"] == "Failed"
    assert status["output"].startswith("Orchestrator function 'failing_orchestrator' failed:")
    assert "Activity function 'explode' failed: ValueError: kaboom" in status["output"]


async def test_call_http_is_refused_clearly(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("calls_http")
    status = await engine.wait_for(instance_id)
    assert status["runtimeStatus"] == "Failed"
    assert "CallHttp is not supported by the local host" in status["output"]


async def test_terminate(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("waits_forever")
    assert await engine.terminate(instance_id, "no longer needed")
    status = await engine.wait_for(instance_id)
    assert status["runtimeStatus"] == "Terminated"
    assert status["output"] == "no longer needed"
    assert not await engine.terminate(instance_id, "again")


async def test_instance_ids_are_reused_only_after_the_instance_finished(
    engine: DurableEngine,
) -> None:
    instance_id = f"fixed-{uuid.uuid4().hex}"
    await engine.start_new("waits_forever", instance_id)
    with pytest.raises(InstanceExists, match="already exists"):
        await engine.start_new("hello_orchestrator", instance_id)
    await engine.terminate(instance_id, "done")
    await engine.wait_for(instance_id)
    await engine.start_new("hello_orchestrator", instance_id)
    status = await engine.wait_for(instance_id)
    assert status["name"] == "hello_orchestrator"
    assert status["output"] == ["Hello Tokyo", "Hello Seattle", "Hello London"]


async def test_unknown_orchestrator_and_instance(engine: DurableEngine) -> None:
    with pytest.raises(FunctionNotFound, match="doesn't exist"):
        await engine.start_new("no_such_orchestrator")
    assert await engine.get_status("no-such-instance") is None
    with pytest.raises(InstanceNotFound):
        await engine.raise_event("no-such-instance", "x", 1)


async def test_purge_and_list(engine: DurableEngine) -> None:
    prefix = f"list-{uuid.uuid4().hex[:8]}-"
    ids = [await engine.start_new("hello_orchestrator", f"{prefix}{i}") for i in range(3)]
    for instance_id in ids:
        await engine.wait_for(instance_id)
    page, token = await engine.list_instances(instance_id_prefix=prefix, top=2)
    assert [s["instanceId"] for s in page] == ids[:2]
    rest, token = await engine.list_instances(
        instance_id_prefix=prefix, top=2, continuation_token=token
    )
    assert [s["instanceId"] for s in rest] == ids[2:]
    assert token is None
    assert await engine.purge(ids[0]) == 1
    assert await engine.get_status(ids[0]) is None
    remaining, _ = await engine.list_instances(
        instance_id_prefix=prefix, runtime_status=["Completed"]
    )
    assert [s["instanceId"] for s in remaining] == ids[1:]


async def test_a_new_engine_over_the_same_store_finishes_the_work() -> None:
    store = InMemoryDurableStore()
    first = DurableEngine(FUNCTIONS, store=store)
    await first.start()
    instance_id = await first.start_new("approval_workflow", input=60)
    await first.wait_until_idle()
    await first.stop()  # stopped mid-orchestration: waiting for the approval

    async with DurableEngine(FUNCTIONS, store=store) as second:
        assert (await second.get_status(instance_id))["runtimeStatus"] == "Running"
        await second.raise_event(instance_id, "Approval", "yes")
        status = await second.wait_for(instance_id)
    assert status["output"] == 'approved: "yes"'


async def test_sub_orchestration_retried_with_its_instance_id(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("retrying_parent")
    status = await engine.wait_for(instance_id)
    assert status["output"].startswith("child failed twice: Orchestrator function 'failing_child'")
    history = (await engine.get_status(instance_id, show_history=True))["historyEvents"]
    kinds = [e["EventType"] for e in history]
    assert kinds.count("SubOrchestrationInstanceFailed") == 2
    child = await engine.get_status(f"{instance_id}-child")
    assert child["runtimeStatus"] == "Failed"


async def test_suspend_and_resume(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("waits_forever")
    await engine.wait_until_idle()
    assert await engine.suspend(instance_id, "maintenance")
    await engine.wait_until_idle()
    assert (await engine.get_status(instance_id))["runtimeStatus"] == "Suspended"
    await engine.raise_event_json(instance_id, "Never", '"finally"')
    assert await engine.resume(instance_id, "done")
    status = await engine.wait_for(instance_id)
    assert status["output"] == "finally"


async def test_non_deterministic_code_fails_the_orchestration(engine: DurableEngine) -> None:
    instance_id = await engine.start_new("changing_orchestrator")
    await engine.wait_until_idle()
    CHANGING["activity"] = "get_work_batch"
    try:
        await engine.raise_event(instance_id, "Next", 1)
        status = await engine.wait_for(instance_id)
    finally:
        CHANGING["activity"] = "hello"
    assert status["runtimeStatus"] == "Failed"
    assert "Non-Deterministic workflow detected" in status["output"]
