"""Policy evaluation: what each kind of rule does to a decision's actions."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from aos.agents.agent import decide
from aos.agents.alignment import DeterministicAlignmentScorer
from aos.agents.models import AgentDefinition, Decision, DecisionContext
from aos.governance.policy import (
    Action,
    Policy,
    PolicyRule,
    PolicyUsage,
    RuleUsage,
    evaluate,
    resolve_approval,
)

TODAY = date(2026, 11, 27)
CFO = AgentDefinition(
    agent_id="cfo",
    purpose="Pay vendor invoices on time and keep the company solvent",
    success_criteria=["Vendors paid on time"],
)


def decision(cost: float = 0.0, messages: int = 1, tools: int = 1) -> Decision:
    option = {
        "action": "Pay the vendor invoice on time",
        "cost": cost,
        "messages": [{"to": "ceo", "type": "payment.sent"}] * messages,
        "tool_calls": [{"server": "bank", "tool": "transfer", "arguments": {"amount": cost}}]
        * tools,
    }
    context = DecisionContext(situation="An invoice is due", options=[option])
    made = decide(CFO, [], context, DeterministicAlignmentScorer(), "d-1")
    assert made.outcome == "act", made.reasons
    return made


def policy(*rules: dict, default: str = "allow", name: str = "finance") -> Policy:
    return Policy(name=name, default=default, rules=list(rules))


def test_no_policies_allow_and_a_decline_takes_no_action() -> None:
    verdict = evaluate([], decision(), PolicyUsage(), TODAY)
    assert verdict.status == "allowed"
    assert [a.kind for a in verdict.actions] == ["option", "message", "tool"]
    declined = decision().model_copy(update={"outcome": "decline", "chosen": None})
    deny_all = policy({"rule_id": "x", "effect": "deny"})
    declined_verdict = evaluate([deny_all], declined, PolicyUsage(), TODAY)
    assert (declined_verdict.status, declined_verdict.actions) == ("allowed", [])


def test_deny_by_tool_and_target_names_the_rule() -> None:
    rules = policy(
        {"rule_id": "no-bank", "effect": "deny", "kinds": ["tool"], "targets": ["bank"]},
    )
    verdict = evaluate([rules], decision(), PolicyUsage(), TODAY)
    assert verdict.status == "denied"
    assert verdict.rule == "finance/no-bank"
    assert verdict.action is not None and verdict.action.name == "transfer"
    assert "tool 'transfer' on bank is denied" in verdict.reason
    # A rule for another target does not match.
    other = policy({"rule_id": "no-crm", "effect": "deny", "kinds": ["tool"], "targets": ["crm"]})
    assert evaluate([other], decision(), PolicyUsage(), TODAY).status == "allowed"


def test_deny_matches_action_names_by_pattern_case_insensitively() -> None:
    rules = policy({"rule_id": "no-pay", "effect": "deny", "actions": ["pay *"]})
    assert evaluate([rules], decision(), PolicyUsage(), TODAY).status == "denied"


def test_default_deny_needs_an_allow_rule_for_every_action() -> None:
    allow_option = {"rule_id": "pay", "effect": "allow", "kinds": ["option", "message"]}
    verdict = evaluate([policy(allow_option, default="deny")], decision(), PolicyUsage(), TODAY)
    assert verdict.status == "denied"
    assert verdict.rule == "finance/default"
    assert verdict.action is not None and verdict.action.kind == "tool"
    allow_tool = {"rule_id": "bank", "effect": "allow", "kinds": ["tool"], "targets": ["bank"]}
    both = policy(allow_option, allow_tool, default="deny")
    assert evaluate([both], decision(), PolicyUsage(), TODAY).status == "allowed"


def test_limits_count_calls_and_spend_per_day() -> None:
    limit = policy(
        {"rule_id": "daily", "effect": "limit", "kinds": ["option"], "max_spend_per_day": 1000},
        {"rule_id": "transfers", "effect": "limit", "kinds": ["tool"], "max_calls_per_day": 2},
    )
    verdict = evaluate([limit], decision(cost=600), PolicyUsage(), TODAY)
    assert verdict.status == "allowed"
    assert verdict.counted == {
        "finance/daily": RuleUsage(calls=1, spend=600),
        "finance/transfers": RuleUsage(calls=1, spend=0),
    }
    usage = PolicyUsage()
    usage.add(TODAY, verdict.counted)
    over = evaluate([limit], decision(cost=600), usage, TODAY)
    assert over.status == "denied"
    assert over.rule == "finance/daily"
    assert "600 of 1000 spent today; this would spend 600" in over.reason
    # The next day starts from zero.
    assert evaluate([limit], decision(cost=600), usage, date(2026, 11, 28)).status == "allowed"
    usage.add(TODAY, {"finance/transfers": RuleUsage(calls=1)})
    calls = evaluate([limit], decision(cost=0), usage, TODAY)
    assert calls.status == "denied" and calls.rule == "finance/transfers"
    assert "2 of 2 calls used today" in calls.reason


def test_approval_above_a_threshold_and_its_answers() -> None:
    gate = policy(
        {
            "rule_id": "big",
            "effect": "require_approval",
            "kinds": ["option"],
            "cost_above": 1000,
            "approvers": ["alice@contoso.com"],
            "approval_timeout_seconds": 600,
        }
    )
    assert evaluate([gate], decision(cost=1000), PolicyUsage(), TODAY).status == "allowed"
    verdict = evaluate([gate], decision(cost=5000), PolicyUsage(), TODAY)
    assert verdict.status == "approval_required"
    assert verdict.approval is not None
    assert verdict.approval.approvers == ["alice@contoso.com"]
    assert verdict.approval.timeout_seconds == 600
    assert not verdict.permits(decision(cost=5000))

    approved = resolve_approval(verdict, {"status": "approved", "by": "alice"})
    assert approved.status == "approved" and approved.permits(decision(cost=5000))
    rejected = resolve_approval(verdict, {"status": "rejected", "by": "bob", "comment": "no"})
    assert rejected.status == "rejected" and rejected.reason == "rejected by bob: no"
    assert not rejected.permits(decision(cost=5000))
    assert resolve_approval(verdict, {"status": "expired"}).status == "expired"


def test_a_verdict_permits_only_the_actions_it_judged() -> None:
    verdict = evaluate([], decision(cost=10), PolicyUsage(), TODAY)
    assert verdict.permits(decision(cost=10))
    assert not verdict.permits(decision(cost=10, tools=2))
    assert not verdict.permits(decision(cost=99))


def test_deny_wins_over_approval_and_allow() -> None:
    rules = policy(
        {"rule_id": "ok", "effect": "allow"},
        {"rule_id": "gate", "effect": "require_approval"},
        {"rule_id": "stop", "effect": "deny", "kinds": ["message"], "targets": ["ceo"]},
    )
    verdict = evaluate([rules], decision(), PolicyUsage(), TODAY)
    assert (verdict.status, verdict.rule) == ("denied", "finance/stop")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"rule_id": "l", "effect": "limit"}, "needs max_calls_per_day or max_spend_per_day"),
        ({"rule_id": "d", "effect": "deny", "max_calls_per_day": 1}, "belong to limit rules"),
        ({"rule_id": "a", "effect": "allow", "cost_above": 5}, "belong to require_approval"),
        ({"rule_id": "Bad Id", "effect": "deny"}, "rules.0.rule_id"),
        ({"rule_id": "k", "effect": "deny", "kinds": ["email"]}, "rules.0.kinds.0"),
    ],
)
def test_malformed_rules_are_refused_naming_the_field(rule: dict, message: str) -> None:
    with pytest.raises(ValidationError) as error:
        Policy(name="p", rules=[rule])
    text = str(error.value)
    assert message in text or message in ".".join(map(str, error.value.errors()[0]["loc"]))


def test_duplicate_rule_ids_are_refused() -> None:
    with pytest.raises(ValidationError, match="rule ids must be unique"):
        policy({"rule_id": "x", "effect": "deny"}, {"rule_id": "x", "effect": "allow"})


def test_an_approval_answer_cannot_overrule_a_deny_that_came_meanwhile() -> None:
    deny = policy({"rule_id": "stop", "effect": "deny", "kinds": ["option"]})
    verdict = evaluate([deny], decision(cost=5000), PolicyUsage(), TODAY)
    settled = resolve_approval(verdict, {"status": "approved", "by": "ana"})
    assert (settled.status, settled.rule) == ("denied", "finance/stop")


def test_more_approvers_than_an_approval_takes_is_a_denial() -> None:
    rules = [
        {"rule_id": f"gate-{n}", "effect": "require_approval", "kinds": ["option"],
         "approvers": [f"person-{n}-{i}@contoso.com" for i in range(11)]}
        for n in range(2)
    ]  # fmt: skip
    verdict = evaluate([policy(*rules)], decision(), PolicyUsage(), TODAY)
    assert verdict.status == "denied"
    assert "22 approvers together; an approval takes at most 20" in verdict.reason


def test_a_copied_rule_matches_by_its_own_patterns() -> None:
    rule = PolicyRule(rule_id="r", effect="deny", actions=["pay *"])
    option = decision().options[0].action
    assert rule.matches(Action(kind="option", name=option))
    narrower = rule.model_copy(update={"actions": ["order *"]})
    assert not narrower.matches(Action(kind="option", name=option))
