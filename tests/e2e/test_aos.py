"""AOS itself (the repository's function_app.py) run by `python -m aos.devhost` on Azurite.

Agents are registered over HTTP; events reach them through the local broker (the host's
`POST /devhost/topics/{topic}/messages`), wake them through the Service Bus triggers, and run
their turns as Durable orchestrations on the host's engine; the tests read the results back over
HTTP, and kill and restart the host to show nothing is lost or done twice.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aos.messaging.local_broker import LocalBroker
from aos.settings import Settings
from aos.storage.clients import StorageClients
from tests.support import CEO, CFO, CTO

from .conftest import FUNCTION_KEY, TASK_HUB, Host, wait_for, wait_for_instance

T = TypeVar("T")

GROW = "Draft a strategic plan to grow revenue"
EVENTS = "aos-events"


def board_request(event_id: str, options: list[Any] | None = None, **extra: Any) -> dict:
    """An event for the CEO (by subject) that asks for a decision."""
    return {
        "id": event_id,
        "source": "/board",
        "type": "board.request",
        "subject": "ceo",
        "data": {"situation": "Budget approved", "options": options or ["Order pizza", GROW]},
        **extra,
    }


# -- talking to AOS over HTTP ----------------------------------------------------------------


def register(host: Host, *definitions: dict) -> None:
    for definition in definitions:
        reply = host.request("POST", "/api/agents", {"definition": definition})
        assert reply.status == 201, reply.text
    for definition in definitions:  # the entity registers it asynchronously (a signal)
        agent_id = definition["agent_id"]
        wait_for(
            lambda a=agent_id: host.request("GET", f"/api/agents/{a}").status == 200,
            f"agent {agent_id} to be registered",
        )


def agent(host: Host, agent_id: str) -> dict:
    reply = host.request("GET", f"/api/agents/{agent_id}")
    assert reply.status == 200, reply.text
    return reply.body


def history(host: Host, agent_id: str) -> list[dict]:
    reply = host.request("GET", f"/api/agents/{agent_id}/history")
    assert reply.status == 200, reply.text
    return reply.body["items"]


def idle(host: Host, agent_id: str, **counters: int) -> dict:
    """Wait until the agent has no turn running or pending and its counters are at least these;
    returns its state."""

    def probe() -> dict | None:
        state = agent(host, agent_id)
        if state["active_turn"] or state["pending_events"]:
            return None
        if any(state["counters"][name] < value for name, value in counters.items()):
            return None
        return state

    return wait_for(probe, f"agent {agent_id} to settle with {counters}", timeout=60)


def send(host: Host, *events: dict) -> None:
    reply = host.send_events(EVENTS, list(events))
    assert reply.status == 201, reply.text
    assert reply.body["message_ids"] == [e["id"] for e in events]


# -- looking at the local broker's queues directly -----------------------------------------


def with_broker(settings: Settings, use: Callable[[LocalBroker], Awaitable[T]]) -> T:
    async def run() -> T:
        async with StorageClients.from_settings(settings) as clients:
            return await use(LocalBroker.from_settings(settings, clients))

    return asyncio.run(run())


def messages_in(settings: Settings, topic: str) -> int:
    """Messages in the AOS subscription's queue, locked ones included."""

    async def count(broker: LocalBroker) -> int:
        from azure.core.exceptions import ResourceNotFoundError

        name = broker.queue_name(topic, settings.subscription)
        try:
            properties = await broker.clients.queues().get_queue_client(name).get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return properties.approximate_message_count

    return with_broker(settings, count)


# -- the tests ---------------------------------------------------------------------------------


def test_events_through_the_broker_wake_agents(aos_host: Host) -> None:
    assert aos_host.request("POST", "/api/agents", {"definition": CEO}, key=None).status == 401
    register(aos_host, CEO, CFO, CTO)
    # Only the master key may send to a topic.
    assert aos_host.send_events(EVENTS, board_request("e-0"), key=FUNCTION_KEY).status == 401

    quarter = {"id": "q-1", "source": "/erp", "type": "finance.quarter.closed", "data": {}}
    send(aos_host, board_request("e-1"), quarter)

    ceo = idle(aos_host, "ceo", events_received=1, decisions=1)
    assert ceo["counters"]["events_received"] == 1
    assert ceo["counters"]["decisions"] == 1
    assert ceo["counters"]["actions_taken"] == 1
    assert ceo["lifecycle"] == "sleeping"
    (item,) = history(aos_host, "ceo")
    assert item["event"]["id"] == "e-1"
    assert item["outcome"]["status"] == "decided"
    assert item["outcome"]["outcome"] == "act"
    assert item["outcome"]["chosen"] == GROW

    # No subject: every agent subscribed to the type gets it (the CFO, by "finance.*").
    wait_for(lambda: history(aos_host, "cfo"), "the CFO's history")
    idle(aos_host, "cfo", events_received=1)
    (item,) = history(aos_host, "cfo")
    assert item["event"]["id"] == "q-1"
    assert item["outcome"]["status"] == "observed"  # no options: nothing to decide
    assert agent(aos_host, "cfo")["counters"]["decisions"] == 0
    assert agent(aos_host, "cto")["counters"]["events_received"] == 0
    assert history(aos_host, "cto") == []


