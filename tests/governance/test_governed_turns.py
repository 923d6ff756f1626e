"""Policies in real turns: the function app on the Durable SDK's handlers (the `app` fixture),
with the admin API's policy routes, the approval workflow and the audit chain on Azurite."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.support import CEO, CFO, App, Reply, board_request

PAY = {
    "action": "Draft a strategic plan to grow revenue",
    "cost": 5000,
    "messages": [{"to": "cfo", "type": "finance.plan.review", "data": {"plan": "growth"}}],
}


async def put_policy(app: App, policy: dict) -> Reply:
    name = policy["name"]
    return await app.call("put_policy", "PUT", f"policies/{name}", policy, route={"name": name})


async def run_turn(app: App, agent_id: str, event: dict) -> dict:
    """Deliver an event, wait for its turn, and return the event's recorded outcome."""
    reply = await app.post_event(agent_id, event)
    assert reply.status == 202, reply.body
    await app.engine.wait_for(reply.body["turn"]["instance_id"], timeout=30)
    await app.settle()
    return await outcome_of(app, agent_id, event["id"])


async def outcome_of(app: App, agent_id: str, event_id: str) -> dict:
    history = await app.call(
        "agent_history", "GET", f"agents/{agent_id}/history", route={"agent_id": agent_id}
    )
    return next(i["outcome"] for i in history.body["items"] if i["event"]["id"] == event_id)


async def audit(app: App, agent_id: str) -> list[dict[str, Any]]:
    reply = await app.call(
        "agent_audit", "GET", f"agents/{agent_id}/audit", route={"agent_id": agent_id},
        params={"page_size": "100"},
    )  # fmt: skip
    assert reply.status == 200, reply.body
    return reply.body["items"]


async def verified(app: App, agent_id: str) -> dict:
    reply = await app.call(
        "verify_agent_audit", "GET", f"agents/{agent_id}/audit/verify",
        route={"agent_id": agent_id},
    )  # fmt: skip
    return reply.body


async def messages_for_cfo() -> list[Any]:
    from aos.messaging.local_broker import LocalBroker
    from aos.runtime import agent_store, settings

    current = settings()
    broker = LocalBroker.from_settings(current, agent_store().clients)
    receiver = broker.get_subscription_receiver(current.messages_topic, current.subscription)
    try:
        return await receiver.receive_messages(max_message_count=10, max_wait_time=1)
    finally:
        await receiver.close()


def kinds(records: list[dict]) -> list[str]:
    return [
        f"{r['kind']}:{r['data'].get('operation') or r['data'].get('kind') or ''}" for r in records
    ]


async def test_without_policies_the_action_runs_and_every_effect_is_in_the_chain(app: App) -> None:
    await app.register(CEO)
    await app.settle()
    outcome = await run_turn(app, "ceo", board_request("e-1", options=["Order pizza", PAY]))
    assert outcome["outcome"] == "act"
    assert outcome["policy"]["verdict"] == "allowed"
    assert len(await messages_for_cfo()) == 1

    records = await audit(app, "ceo")
    assert kinds(records) == [
        "admin:register", "admin:post_event", "decision:", "action:message", "action:option",
    ]  # fmt: skip
    assert records[0]["actor"] == "key"
    assert {r["actor"] for r in records[2:]} == {"agent:ceo"}
    assert {r["correlation_id"] for r in records[2:]} == {"e-1"}
    assert all(r["previous_hash"] == p["hash"] for p, r in itertools.pairwise(records))
    assert (await verified(app, "ceo"))["valid"] is True


