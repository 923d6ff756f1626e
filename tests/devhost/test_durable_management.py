"""The Durable HTTP management API, driven through the SDK's own DurableOrchestrationClient."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import azure.durable_functions as df
import azure.functions as func
import pytest
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from aos.devhost.durable import DurableEngine, ManagementApi

from .durable_app import FUNCTIONS


def _function(name: str):
    return next(f for f in FUNCTIONS if f.get_function_name() == name).get_user_function()


async def _call_starter(api: ManagementApi, orchestrator: str, body: object = None):
    request = func.HttpRequest(
        method="POST",
        url=f"{api.url}/api/orchestrators/{orchestrator}",
        route_params={"functionName": orchestrator},
        body=json.dumps(body).encode() if body is not None else b"",
    )
    return await _function("http_start")(req=request, client=api.client_binding_json())


def test_client_binding_shape(engine: DurableEngine) -> None:
    api = ManagementApi(
        engine, base_url="http://localhost:7071", server_url="http://127.0.0.1:17071"
    )
    binding = json.loads(api.client_binding_json())
    assert binding["taskHubName"] == "testhub"
    assert binding["rpcBaseUrl"] == "http://127.0.0.1:17071/durabletask/"
    assert binding["baseUrl"] == "http://localhost:7071/runtime/webhooks/durabletask"
    urls = binding["managementUrls"]
    assert urls["id"] == "INSTANCEID"
    assert urls["statusQueryGetUri"] == (
        "http://localhost:7071/runtime/webhooks/durabletask/instances/INSTANCEID"
        "?taskHub=testhub&connection=Storage"
    )
    assert urls["sendEventPostUri"].endswith(
        "/instances/INSTANCEID/raiseEvent/{eventName}?taskHub=testhub&connection=Storage"
    )
    assert binding["creationUrls"]["createNewInstancePostUri"] == (
        "http://localhost:7071/runtime/webhooks/durabletask/orchestrators/"
        "{functionName}[/{instanceId}]?"
    )
    payload = df.DurableOrchestrationClient(api.client_binding_json())
    links = payload.create_http_management_payload("abc")
    assert links["terminatePostUri"].startswith(
        "http://localhost:7071/runtime/webhooks/durabletask/instances/abc/terminate?reason={text}"
    )


async def test_http_starter_and_check_status_urls(api: ManagementApi, engine: DurableEngine):
    response = await _call_starter(api, "hello_orchestrator")
    assert response.status_code == 202
    payload = json.loads(response.get_body())
    instance_id = payload["id"]
    assert response.headers["Location"] == payload["statusQueryGetUri"]
    assert payload["statusQueryGetUri"].startswith(
        f"{api.url}/runtime/webhooks/durabletask/instances/{instance_id}?"
    )
    await engine.wait_for(instance_id)
    async with (
        aiohttp.ClientSession() as http,
        http.get(payload["statusQueryGetUri"]) as status_response,
    ):
        assert status_response.status == 200
        status = await status_response.json()
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello Tokyo", "Hello Seattle", "Hello London"]
    assert status["input"] is None
    assert set(status) == {
        "name",
        "instanceId",
        "runtimeStatus",
        "input",
        "customStatus",
        "output",
        "createdTime",
        "lastUpdatedTime",
    }


async def test_status_while_running_is_202_with_location(api: ManagementApi, engine: DurableEngine):
    response = await _call_starter(api, "approval_workflow", 60)
    payload = json.loads(response.get_body())
    async with aiohttp.ClientSession() as http:
        async with http.get(payload["statusQueryGetUri"]) as status_response:
            assert status_response.status == 202
            assert status_response.headers["Location"] == payload["statusQueryGetUri"]
            assert status_response.headers["Retry-After"] == "5"
        send_event = payload["sendEventPostUri"].replace("{eventName}", "Approval")
        async with http.post(send_event, json={"by": "ann"}) as event_response:
            assert event_response.status == 202
        status = await engine.wait_for(payload["id"])
        assert status["output"] == "approved: {'by': 'ann'}"
        async with http.post(send_event, json=True) as gone:
            assert gone.status == 410
        unknown = payload["statusQueryGetUri"].replace(payload["id"], "nope")
        async with http.get(unknown) as missing:
            assert missing.status == 404


async def test_sdk_client_status_and_history(api: ManagementApi, engine: DurableEngine) -> None:
    client = df.DurableOrchestrationClient(api.client_binding_json())
    instance_id = await client.start_new("fan_out_fan_in", None, 3)
    await engine.wait_for(instance_id)
    status = await client.get_status(instance_id, show_history=True, show_history_output=True)
    assert status.runtime_status == OrchestrationRuntimeStatus.Completed
    assert status.output == 14
    assert status.input_ == "3"
    history = status.historyEvents
    assert history[0]["EventType"] == "ExecutionStarted"
    assert history[0]["FunctionName"] == "fan_out_fan_in"
    completed = [e for e in history if e["EventType"] == "TaskCompleted"]
    assert [e["FunctionName"] for e in completed][:1] == ["get_work_batch"]
    assert completed[0]["Result"] == [1, 2, 3]
    assert history[-1]["EventType"] == "ExecutionCompleted"
    assert history[-1]["OrchestrationStatus"] == "Completed"
    assert history[-1]["Result"] == 14
    missing = await client.get_status("no-such-instance")
    assert not missing


async def test_sdk_client_raise_event_terminate_and_purge(
    api: ManagementApi, engine: DurableEngine
) -> None:
    client = df.DurableOrchestrationClient(api.client_binding_json())
    approval_id = await client.start_new("approval_workflow", None, 60)
    await client.raise_event(approval_id, "Approval", True)
    assert (await engine.wait_for(approval_id))["output"] == "approved: true"
    with pytest.raises(Exception, match="is gone"):
        await client.raise_event(approval_id, "Approval", True)
    with pytest.raises(Exception, match="No instance with ID"):
        await client.raise_event("no-such-instance", "Approval", True)

    waiting_id = await client.start_new("waits_forever")
    await client.terminate(waiting_id, "shutting down")
    await engine.wait_for(waiting_id)
    status = await client.get_status(waiting_id)
    assert status.runtime_status == OrchestrationRuntimeStatus.Terminated
    assert status.output == "shutting down"
    await client.terminate(waiting_id, "again")  # 410 is accepted by the SDK

    result = await client.purge_instance_history(waiting_id)
    assert result.instances_deleted == 1
    assert not await client.get_status(waiting_id)
    assert (await client.purge_instance_history(waiting_id)).instances_deleted == 0


async def test_sdk_client_refusals(api: ManagementApi, engine: DurableEngine) -> None:
    client = df.DurableOrchestrationClient(api.client_binding_json())
    instance_id = f"dup-{uuid.uuid4().hex}"
    await client.start_new("waits_forever", instance_id)
    with pytest.raises(Exception, match="already exists"):
        await client.start_new("waits_forever", instance_id)
    with pytest.raises(Exception, match="doesn't exist"):
        await client.start_new("no_such_orchestrator")
    await engine.terminate(instance_id, "done")
    await engine.wait_for(instance_id)
    with pytest.raises(Exception, match="only supported on failed orchestration instances"):
        await client.rewind(instance_id, "please")
    failed_id = await client.start_new("failing_orchestrator")
    await engine.wait_for(failed_id)
    with pytest.raises(Exception, match="Rewind is not supported by the local host"):
        await client.rewind(failed_id, "please")


async def test_sdk_client_entities(api: ManagementApi, engine: DurableEngine) -> None:
    client = df.DurableOrchestrationClient(api.client_binding_json())
    entity_id = df.EntityId("Counter", uuid.uuid4().hex)
    missing = await client.read_entity_state(entity_id)
    assert not missing.entity_exists
    await client.signal_entity(entity_id, "add", 5)
    await client.signal_entity(entity_id, "add", 6)
    await engine.wait_until_idle()
    state = await client.read_entity_state(entity_id)
    assert state.entity_exists
    assert state.entity_state == 11


async def test_sdk_client_queries(api: ManagementApi, engine: DurableEngine) -> None:
    client = df.DurableOrchestrationClient(api.client_binding_json())
    prefix = f"q-{uuid.uuid4().hex[:8]}-"
    done = await client.start_new("hello_orchestrator", f"{prefix}done")
    waiting = await client.start_new("waits_forever", f"{prefix}waiting")
    await engine.wait_for(done)
    await engine.wait_until_idle()

    completed = await client.get_status_by(
        runtime_status=[OrchestrationRuntimeStatus.Completed], instance_id_prefix=prefix
    )
    assert [s.instance_id for s in completed] == [done]
    both = await client.get_status_by(
        created_time_from=datetime.now(UTC) - timedelta(minutes=5), instance_id_prefix=prefix
    )
    assert {s.instance_id for s in both} == {done, waiting}
    running = await client.get_status_by(
        runtime_status=[OrchestrationRuntimeStatus.Running], instance_id_prefix=prefix
    )
    assert [s.instance_id for s in running] == [waiting]

    async with aiohttp.ClientSession() as http:
        url = f"{api.rpc_base_url}instances/?instanceIdPrefix={prefix}&top=1"
        async with http.get(url) as first:
            assert first.status == 200
            page = await first.json()
            token = first.headers["x-ms-continuation-token"]
        async with http.get(url, headers={"x-ms-continuation-token": token}) as second:
            page += await second.json()
            assert "x-ms-continuation-token" not in second.headers
    assert [s["instanceId"] for s in page] == [done, waiting]

    purged = await client.purge_instance_history_by(
        created_time_from=datetime.now(UTC) - timedelta(minutes=5),
        runtime_status=[OrchestrationRuntimeStatus.Completed],
    )
    assert purged.instances_deleted >= 1
    assert not await client.get_status(done)
    assert await client.get_status(waiting)
