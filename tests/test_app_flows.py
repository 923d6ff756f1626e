"""The function app end to end through the Durable Functions SDK's real code paths.

HTTP functions are called with real `func.HttpRequest` objects and the Durable client binding of
the local durable engine, whose management API speaks the extension's HTTP protocol; the agent
entity, the turn orchestration, the workflows and the activities run through the SDK's own
handlers on that engine; storage is a real Azurite.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

from tests.support import CEO, CFO, CTO, App, Reply, app_functions, board_request

# -- registration and reading ------------------------------------------------------------------


async def test_register_then_read_live_state(app: App) -> None:
    reply = await app.register(CEO, goals=[{"description": "Grow revenue", "goal_id": "revenue"}])
    assert reply.status == 201
    assert reply.headers["Location"] == "/api/agents/ceo"
    await app.settle()

    agent = await app.agent("ceo")
    assert agent["lifecycle"] == "sleeping"
    assert agent["definition"]["purpose"] == CEO["purpose"]
    assert [g["goal_id"] for g in agent["goals"]] == ["revenue"]

    listed = await app.call("list_agents", "GET", "agents")
    assert [a["agent_id"] for a in listed.body["items"]] == ["ceo"]


async def test_agent_registered_twice_is_a_conflict(app: App) -> None:
    await app.register(CEO)
    reply = await app.register({**CEO, "purpose": "Another purpose"})
    assert reply.status == 409
    assert reply.body == {
        "error": {
            "code": "already_exists",
            "message": "agent 'ceo' already exists",
            "field": "agent_id",
        }
    }


async def test_listing_is_paged(app: App) -> None:
    for n in range(5):
        await app.register({**CTO, "agent_id": f"agent-{n}"})
    first = await app.call("list_agents", "GET", "agents", params={"page_size": "2"})
    second = await app.call(
        "list_agents",
        "GET",
        "agents",
        params={"page_size": "2", "continuation": first.body["continuation"]},
    )
    assert [a["agent_id"] for a in first.body["items"] + second.body["items"]] == [
        "agent-0",
        "agent-1",
        "agent-2",
        "agent-3",
    ]


# -- events and turns --------------------------------------------------------------------------


async def test_event_wakes_the_agent_and_the_turn_is_recorded(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    reply = await app.post_event("ceo", board_request("e-1"))
    assert reply.status == 202
    assert reply.body["history_uri"] == "/api/agents/ceo/history"
    assert "status" not in reply.body  # the Durable management URLs carry the system key
    status = await app.engine.wait_for(reply.body["turn"]["instance_id"], timeout=30)
    assert status["runtimeStatus"] == "Completed"
    await app.settle()

    agent = await app.agent("ceo")
    assert agent["lifecycle"] == "sleeping"
    assert agent["counters"]["events_received"] == 1
    assert agent["counters"]["decisions"] == 1
    assert agent["pending_events"] == []
    history = await app.call(
        "agent_history", "GET", "agents/ceo/history", route={"agent_id": "ceo"}
    )
    (item,) = history.body["items"]
    assert item["outcome"]["chosen"] == "Draft a strategic plan to grow revenue"


async def test_duplicate_delivery_has_one_effect(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    first = await app.post_event("ceo", board_request("e-1"))
    await app.settle()
    again = await app.post_event("ceo", board_request("e-1"))
    await app.settle()

    assert first.body["turn"]["instance_id"] == again.body["turn"]["instance_id"]
    assert again.body["turn"]["started"] is False
    agent = await app.agent("ceo")
    assert agent["counters"]["events_received"] == 1
    assert agent["counters"]["decisions"] == 1
    assert agent["counters"]["duplicates_dropped"] == 1


async def test_events_are_processed_in_order_one_turn_at_a_time(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    for n in range(4):
        await app.post_event("ceo", board_request(f"e-{n}", situation=f"n={n}"))
    await app.settle()

    agent = await app.agent("ceo")
    assert agent["counters"]["decisions"] == 4
    history = await app.call(
        "agent_history", "GET", "agents/ceo/history", route={"agent_id": "ceo"}
    )
    assert [i["event"]["id"] for i in history.body["items"]] == ["e-3", "e-2", "e-1", "e-0"]
    processed = (await app.engine.read_entity("agent", "ceo")).state["state"]["processed_event_ids"]
    assert processed == ["e-0", "e-1", "e-2", "e-3"]


async def test_out_of_order_signals_follow_event_time(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    await app.call("pause_agent", "POST", "agents/ceo/pause", route={"agent_id": "ceo"})
    await app.settle()
    late = {**board_request("late"), "time": "2026-01-01T10:00:00Z"}
    early = {**board_request("early"), "time": "2026-01-01T09:00:00Z"}
    await app.post_event("ceo", late)
    await app.post_event("ceo", early)
    await app.settle()
    assert (await app.agent("ceo"))["pending_events"] == ["early", "late"]

    resumed = await app.call("resume_agent", "POST", "agents/ceo/resume", route={"agent_id": "ceo"})
    assert resumed.status == 202
    await app.settle()
    processed = (await app.engine.read_entity("agent", "ceo")).state["state"]["processed_event_ids"]
    assert processed == ["early", "late"]


async def test_a_failing_activity_is_retried_then_recorded(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    async def broken_act(*args: Any) -> list[str]:
        calls.append(args)
        raise ConnectionError("message bus unreachable")

    monkeypatch.setattr("aos.turns.act", broken_act)
    await app.register(CEO)
    await app.settle()
    turns = [
        (await app.post_event("ceo", board_request(event_id))).body["turn"]["instance_id"]
        for event_id in ("e-1", "e-2")
    ]
    for instance_id in turns:
        await app.engine.wait_for(instance_id, timeout=30)
    await app.settle()

    assert len(calls) == 2 * 3  # each event: three attempts
    agent = await app.agent("ceo")
    assert agent["turns_failed"] == 2
    assert agent["last_failure"]["step"] == "turn_act"
    assert "message bus unreachable" in agent["last_failure"]["error"]
    assert agent["lifecycle"] == "sleeping"  # not wedged
    assert agent["pending_events"] == []
    history = await app.call(
        "agent_history", "GET", "agents/ceo/history", route={"agent_id": "ceo"}
    )
    assert {i["outcome"]["status"] for i in history.body["items"]} == {"failed"}


async def test_decision_messages_reach_the_other_agent(app: App) -> None:
    from aos.messaging.local_broker import LocalBroker
    from aos.runtime import agent_store, settings

    await app.register(CEO)
    await app.register(CFO)
    await app.settle()
    option = {
        "action": "Draft a strategic plan to grow revenue",
        "messages": [{"to": "cfo", "type": "finance.plan.review", "data": {"plan": "growth"}}],
    }
    event = board_request("e-1", options=["Order pizza", option])
    event["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await app.post_event("ceo", event)
    await app.settle()

    current = settings()
    broker = LocalBroker.from_settings(current, agent_store().clients)
    receiver = broker.get_subscription_receiver(current.messages_topic, current.subscription)
    (message,) = await receiver.receive_messages(max_message_count=5)
    assert message.subject == "cfo"
    handler = app_functions()["on_agent_message"].get_user_function()
    from aos.devhost.servicebus import function_message

    await handler(message=function_message(message), client=app.api.client_binding_json())
    await receiver.complete_message(message)
    await app.settle()

    cfo = await app.agent("cfo")
    assert cfo["counters"]["events_received"] == 1
    history = await app.call(
        "agent_history", "GET", "agents/cfo/history", route={"agent_id": "cfo"}
    )
    (item,) = history.body["items"]
    assert item["event"]["type"] == "finance.plan.review"
    assert item["event"]["correlationid"] == "e-1"
    assert item["event"]["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    await receiver.close()


# -- Service Bus wake-up -----------------------------------------------------------------------


def service_bus_message(body: bytes, message_id: str = "m-1") -> ServiceBusMessage:
    return ServiceBusMessage(
        body=body,
        message_id=message_id,
        content_type="application/cloudevents+json",
        application_properties={},
        user_properties={},
        delivery_count=1,
    )


async def test_topic_event_reaches_every_subscriber(app: App) -> None:
    await app.register(CEO)
    await app.register(CFO)
    await app.register(CTO)
    await app.settle()
    event = {"specversion": "1.0", "id": "q-1", "source": "/erp", "type": "finance.quarter.closed"}
    handler = app_functions()["on_event"].get_user_function()
    await handler(
        message=service_bus_message(json.dumps(event).encode()),
        client=app.api.client_binding_json(),
    )
    await app.settle()
    assert (await app.agent("cfo"))["counters"]["events_received"] == 1
    assert (await app.agent("ceo"))["counters"]["events_received"] == 0


async def test_malformed_message_fails_with_its_reason(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    from aos.messaging.errors import MalformedMessageError

    handler = app_functions()["on_event"].get_user_function()
    bad = json.dumps({"specversion": "1.0", "id": "x", "type": "t"}).encode()  # no source
    with pytest.raises(MalformedMessageError) as raised:
        await handler(message=service_bus_message(bad), client=app.api.client_binding_json())
    assert raised.value.field == "source"
    assert "malformed event m-1" in caplog.text


async def trigger(app: App, function: str, event: dict) -> None:
    """Run a Service Bus trigger of the app on `event`, as a structured-mode CloudEvent."""
    handler = app_functions()[function].get_user_function()
    await handler(
        message=service_bus_message(json.dumps(event).encode()),
        client=app.api.client_binding_json(),
    )


async def test_workflow_start_event_starts_it_once(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    event = {
        "specversion": "1.0",
        "id": "wf-1",
        "source": "/ops",
        "type": "aos.workflow.start",
        "data": {
            "workflow": "fanout",
            "input": {"agents": ["ceo"], "task": {"options": ["Plan growth", "Order pizza"]}},
        },
    }
    for _ in range(2):
        await trigger(app, "on_event", event)
    status = await app.engine.wait_for("workflow-wf-1", timeout=30)
    assert status["output"]["chosen"] == "Plan growth"
    listed = await app.engine.list_instances(instance_id_prefix="workflow-")
    assert len(listed[0] if isinstance(listed, tuple) else listed) == 1
    await app.settle()
    chain = await app.call("agent_audit", "GET", "agents/ceo/audit", route={"agent_id": "ceo"})
    started = [r for r in chain.body["items"] if r["data"].get("operation") == "start_workflow"]
    assert [(r["actor"], r["data"]["instance_id"]) for r in started] == [
        ("event:/ops", "workflow-wf-1")
    ]
    decided = [r for r in chain.body["items"] if r["kind"] == "decision"]
    assert [(r["correlation_id"], r["data"]["chosen"]) for r in decided] == [
        ("workflow-wf-1", "Plan growth")
    ]


async def test_an_agent_message_cannot_start_a_workflow(app: App) -> None:
    """Policies judged it as a message to an agent; it is delivered as one, nothing starts."""
    await app.register({**CEO, "subscriptions": ["aos.workflow.start"]})
    await app.settle()
    event = {
        "specversion": "1.0",
        "id": "sneaky",
        "source": "/aos/agents/cfo",
        "type": "aos.workflow.start",
        "data": {"workflow": "heartbeat", "input": {"agent_id": "ceo", "interval_seconds": 1}},
    }
    await trigger(app, "on_agent_message", event)
    await app.settle()
    listed = await app.engine.list_instances(instance_id_prefix="workflow-")
    assert len(listed[0] if isinstance(listed, tuple) else listed) == 0
    assert (await app.agent("ceo"))["counters"]["events_received"] == 1


# -- workflows ---------------------------------------------------------------------------------


async def start_workflow(app: App, name: str, body: dict) -> Reply:
    return await app.call(
        "start_workflow", "POST", f"workflows/{name}", body, route={"workflow": name}
    )


async def finished(app: App, reply: Reply) -> dict:
    assert reply.status == 202, reply.body
    status = await app.engine.wait_for(reply.body["id"], timeout=30)
    assert status["runtimeStatus"] == "Completed", status
    return status["output"]


TASK = {
    "situation": "Where should next year's budget go?",
    "options": ["Order pizza for everyone", "Expand the engineering team for growth"],
}


async def test_chain_fanout_and_vote(app: App) -> None:
    for definition in (CEO, CFO, CTO):
        await app.register(definition)
    await app.settle()

    chain = await finished(
        app, await start_workflow(app, "chain", {"agents": ["ceo", "cto"], "task": TASK})
    )
    assert chain["status"] == "completed"
    assert chain["chosen"] == "Expand the engineering team for growth"
    assert [s["agent_id"] for s in chain["steps"]] == ["ceo", "cto"]

    fanout = await finished(
        app, await start_workflow(app, "fanout", {"agents": ["ceo", "cto", "cfo"], "task": TASK})
    )
    assert fanout["chosen"] == "Expand the engineering team for growth"
    assert set(fanout["supporters"]["Expand the engineering team for growth"]) >= {"ceo", "cto"}

    vote = await finished(
        app, await start_workflow(app, "vote", {"agents": ["ceo", "cto", "cfo"], "task": TASK})
    )
    assert vote["status"] == "consensus"
    assert vote["ballots"]["cfo"] is None  # the CFO's purpose is not served: it abstains
    strict = await finished(
        app,
        await start_workflow(
            app, "vote", {"agents": ["ceo", "cto", "cfo"], "task": TASK, "quorum": 3}
        ),
    )
    assert strict["status"] == "no_quorum"


async def test_chain_stops_when_an_agent_declines(app: App) -> None:
    await app.register(CEO)
    await app.register(CFO)
    await app.settle()
    output = await finished(
        app,
        await start_workflow(
            app, "chain", {"agents": ["ceo", "cfo"], "task": {"options": ["Plan company growth"]}}
        ),
    )
    assert output["status"] == "stopped"
    assert output["stopped_by"] == "cfo"


async def test_approval_approved_rejected_and_expired(app: App) -> None:
    approved = await start_workflow(
        app, "approval", {"subject": "Buy a company", "timeout_seconds": 600}
    )
    rejected = await start_workflow(
        app, "approval", {"subject": "Sell the office", "timeout_seconds": 600}
    )
    expired = await start_workflow(app, "approval", {"subject": "Too slow", "timeout_seconds": 1})
    await app.settle()

    status = await app.call(
        "workflow_status", "GET", f"workflows/{approved.body['id']}",
        route={"instance_id": approved.body["id"]},
    )  # fmt: skip
    assert status.body["custom_status"]["waiting_for"] == "approval"

    async def answer(instance: str, body: dict) -> Reply:
        return await app.call(
            "send_approval", "POST", f"workflows/{instance}/approval", body,
            route={"instance_id": instance},
        )  # fmt: skip

    assert (await answer(approved.body["id"], {"decision": "maybe", "by": "x"})).status == 400
    assert (await answer(approved.body["id"], {"decision": "approve", "by": "ana"})).status == 202
    assert (await answer(rejected.body["id"], {"decision": "reject", "by": "bo"})).status == 202

    assert (await finished(app, approved))["status"] == "approved"
    assert (await finished(app, rejected))["by"] == "key:bo"  # a function key names no person
    assert (await finished(app, expired))["status"] == "expired"
    late = await answer(expired.body["id"], {"decision": "approve", "by": "ana"})
    assert late.status == 409


async def test_heartbeat_loop_continues_as_new_and_stops(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    output = await finished(
        app,
        await start_workflow(
            app, "heartbeat", {"agent_id": "ceo", "interval_seconds": 1, "iterations": 2}
        ),
    )
    assert output == {"status": "completed", "beats": 2}
    await app.settle()
    assert (await app.agent("ceo"))["counters"]["events_received"] == 2


# -- goals, lifecycle and 4xx paths -------------------------------------------------------------


async def test_goals_through_the_api(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    added = await app.call(
        "add_goal", "POST", "agents/ceo/goals", {"description": "Grow revenue by 50%"},
        route={"agent_id": "ceo"},
    )  # fmt: skip
    assert added.status == 202
    await app.settle()
    goal_id = added.body["goal_id"]
    progress = await app.call(
        "update_goal", "PUT", f"agents/ceo/goals/{goal_id}", {"progress": 0.4},
        route={"agent_id": "ceo", "goal_id": goal_id},
    )  # fmt: skip
    assert progress.status == 202
    await app.settle()
    goals = await app.call("list_goals", "GET", "agents/ceo/goals", route={"agent_id": "ceo"})
    assert [(g["goal_id"], g["progress"]) for g in goals.body["items"]] == [(goal_id, 0.4)]


async def test_error_answers(app: App) -> None:
    await app.register(CEO)
    await app.settle()

    async def expect(reply: Reply, status: int, code: str, field: str | None) -> None:
        assert reply.status == status, reply.body
        assert reply.body["error"]["code"] == code
        assert reply.body["error"].get("field") == field
        assert reply.body["error"]["message"]

    ceo = {"agent_id": "ceo"}
    await expect(
        await app.call("register_agent", "POST", "agents", raw=b"{not json"),
        400,
        "invalid_input",
        "body",
    )
    await expect(
        await app.call(
            "register_agent", "POST", "agents", {"definition": {**CEO, "agent_id": "Bad Id"}}
        ),
        400,
        "invalid_input",
        "definition.agent_id",
    )
    await expect(
        await app.call("register_agent", "POST", "agents", raw=b"x" * (1024 * 1024 + 1)),
        413,
        "payload_too_large",
        "body",
    )
    await expect(
        await app.call("get_agent", "GET", "agents/NOPE", route={"agent_id": "NOPE"}),
        400,
        "invalid_input",
        "agent_id",
    )
    await expect(
        await app.call("get_agent", "GET", "agents/ghost", route={"agent_id": "ghost"}),
        404,
        "not_found",
        "agent_id",
    )
    await expect(await app.post_event("ghost", board_request("e")), 404, "not_found", "agent_id")
    await expect(
        await app.post_event("ceo", {**board_request("e"), "subject": "cfo"}),
        400,
        "invalid_input",
        "subject",
    )
    await expect(
        await app.post_event("ceo", {"id": "e", "source": "/s"}), 400, "invalid_input", "type"
    )
    await expect(
        await app.call("list_agents", "GET", "agents", params={"page_size": "0"}),
        400,
        "invalid_input",
        "page_size",
    )
    await expect(
        await app.call("list_agents", "GET", "agents", params={"continuation": "garbage"}),
        400,
        "invalid_input",
        "continuation",
    )
    await expect(
        await app.call("list_agents", "GET", "agents", params={"lifecycle": "dreaming"}),
        400,
        "invalid_input",
        "lifecycle",
    )
    await expect(
        await app.call(
            "update_agent",
            "PUT",
            "agents/ceo",
            {**CEO, "purpose": "Changed"},
            route=ceo,
            headers={"If-Match": '"stale"'},
        ),
        412,
        "concurrency_conflict",
        "If-Match",
    )
    await expect(
        await app.call("update_agent", "PUT", "agents/ceo", {**CEO, "agent_id": "cfo"}, route=ceo),
        400,
        "invalid_input",
        "agent_id",
    )
    await expect(
        await app.call(
            "update_goal",
            "PUT",
            "agents/ceo/goals/none",
            {"progress": 0.5},
            route={**ceo, "goal_id": "none"},
        ),
        404,
        "not_found",
        "goal_id",
    )
    await expect(
        await app.call("add_goal", "POST", "agents/ceo/goals", {"description": ""}, route=ceo),
        400,
        "invalid_input",
        "description",
    )
    await expect(await start_workflow(app, "teleport", {}), 404, "not_found", "workflow")
    await expect(
        await start_workflow(app, "vote", {"agents": ["ceo"], "task": TASK, "quorum": 2}),
        400,
        "invalid_input",
        None,
    )
    await expect(
        await start_workflow(app, "chain", {"agents": ["ghost"], "task": TASK}),
        404,
        "not_found",
        "agent_id",
    )
    await expect(
        await app.call(
            "workflow_status", "GET", "workflows/nothing", route={"instance_id": "nothing"}
        ),
        404,
        "not_found",
        "instance_id",
    )
    fanout = await start_workflow(app, "fanout", {"agents": ["ceo"], "task": TASK})
    await expect(
        await app.call(
            "send_approval",
            "POST",
            f"workflows/{fanout.body['id']}/approval",
            {"decision": "approve", "by": "x"},
            route={"instance_id": fanout.body["id"]},
        ),
        400,
        "invalid_input",
        "instance_id",
    )

    await app.call("retire_agent", "POST", "agents/ceo/retire", route=ceo)
    await app.settle()
    await expect(
        await app.call("resume_agent", "POST", "agents/ceo/resume", route=ceo),
        409, "invalid_transition", "lifecycle",
    )  # fmt: skip
    await expect(
        await app.call(
            "add_goal", "POST", "agents/ceo/goals", {"description": "Too late"}, route=ceo
        ),
        409, "invalid_transition", "lifecycle",
    )  # fmt: skip


async def test_update_with_the_current_etag(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    first = await app.call(
        "update_agent", "PUT", "agents/ceo", {**CEO, "purpose": "Growth first"},
        route={"agent_id": "ceo"},
    )  # fmt: skip
    assert first.status == 200
    second = await app.call(
        "update_agent", "PUT", "agents/ceo", {**CEO, "purpose": "Growth always"},
        route={"agent_id": "ceo"}, headers={"If-Match": first.headers["ETag"]},
    )  # fmt: skip
    assert second.status == 200
    await app.settle()
    assert (await app.agent("ceo"))["definition"]["purpose"] == "Growth always"


async def test_openapi_is_served_anonymously(app: App) -> None:
    handler = app_functions()["openapi"].get_user_function()
    response = handler(
        func.HttpRequest(method="GET", url="http://localhost/api/openapi.json", body=b"")
    )
    assert response.status_code == 200
    assert "/api/agents/{agent_id}/events" in json.loads(response.get_body())["paths"]


# -- inference ---------------------------------------------------------------------------------


def judgement(choice: int | None, *scores: float) -> str:
    judgements = [{"option": i, "alignment": s, "reason": f"r{i}"} for i, s in enumerate(scores)]
    return json.dumps({"choice": choice, "judgements": judgements})


@pytest.fixture
async def lorax(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    from aos.inference.client import close_shared_clients
    from tests.inference.fakeserver import FakeLorax

    server = FakeLorax(adapters={"acme/ceo-lora"})
    await server.start()
    monkeypatch.setenv("AOS_INFERENCE_ENDPOINT", server.url)
    monkeypatch.setenv("AOS_INFERENCE_ADAPTERS", json.dumps({"ceo": "acme/ceo-lora"}))
    yield server
    await server.stop()
    await close_shared_clients()


async def test_the_turns_decision_comes_from_the_agents_adapter(app: App, lorax: Any) -> None:
    from aos.runtime import agent_store
    from aos.storage.context import Memory

    lorax.texts(judgement(1, 0.1, 0.95))
    await app.register({**CEO, "adapter_name": "ceo"})
    await app.settle()
    await agent_store().context.remember("ceo", Memory(content="The board prefers Europe"))
    reply = await app.post_event("ceo", board_request("e-1"))
    await app.engine.wait_for(reply.body["turn"]["instance_id"], timeout=30)
    await app.settle()

    (request,) = lorax.requests
    assert request.path == "/generate"
    assert request.body["parameters"]["adapter_id"] == "acme/ceo-lora"
    assert "The board prefers Europe" in request.body["inputs"]  # what the agent recalled
    history = await app.call(
        "agent_history", "GET", "agents/ceo/history", route={"agent_id": "ceo"}
    )
    outcome = history.body["items"][0]["outcome"]
    assert outcome["method"] == "combined"
    assert outcome["chosen"] == "Draft a strategic plan to grow revenue"
    counters = (await app.agent("ceo"))["counters"]
    assert counters["inference_calls"] == 1
    assert (counters["prompt_tokens"], counters["completion_tokens"]) == (11, 7)


async def test_a_dead_endpoint_keeps_the_event_for_later(
    app: App, lorax: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.inference.fakeserver import Reply

    monkeypatch.setattr("aos.workflows.turn.DEFER_SECONDS", 1)
    monkeypatch.setenv("AOS_INFERENCE_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AOS_INFERENCE_BREAKER_FAILURES", "1")
    monkeypatch.setenv("AOS_INFERENCE_BREAKER_COOLDOWN_SECONDS", "1")
    lorax.reply(Reply(status=503, body={"error": "overloaded", "error_type": "overloaded"}))
    lorax.texts(judgement(1, 0.1, 0.95))
    await app.register({**CEO, "adapter_name": "ceo"})
    await app.settle()
    await app.post_event("ceo", board_request("e-1"))

    agent: dict = {}
    for _ in range(100):  # the deferred turn retries after DEFER_SECONDS
        await asyncio.sleep(0.2)
        entity = (await app.engine.read_entity("agent", "ceo")).state
        agent = await app.agent("ceo")
        if agent["counters"]["decisions"] == 1 and not agent["pending_events"]:
            break
    assert entity["turns_deferred"] == 1
    assert agent["counters"]["decisions"] == 1
    assert agent["counters"]["events_received"] == 1
    assert any("kept e-1 for later" in m["text"] for m in agent["working_memory"])
    assert len(lorax.requests) == 2  # one failed call, then the retry after the pause


# -- MCP ---------------------------------------------------------------------------------------


async def mcp_call(app: App, agent_id: str, method: str, params: dict, call_id: int = 1) -> Reply:
    return await app.call(
        "agent_mcp",
        "POST",
        f"agents/{agent_id}/mcp",
        {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params},
        route={"agent_id": agent_id},
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )


async def test_mcp_client_reads_the_live_agent_and_the_next_turn_sees_its_memory(app: App) -> None:
    await app.register(CEO, goals=[{"description": "Grow revenue", "goal_id": "revenue"}])
    await app.settle()
    client_info = {"name": "t", "version": "0"}
    hello = await mcp_call(
        app,
        "ceo",
        "initialize",
        {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client_info},
    )
    assert hello.status == 200
    assert hello.body["result"]["serverInfo"]["name"] == "aos-agent-ceo"

    state = await mcp_call(app, "ceo", "resources/read", {"uri": "aos://agents/ceo/state"}, 2)
    live = json.loads(state.body["result"]["contents"][0]["text"])
    assert [g["goal_id"] for g in live["goals"]] == ["revenue"]  # read from the entity

    memory = {"content": "The board prefers Europe", "memory_id": "board"}
    remembered = await mcp_call(
        app, "ceo", "tools/call", {"name": "remember", "arguments": memory}, 3
    )
    assert remembered.body["result"]["isError"] is False
    new_goal = {"description": "Open a Lisbon office", "goal_id": "lisbon"}
    goal = await mcp_call(app, "ceo", "tools/call", {"name": "add_goal", "arguments": new_goal}, 4)
    assert goal.body["result"]["isError"] is False
    await app.settle()
    assert {g["goal_id"] for g in (await app.agent("ceo"))["goals"]} == {"revenue", "lisbon"}
    chain = await app.call("agent_audit", "GET", "agents/ceo/audit", route={"agent_id": "ceo"})
    changes = [(r["actor"], r["data"]["operation"]) for r in chain.body["items"]]
    assert changes == [("key", "register"), ("key", "mcp_remember"), ("key", "mcp_add_goal")]
    assert chain.body["items"][1]["data"]["memory_id"] == "board"

    reply = await app.post_event("ceo", board_request("e-1"))
    instance = reply.body["turn"]["instance_id"]
    await app.engine.wait_for(instance, timeout=30)
    status = await app.engine.get_status(instance, show_history=True, show_history_output=True)
    assert "The board prefers Europe" in json.dumps(status["historyEvents"])

    unknown = await mcp_call(app, "ghost", "resources/read", {"uri": "aos://agents/ghost/state"})
    assert "not registered" in json.dumps(unknown.body)
    refused = await app.call(
        "agent_mcp", "GET", "agents/ceo/mcp", route={"agent_id": "ceo"},
        headers={"Accept": "text/event-stream"},
    )  # fmt: skip
    assert refused.status == 405


@pytest.fixture
async def mcp_server_url() -> AsyncIterator[str]:
    """An external MCP server, reached over real HTTP: the CFO's context server."""
    from aiohttp import web

    from aos.devhost.azurite import free_ports
    from aos.mcp.http import handle_mcp_request
    from aos.mcp.server import ContextMCPServer
    from aos.runtime import agent_store

    async def serve(request: web.Request) -> web.Response:
        server = ContextMCPServer(request.match_info["agent_id"], agent_store())
        status, headers, body = await handle_mcp_request(
            server, request.method, dict(request.headers), await request.read()
        )
        return web.Response(status=status, headers=headers, body=body)

    web_app = web.Application()
    web_app.router.add_route("*", "/{agent_id}/mcp", serve)
    runner = web.AppRunner(web_app)
    await runner.setup()
    (port,) = free_ports(1)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_chosen_action_calls_tools_on_the_agents_mcp_servers(
    app: App, mcp_server_url: str
) -> None:
    from aos.devhost.azurite import free_ports
    from aos.runtime import agent_store

    (closed,) = free_ports(1)
    servers = [
        {"name": "cfo-context", "url": f"{mcp_server_url}/cfo/mcp"},
        {"name": "offline", "url": f"http://127.0.0.1:{closed}/mcp", "timeout_seconds": 5},
    ]
    await app.register({**CEO, "mcp_servers": servers})
    await app.register(CFO)
    await app.settle()
    note = {"content": "CEO plans growth in Europe", "memory_id": "from-ceo"}
    option = {
        "action": "Draft a strategic plan to grow revenue",
        "tool_calls": [
            {"server": "cfo-context", "tool": "remember", "arguments": note},
            {"server": "offline", "tool": "remember", "arguments": note},
            {"server": "unknown", "tool": "remember", "arguments": note},
        ],
    }
    reply = await app.post_event("ceo", board_request("e-1", options=["Order pizza", option]))
    await app.engine.wait_for(reply.body["turn"]["instance_id"], timeout=60)
    await app.settle()

    history = await app.call(
        "agent_history", "GET", "agents/ceo/history", route={"agent_id": "ceo"}
    )
    outcome = history.body["items"][0]["outcome"]
    assert outcome["status"] == "decided"
    first, offline, unknown = outcome["tool_results"]
    assert first["ok"] is True
    assert offline["ok"] is False and offline["error"]
    assert "lists no MCP server 'unknown'" in unknown["error"]
    memory = await agent_store().context.get_memory("cfo", "from-ceo")
    assert memory.content == "CEO plans growth in Europe"