def test_send_command_reaches_the_agent(aos_host: Host, tmp_path: Path) -> None:
    """`python -m aos.devhost send --topic T FILE` puts events on the same local broker."""
    register(aos_host, CEO)
    events = tmp_path / "events.json"
    events.write_text(json.dumps([board_request("e-cli-1"), board_request("e-cli-2")]))
    command = [sys.executable, "-m", "aos.devhost", "--app-dir", str(aos_host.app_dir)]
    sent = subprocess.run(
        [*command, "send", "--topic", EVENTS, str(events)],
        env=aos_host.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "sent e-cli-1 (board.request) to aos-events" in sent.stdout
    ceo = idle(aos_host, "ceo", decisions=2)
    assert ceo["counters"]["events_received"] == 2
    assert sorted(i["event"]["id"] for i in history(aos_host, "ceo")) == ["e-cli-1", "e-cli-2"]


def test_agent_to_agent_message_goes_through_the_broker(aos_host: Host) -> None:
    register(aos_host, CEO, CFO)
    review = {"to": "cfo", "type": "finance.plan.review", "data": {"plan": "growth"}}
    send(aos_host, board_request("e-1", ["Order pizza", {"action": GROW, "messages": [review]}]))

    idle(aos_host, "ceo", decisions=1)
    (item,) = history(aos_host, "ceo")
    assert item["outcome"]["chosen"] == GROW
    (message_id,) = item["outcome"]["messages_sent"]

    # The CEO's turn published to aos-agent-messages; the host's on_agent_message trigger
    # received it from the local broker and woke the CFO.
    wait_for(lambda: history(aos_host, "cfo"), "the message to reach the CFO")
    cfo = idle(aos_host, "cfo", events_received=1)
    assert cfo["counters"]["events_received"] == 1
    (received,) = history(aos_host, "cfo")
    assert received["event"]["id"] == message_id
    assert received["event"]["type"] == "finance.plan.review"
    assert received["event"]["source"] == "/aos/agents/ceo"
    assert received["event"]["data"] == {"plan": "growth"}
    assert received["event"]["correlationid"] == "e-1"


def test_duplicate_delivery_has_one_effect(aos_host: Host, settings: Settings) -> None:
    register(aos_host, CEO)
    event = board_request("e-dup")
    # Two copies in one send: the host may well handle them at the same time.
    send(aos_host, event, event)
    idle(aos_host, "ceo", decisions=1)
    wait_for(lambda: messages_in(settings, EVENTS) == 0, "both copies to be settled")
    first = idle(aos_host, "ceo")
    assert first["counters"]["events_received"] == 1
    assert first["counters"]["decisions"] == 1
    dropped = first["counters"]["duplicates_dropped"]

    # A redelivery after the turn finished: dropped, and counted as such.
    send(aos_host, event)
    wait_for(
        lambda: agent(aos_host, "ceo")["counters"]["duplicates_dropped"] == dropped + 1,
        "the redelivery to be dropped",
    )
    wait_for(lambda: messages_in(settings, EVENTS) == 0, "the redelivery to be settled")
    again = idle(aos_host, "ceo")
    assert again["counters"]["events_received"] == 1
    assert again["counters"]["decisions"] == 1
    assert again["counters"]["actions_taken"] == 1
    (item,) = history(aos_host, "ceo")
    assert item["event"]["id"] == "e-dup"
    assert item["outcome"]["status"] == "decided"


def test_malformed_message_is_dead_lettered(aos_host: Host, settings: Settings) -> None:
    from aos.messaging.envelope import WireMessage

    # Straight onto the topic: the host's send endpoint would refuse it (not a CloudEvent).
    garbage = WireMessage(
        body=b"this is no CloudEvent", content_type="text/plain", message_id="bad"
    )
    with_broker(settings, lambda broker: broker.send_messages(EVENTS, garbage))

    async def dead_letters(broker: LocalBroker) -> list[Any]:
        receiver = broker.get_subscription_receiver(
            EVENTS, settings.subscription, sub_queue="deadletter"
        )
        return await receiver.peek_messages(max_message_count=10)

    (dead,) = wait_for(lambda: with_broker(settings, dead_letters), "the dead letter", 60)
    assert dead.message_id == "bad"
    assert dead.body == b"this is no CloudEvent"
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert messages_in(settings, EVENTS) == 0

    # The host tried it exactly the maximum number of times (10, as Service Bus), each time
    # failing with the reason and abandoning it.
    deliveries = [
        int(n) for n in re.findall(r"malformed event bad \(delivery (\d+)\)", aos_host.log_text())
    ]
    assert deliveries == list(range(1, 11))


def test_workflow_approval_approved_and_timed_out(aos_host: Host) -> None:
    def start(body: dict) -> str:
        reply = aos_host.request("POST", "/api/workflows/approval", body)
        assert reply.status == 202, reply.text
        return reply.body["id"]

    def status(instance_id: str) -> dict:
        reply = aos_host.request("GET", f"/api/workflows/{instance_id}")
        assert reply.status == 200, reply.text
        return reply.body

    def done(instance_id: str) -> dict:
        return wait_for_instance(
            aos_host,
            instance_id,
            lambda: (s := status(instance_id))["runtime_status"] == "Completed" and s,
            f"workflow {instance_id} to complete",
        )

    approved = start({"subject": "Buy a company", "timeout_seconds": 600})
    expiring = start({"subject": "Too slow", "timeout_seconds": 1})
    wait_for_instance(
        aos_host,
        approved,
        lambda: (status(approved)["custom_status"] or {}).get("waiting_for") == "approval",
        "the approval workflow to wait",
    )
    answer = {"decision": "approve", "by": "ana", "comment": "go"}
    reply = aos_host.request("POST", f"/api/workflows/{approved}/approval", answer)
    assert reply.status == 202, reply.text

    output = done(approved)["output"]
    assert output["status"] == "approved"
    assert (output["by"], output["comment"]) == ("key:ana", "go")  # a function key names no person
    assert done(expiring)["output"]["status"] == "expired"
    late = aos_host.request("POST", f"/api/workflows/{expiring}/approval", answer)
    assert late.status == 409, late.text


def test_state_survives_a_restart(aos_host: Host) -> None:
    register(aos_host, CEO)
    send(aos_host, board_request("e-1"))
    before = idle(aos_host, "ceo", decisions=1)
    history_before = history(aos_host, "ceo")

    aos_host.restart()  # SIGKILL, then start again over the same storage

    after = agent(aos_host, "ceo")
    assert after["counters"] == before["counters"]
    assert after["definition"] == before["definition"]
    assert after["lifecycle"] == "sleeping"
    assert history(aos_host, "ceo") == history_before
    # ...and it carries on.
    send(aos_host, board_request("e-2"))
    assert idle(aos_host, "ceo", decisions=2)["counters"]["events_received"] == 2


def turn_status_in_storage(settings: Settings, instance_id: str) -> str | None:
    """The turn instance's status as the host left it in storage (read while it is down)."""
    from aos.devhost.durable.table_store import TableDurableStore

    async def read(broker: LocalBroker) -> str | None:
        store = TableDurableStore(broker.clients, settings, TASK_HUB)
        record = await store.get_instance(instance_id)
        return record.status.name if record else None

    return with_broker(settings, read)


def turn_holds_the_agent(host: Host, decisions_before: int) -> bool | None:
    """Poll (as fast as the host answers) until the agent's entity has granted the turn (True)
    or the turn has already committed (False); None if neither happens in time."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = host.request("GET", "/api/agents/ceo")
        if reply.status == 200:
            if reply.body["active_turn"]:
                return True
            if reply.body["counters"]["decisions"] > decisions_before:
                return False
    return None


@pytest.mark.parametrize("moment", ["right-after-posting", "while-the-turn-holds-the-agent"])
def test_turn_interrupted_by_a_crash_completes_once(
    aos_host: Host, settings: Settings, moment: str
) -> None:
    register(aos_host, CEO)
    # POST .../events answers once the event is stored, queued and its turn orchestration
    # started; a SIGKILL then, or once the entity has granted the turn (its activities are
    # running), interrupts the turn. Should a turn finish before the kill after all, try again
    # with another event (it rarely has to).
    turns = []
    for attempt in range(1, 6):
        event = board_request(f"e-crash-{attempt}")
        reply = aos_host.request("POST", "/api/agents/ceo/events", event)
        assert reply.status == 202, reply.text
        turns.append(reply.body)
        if moment == "while-the-turn-holds-the-agent":
            held = turn_holds_the_agent(aos_host, decisions_before=attempt - 1)
            assert held is not None, "the turn neither started nor finished"
            if not held:
                continue
        aos_host.kill()
        interrupted = turn_status_in_storage(settings, reply.body["turn"]["instance_id"])
        aos_host.start()
        if interrupted != "Completed":
            break
    else:
        pytest.fail("every turn finished before the SIGKILL that was meant to interrupt it")

    state = idle(aos_host, "ceo", decisions=len(turns))
    assert state["counters"]["events_received"] == len(turns)
    assert state["counters"]["decisions"] == len(turns)
    assert state["counters"]["duplicates_dropped"] == 0
    assert state["turns_failed"] == 0
    assert state["lifecycle"] == "sleeping"
    items = history(aos_host, "ceo")
    assert sorted(i["event"]["id"] for i in items) == [t["event_id"] for t in turns]
    for item in items:
        assert item["outcome"]["status"] == "decided"
        assert item["outcome"]["chosen"] == GROW
    # The interrupted turn's orchestration finishes too (just after its commit to the entity).
    status_uri = aos_host.status_path(turns[-1]["turn"]["instance_id"])
    status = wait_for_instance(
        aos_host,
        turns[-1]["turn"]["instance_id"],
        lambda: (r := aos_host.request("GET", status_uri, key=None)).status == 200 and r.body,
        "the interrupted turn's orchestration to finish",
    )
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == {"agent_id": "ceo", "turns": 1, "ended": "idle"}


# -- MCP ---------------------------------------------------------------------------------------


async def test_a_standard_mcp_client_reads_the_agent_and_adds_a_memory(aos_host: Host) -> None:
    from mcp import Client

    register(aos_host, CEO)
    reply = aos_host.request(
        "POST", "/api/agents/ceo/goals", {"description": "Grow revenue", "goal_id": "revenue"}
    )
    assert reply.status == 202
    wait_for(lambda: agent(aos_host, "ceo")["goals"], "the goal to be added")

    url = f"{aos_host.url}/api/agents/ceo/mcp?code={FUNCTION_KEY}"
    async with Client(url, cache=None) as client:
        definition = await client.read_resource("aos://agents/ceo/definition")
        assert json.loads(definition.contents[0].text)["purpose"] == CEO["purpose"]
        state = json.loads((await client.read_resource("aos://agents/ceo/state")).contents[0].text)
        assert [g["goal_id"] for g in state["goals"]] == ["revenue"]
        saved = await client.call_tool(
            "remember", {"content": "The board prefers Europe", "memory_id": "board"}
        )
        assert not saved.is_error

    assert aos_host.send_events(EVENTS, [board_request("after-mcp")]).status == 201
    idle(aos_host, "ceo", decisions=1)
    memories = aos_host.request("GET", "/api/agents/ceo/memories").body["items"]
    assert [m["memory_id"] for m in memories] == ["board"]
    from aos.workflows.turn import turn_instance_id

    turn = aos_host.request(
        "GET",
        f"/runtime/webhooks/durabletask/instances/{turn_instance_id('ceo', 'after-mcp')}"
        "?showHistory=true&showHistoryOutput=true",
    )
    assert "The board prefers Europe" in turn.text  # the turn loaded the memory


# -- inference ---------------------------------------------------------------------------------


async def test_the_decision_comes_from_the_lorax_server(
    start_host: Callable[..., Host],
) -> None:
    from tests.e2e.conftest import REPO
    from tests.inference.fakeserver import FakeLorax

    lorax = FakeLorax(adapters={"acme/ceo-lora"})
    await lorax.start()
    try:
        judgement = {
            "choice": 1,
            "judgements": [
                {"option": 0, "alignment": 0.1, "reason": "off purpose"},
                {"option": 1, "alignment": 0.9, "reason": "on purpose"},
            ],
        }
        lorax.texts(json.dumps(judgement))
        host = start_host(
            REPO,
            AOS_INFERENCE_ENDPOINT=lorax.url,
            AOS_INFERENCE_ADAPTERS=json.dumps({"ceo": "acme/ceo-lora"}),
        )
        register(host, {**CEO, "adapter_name": "ceo"})
        assert host.send_events(EVENTS, [board_request("by-model")]).status == 201
        await asyncio.to_thread(idle, host, "ceo", decisions=1)
    finally:
        await lorax.stop()

    (request,) = lorax.requests
    assert request.body["parameters"]["adapter_id"] == "acme/ceo-lora"
    (item,) = history(host, "ceo")
    assert item["outcome"]["method"] == "combined"
    assert item["outcome"]["chosen"] == GROW
    assert agent(host, "ceo")["counters"]["inference_calls"] == 1