async def test_a_denied_action_never_runs_and_the_denial_names_the_rule(app: App) -> None:
    reply = await put_policy(
        app,
        {
            "name": "no-finance-mail",
            "rules": [
                {"rule_id": "cfo", "effect": "deny", "kinds": ["message"], "targets": ["cfo"],
                 "reason": "the CEO does not write to finance directly"},
            ],
        },
    )  # fmt: skip
    assert reply.status == 201, reply.body
    await app.register({**CEO, "policies": ["no-finance-mail"]})
    await app.settle()

    outcome = await run_turn(app, "ceo", board_request("e-1", options=["Order pizza", PAY]))
    assert outcome["outcome"] == "denied"
    assert outcome["messages_sent"] == []
    assert outcome["policy"]["rule"] == "no-finance-mail/cfo"
    assert "does not write to finance directly" in outcome["policy"]["reason"]
    assert await messages_for_cfo() == []

    agent = await app.agent("ceo")
    assert agent["counters"]["actions_denied"] == 1
    assert agent["counters"]["actions_taken"] == 0
    records = await audit(app, "ceo")
    assert kinds(records)[-2:] == ["decision:", "denial:"]
    assert records[-1]["data"]["rule"] == "no-finance-mail/cfo"
    assert (await verified(app, "ceo"))["valid"] is True


async def test_a_policy_the_agent_names_but_nobody_wrote_denies_everything(app: App) -> None:
    await app.register({**CEO, "policies": ["not-written-yet"]})
    await app.settle()
    outcome = await run_turn(app, "ceo", board_request("e-1"))
    assert outcome["outcome"] == "denied"
    assert outcome["policy"]["rule"] == "not-written-yet/missing"
    assert "PUT /api/policies/not-written-yet" in outcome["policy"]["reason"]


async def test_a_role_policy_limits_actions_per_day(app: App) -> None:
    await put_policy(
        app,
        {
            "name": "executive-budget",
            "roles": ["executive"],
            "rules": [
                {"rule_id": "one-a-day", "effect": "limit", "kinds": ["option"],
                 "max_calls_per_day": 1},
            ],
        },
    )  # fmt: skip
    await app.register({**CEO, "role": "executive"})
    await app.register({**CFO, "role": "finance"})
    await app.settle()

    first = await run_turn(app, "ceo", board_request("e-1"))
    second = await run_turn(app, "ceo", board_request("e-2"))
    assert first["outcome"] == "act"
    assert first["policy"]["counted"] == {"executive-budget/one-a-day": {"calls": 1, "spend": 0.0}}
    assert second["outcome"] == "denied"
    assert "1 of 1 calls used today" in second["policy"]["reason"]
    usage = (await app.agent("ceo"))["policy_usage"]
    assert usage["rules"] == {"executive-budget/one-a-day": {"calls": 1, "spend": 0.0}}

    # Another role is not bound by it.
    event = {**board_request("f-1"), "type": "finance.request"}
    event["data"]["options"] = ["Review the budget to keep costs under control"]
    assert (await run_turn(app, "cfo", event))["outcome"] == "act"
    assert (await run_turn(app, "cfo", {**event, "id": "f-2"}))["outcome"] == "act"


APPROVAL_POLICY = {
    "name": "big-spend",
    "rules": [
        {"rule_id": "over-1000", "effect": "require_approval", "kinds": ["option"],
         "cost_above": 1000, "approval_timeout_seconds": 600},
    ],
}  # fmt: skip


async def awaiting_approval(app: App, agent_id: str) -> str:
    """The approval the agent's turn waits on, once its workflow is open for an answer (the
    entity names it a moment before the workflow starts)."""
    for _ in range(200):
        turn = (await app.agent(agent_id))["active_turn"] or {}
        if approval_id := turn.get("awaiting_approval"):
            status = await app.call(
                "workflow_status", "GET", f"workflows/{approval_id}",
                route={"instance_id": approval_id},
            )  # fmt: skip
            if status.status == 200 and status.body["custom_status"]:
                return approval_id
        await app.engine.wait_until_idle(timeout=1)
    raise AssertionError("the turn never waited for approval")


async def answer(app: App, instance: str, decision: str, by: str) -> Reply:
    return await app.call(
        "send_approval", "POST", f"workflows/{instance}/approval",
        {"decision": decision, "by": by}, route={"instance_id": instance},
    )  # fmt: skip


async def gated(app: App, event_id: str) -> tuple[str, str]:
    """Post an event whose chosen option needs approval; its turn's id and the approval's."""
    reply = await app.post_event("ceo", board_request(event_id, options=["Order pizza", PAY]))
    return reply.body["turn"]["instance_id"], await awaiting_approval(app, "ceo")