def test_mcp_server_refs_are_validated() -> None:
    from pydantic import ValidationError

    from aos.agents.models import AgentDefinition

    with pytest.raises(ValidationError, match="exactly one of url"):
        AgentDefinition(agent_id="a", purpose="p", mcp_servers=[{"name": "x"}])
    with pytest.raises(ValidationError, match="unique"):
        AgentDefinition(
            agent_id="a",
            purpose="p",
            mcp_servers=[{"name": "x", "url": "http://a"}, {"name": "x", "url": "http://b"}],
        )


async def test_a_redelivery_long_after_its_turn_has_one_effect(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aos.agents.state.PROCESSED_EVENTS_WINDOW", 1)
    await app.register(CEO)
    await app.settle()
    for event_id in ("old", "newer"):
        await app.post_event("ceo", board_request(event_id))
        await app.settle()
    again = await app.post_event("ceo", board_request("old"))  # out of the id window by now
    await app.settle()
    assert again.body["turn"]["duplicate"] is True
    agent = await app.agent("ceo")
    assert agent["counters"]["decisions"] == 2
    assert agent["counters"]["duplicates_dropped"] == 1
    assert agent["pending_events"] == []


async def test_a_full_queue_refuses_with_retry_later(app: App) -> None:
    from aos.agents.entity import MAX_PENDING_EVENTS

    await app.register(CEO)
    await app.settle()
    await app.call("pause_agent", "POST", "agents/ceo/pause", route={"agent_id": "ceo"})
    await app.settle()
    for n in range(MAX_PENDING_EVENTS):
        assert (await app.post_event("ceo", board_request(f"e-{n}"))).status == 202
        await app.settle()
    refused = await app.post_event("ceo", board_request("one-too-many"))
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "30"
    assert refused.body["error"]["code"] == "busy"