async def answered(app: App, turn: str, approval_id: str, decision: str, event_id: str) -> dict:
    """Answer the approval as the approver, let the turn finish; the event's outcome."""
    by = "ana" if decision == "approve" else "bob"
    assert (await answer(app, approval_id, decision, by)).status == 202
    await app.engine.wait_for(turn, timeout=30)
    await app.settle()
    return await outcome_of(app, "ceo", event_id)


async def register_gated_ceo(app: App) -> None:
    await put_policy(app, APPROVAL_POLICY)
    await app.register({**CEO, "policies": ["big-spend"]})
    await app.settle()


async def test_an_action_above_the_threshold_waits_for_approval_then_runs(app: App) -> None:
    await register_gated_ceo(app)
    turn, approval_id = await gated(app, "e-1")
    status = await app.call(
        "workflow_status", "GET", f"workflows/{approval_id}", route={"instance_id": approval_id}
    )
    assert status.body["custom_status"]["waiting_for"] == "approval"
    assert status.body["input"]["details"]["rules"] == ["big-spend/over-1000"]
    assert await messages_for_cfo() == []  # nothing ran yet

    outcome = await answered(app, turn, approval_id, "approve", "e-1")
    assert outcome["outcome"] == "act"
    assert outcome["policy"]["verdict"] == "approved"
    assert len(await messages_for_cfo()) == 1

    records = await audit(app, "ceo")
    assert kinds(records)[2:] == [
        "decision:", "approval:", "admin:answer_approval", "approval:", "action:message",
        "action:option",
    ]  # fmt: skip
    assert records[3]["data"]["status"] == "requested"
    assert records[4]["actor"] == "key"  # the admin change: a function key answered
    assert records[5]["actor"] == "approver:key:ana"  # ... giving the name "ana"
    assert (await verified(app, "ceo"))["valid"] is True


async def test_a_rejected_or_expired_approval_denies_the_action(app: App) -> None:
    await put_policy(
        app,
        {**APPROVAL_POLICY, "rules": [{**APPROVAL_POLICY["rules"][0],
                                        "approval_timeout_seconds": 1}]},
    )  # fmt: skip
    await app.register({**CEO, "policies": ["big-spend"]})
    await app.settle()
    outcome = await run_turn(app, "ceo", board_request("e-1", options=["Order pizza", PAY]))
    assert outcome["outcome"] == "denied"
    assert outcome["policy"]["verdict"] == "expired"

    await put_policy(app, APPROVAL_POLICY)
    turn, approval_id = await gated(app, "e-2")
    outcome = await answered(app, turn, approval_id, "reject", "e-2")
    assert outcome["outcome"] == "denied"
    assert outcome["policy"]["reason"] == "rejected by key:bob"
    assert await messages_for_cfo() == []
    assert (await app.agent("ceo"))["counters"]["actions_denied"] == 2


async def test_policy_routes_and_the_governance_chain(app: App) -> None:
    policy = {"name": "quiet", "rules": [{"rule_id": "r", "effect": "deny", "kinds": ["tool"]}]}
    assert (await put_policy(app, policy)).status == 201
    assert (await put_policy(app, {**policy, "description": "v2"})).status == 200
    got = await app.call("get_policy", "GET", "policies/quiet", route={"name": "quiet"})
    assert got.body["description"] == "v2"
    listed = await app.call("list_policies", "GET", "policies")
    assert [p["name"] for p in listed.body["items"]] == ["quiet"]

    mismatch = await app.call(
        "put_policy", "PUT", "policies/other", policy, route={"name": "other"}
    )
    assert (mismatch.status, mismatch.body["error"]["field"]) == (400, "name")
    bad_rule = await put_policy(app, {**policy, "rules": [{"rule_id": "r", "effect": "limit"}]})
    assert bad_rule.status == 400 and bad_rule.body["error"]["field"] == "rules.0"

    deleted = await app.call("delete_policy", "DELETE", "policies/quiet", route={"name": "quiet"})
    assert deleted.status == 204
    gone = await app.call("get_policy", "GET", "policies/quiet", route={"name": "quiet"})
    assert gone.status == 404
    again = await app.call("delete_policy", "DELETE", "policies/quiet", route={"name": "quiet"})
    assert again.status == 404

    chain = await app.call("governance_audit", "GET", "governance/audit")
    assert [r["data"]["operation"] for r in chain.body["items"]] == [
        "create_policy", "replace_policy", "delete_policy",
    ]  # fmt: skip
    check = await app.call("verify_governance_audit", "GET", "governance/audit/verify")
    assert check.body["valid"] is True and check.body["records"] == 3


async def test_after_the_wait_a_new_deny_rule_or_a_pause_wins_over_the_approval(
    app: App,
) -> None:
    await register_gated_ceo(app)
    turn, approval_id = await gated(app, "e-1")
    stricter = {**APPROVAL_POLICY, "rules": [*APPROVAL_POLICY["rules"],
                {"rule_id": "freeze", "effect": "deny", "kinds": ["message"]}]}  # fmt: skip
    await put_policy(app, stricter)
    outcome = await answered(app, turn, approval_id, "approve", "e-1")
    assert (outcome["outcome"], outcome["policy"]["rule"]) == ("denied", "big-spend/freeze")

    second_gate = {"rule_id": "board", "effect": "require_approval", "kinds": ["option"]}
    await put_policy(app, APPROVAL_POLICY)
    turn, approval_id = await gated(app, "e-3")
    await put_policy(app, {**APPROVAL_POLICY, "rules": [*APPROVAL_POLICY["rules"], second_gate]})
    outcome = await answered(app, turn, approval_id, "approve", "e-3")
    assert outcome["outcome"] == "denied"
    assert "no longer covers the action" in outcome["policy"]["reason"]

    await put_policy(app, APPROVAL_POLICY)
    turn, approval_id = await gated(app, "e-2")
    await app.call("pause_agent", "POST", "agents/ceo/pause", route={"agent_id": "ceo"})
    await app.settle()
    outcome = await answered(app, turn, approval_id, "approve", "e-2")
    assert outcome["outcome"] == "denied"
    assert outcome["policy"]["reason"] == "the agent was paused while the approval was pending"
    assert await messages_for_cfo() == []


async def test_limits_count_what_ran_even_when_recording_failed(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_record(*args: Any) -> None:
        raise ConnectionError("history unreachable")

    monkeypatch.setattr("aos.turns.record_turn", broken_record)
    await put_policy(
        app,
        {"name": "one-a-day", "rules": [{"rule_id": "once", "effect": "limit",
                                         "kinds": ["option"], "max_calls_per_day": 1}]},
    )  # fmt: skip
    await app.register({**CEO, "policies": ["one-a-day"]})
    await app.settle()
    reply = await app.post_event("ceo", board_request("e-1"))
    await app.engine.wait_for(reply.body["turn"]["instance_id"], timeout=30)
    await app.settle()
    agent = await app.agent("ceo")
    assert agent["last_failure"]["step"] == "turn_record"
    assert agent["policy_usage"]["rules"] == {"one-a-day/once": {"calls": 1, "spend": 0.0}}


async def test_every_admin_request_is_recorded_even_with_a_reused_request_id(app: App) -> None:
    await app.register(CEO, goals=[{"description": "Grow revenue", "goal_id": "revenue"}])
    await app.settle()

    async def progress(value: float, request_id: str) -> Reply:
        return await app.call(
            "update_goal", "PUT", "agents/ceo/goals/revenue", {"progress": value},
            route={"agent_id": "ceo", "goal_id": "revenue"},
            headers={"x-ms-client-request-id": request_id},
        )  # fmt: skip

    for value, request_id in [(0.2, "r-1"), (0.2, "r-1"), (0.4, "r-1"), (0.4, "r-2")]:
        assert (await progress(value, request_id)).status == 202
    records = [r for r in await audit(app, "ceo") if r["data"]["operation"] == "update_goal"]
    assert [(r["data"]["request_id"], r["data"]["progress"]) for r in records] == [
        ("r-1", 0.2), ("r-1", 0.2), ("r-1", 0.4), ("r-2", 0.4),
    ]  # fmt: skip
