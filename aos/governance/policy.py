"""Policies: declarative rules checked before an agent takes any action.

A decision to act proposes actions: the chosen option itself, each message it sends and each MCP
tool it calls. Policies bind an agent by name (its definition's `policies`) or by role (a
policy's `roles`). Evaluation is a pure function of the policies, the proposed actions and what
the agent has already used today, so a retried turn reaches the same verdict.

The chosen option is one unit: if any of its actions is denied, none of them runs; if any needs
approval, all of them wait for it. In order of precedence:

1. `deny` rules, then a policy's `default: deny` (an action it has no `allow` rule for);
2. `limit` rules: calls and spend per agent per UTC day, counting the actions that ran;
3. `require_approval` rules, optionally only when the option's `cost` is above a threshold;
4. otherwise the actions are allowed.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from aos.agents.models import Decision, Model, Slug

ActionKind = Literal["option", "message", "tool"]
ACTION_KINDS: tuple[ActionKind, ...] = ("option", "message", "tool")
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=256)]
MAX_APPROVAL_TIMEOUT = 7 * 24 * 3600
MAX_APPROVERS = 20  # of one approval request


class Action(Model):
    """One thing a decision would do: the option (`name` is its action text), a message (`name`
    is the message type, `target` the recipient agent) or a tool call (`name` is the tool,
    `target` the MCP server)."""

    kind: ActionKind
    name: str
    target: str | None = None
    cost: float = Field(0.0, ge=0)

    def describe(self) -> str:
        where = f" to {self.target}" if self.kind == "message" else ""
        where = f" on {self.target}" if self.kind == "tool" else where
        return f"{self.kind} '{self.name}'{where}"


class PolicyRule(Model):
    """One rule. It matches an action when the action's kind is in `kinds`, its name matches one
    of `actions` and its target one of `targets` (shell-style patterns, case-insensitive)."""

    rule_id: Slug
    effect: Literal["allow", "deny", "limit", "require_approval"]
    kinds: list[ActionKind] = Field(default_factory=lambda: list(ACTION_KINDS), min_length=1)
    actions: list[Pattern] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)
    targets: list[Pattern] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)
    max_calls_per_day: int | None = Field(None, ge=0, description="limit: actions per UTC day.")
    max_spend_per_day: float | None = Field(None, ge=0, description="limit: cost per UTC day.")
    cost_above: float | None = Field(
        None, ge=0, description="require_approval: only when the option's cost exceeds this."
    )
    approvers: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=MAX_APPROVERS
    )
    approval_timeout_seconds: int = Field(3600, ge=1, le=MAX_APPROVAL_TIMEOUT)
    reason: Annotated[str, StringConstraints(max_length=500)] = ""

    @model_validator(mode="after")
    def _check_effect_fields(self) -> PolicyRule:
        is_limit = self.effect == "limit"
        if is_limit and self.max_calls_per_day is None and self.max_spend_per_day is None:
            raise ValueError("a limit rule needs max_calls_per_day or max_spend_per_day")
        limits = (self.max_calls_per_day, self.max_spend_per_day)
        if not is_limit and any(limit is not None for limit in limits):
            raise ValueError("max_calls_per_day and max_spend_per_day belong to limit rules")
        if self.effect != "require_approval" and (self.cost_above is not None or self.approvers):
            raise ValueError("cost_above and approvers belong to require_approval rules")
        return self

    def matches(self, action: Action) -> bool:
        names, targets = _compiled(tuple(self.actions)), _compiled(tuple(self.targets))
        return (
            action.kind in self.kinds
            and names.match(action.name) is not None
            and targets.match(action.target or "") is not None
        )


@functools.lru_cache(maxsize=4096)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One case-insensitive regex for a rule's shell patterns, compiled once: every action of
    every turn meets every rule."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns), re.IGNORECASE)


class Policy(Model):
    """A named set of rules. It binds the agents that name it and those whose role it lists."""

    name: Slug
    description: Annotated[str, StringConstraints(max_length=1000)] = ""
    roles: list[Slug] = Field(default_factory=list, max_length=50)
    default: Literal["allow", "deny"] = Field(
        "allow", description="deny: actions need an allow rule of this policy."
    )
    rules: list[PolicyRule] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _unique_rules(self) -> Policy:
        ids = [rule.rule_id for rule in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique within a policy")
        return self

    def binds(self, names: list[str], role: str | None) -> bool:
        return self.name in names or (role is not None and role in self.roles)


class RuleUsage(Model):
    calls: int = Field(0, ge=0)
    spend: float = Field(0.0, ge=0)


class PolicyUsage(Model):
    """What an agent's actions have used of its limits on one UTC day, by `policy/rule`."""

    day: date | None = None
    rules: dict[str, RuleUsage] = Field(default_factory=dict)

    def on(self, day: date) -> dict[str, RuleUsage]:
        return self.rules if self.day == day else {}

    def add(self, day: date, counted: dict[str, RuleUsage]) -> None:
        """Add a turn's counts; a new day starts from zero."""
        if not counted:
            return
        rules = dict(self.on(day))
        for ref, used in counted.items():
            before = rules.get(ref, RuleUsage())
            rules[ref] = RuleUsage(calls=before.calls + used.calls, spend=before.spend + used.spend)
        self.day, self.rules = day, rules


class ApprovalNeeded(Model):
    rules: list[str]
    approvers: list[str] = Field(default_factory=list)
    timeout_seconds: int


class Verdict(Model):
    """The policy check's answer for one decision.

    `digest` binds the verdict to the exact actions it judged, so it cannot be reused to let
    other actions through.
    """

    status: Literal["allowed", "denied", "approval_required", "approved", "rejected", "expired"]
    reason: str
    rule: str | None = None
    action: Action | None = None
    actions: list[Action] = Field(default_factory=list)
    policies: list[str] = Field(default_factory=list)
    digest: str
    counted: dict[str, RuleUsage] = Field(default_factory=dict)
    approval: ApprovalNeeded | None = None

    @property
    def executable(self) -> bool:
        return self.status in ("allowed", "approved")

    def permits(self, decision: Decision | None) -> bool:
        """Whether this verdict allows exactly the actions `decision` would take."""
        return self.executable and self.digest == digest(decision_id(decision), proposed(decision))


def decision_id(decision: Decision | None) -> str:
    return decision.decision_id if decision is not None else ""


def proposed(decision: Decision | None) -> list[Action]:
    """The actions a decision would take: none unless it chose to act. The option carries the
    cost; its messages and tool calls are parts of it."""
    if decision is None or decision.outcome != "act" or decision.chosen is None:
        return []
    actions = [Action(kind="option", name=decision.chosen, cost=decision.cost)]
    actions += [Action(kind="message", name=m.type, target=m.to) for m in decision.messages]
    actions += [Action(kind="tool", name=t.tool, target=t.server) for t in decision.tool_calls]
    return actions


def digest(decision_id: str, actions: list[Action]) -> str:
    body = json.dumps(
        [decision_id, [a.model_dump(mode="json") for a in actions]], separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


def evaluate(
    policies: list[Policy],
    decision: Decision | None,
    usage: PolicyUsage,
    day: date,
) -> Verdict:
    """The verdict on the actions `decision` proposes, under `policies` (those binding the agent,
    in order), given what the agent has used today."""
    actions = proposed(decision)
    cost = actions[0].cost if actions else 0.0
    base = {
        "actions": actions,
        "policies": [p.name for p in policies],
        "digest": digest(decision_id(decision), actions),
    }
    if not actions:
        return Verdict(status="allowed", reason="the decision takes no action", **base)

    for policy in policies:
        for action in actions:
            rule = next((r for r in policy.rules if r.effect == "deny" and r.matches(action)), None)
            if rule is not None:
                why = rule.reason or f"rule {rule.rule_id} denies it"
                return Verdict(
                    status="denied", reason=f"{action.describe()} is denied: {why}",
                    rule=f"{policy.name}/{rule.rule_id}", action=action, **base,
                )  # fmt: skip
            allowed = any(r.effect == "allow" and r.matches(action) for r in policy.rules)
            if policy.default == "deny" and not allowed:
                return Verdict(
                    status="denied",
                    reason=f"{action.describe()} is not allowed by policy {policy.name}, "
                    "which denies what it does not allow",
                    rule=f"{policy.name}/default", action=action, **base,
                )  # fmt: skip

    today = usage.on(day)
    counted: dict[str, RuleUsage] = {}
    for policy in policies:
        for rule in (r for r in policy.rules if r.effect == "limit"):
            ref = f"{policy.name}/{rule.rule_id}"
            matched = [a for a in actions if rule.matches(a)]
            if not matched:
                continue
            used = today.get(ref, RuleUsage())
            calls, spend = len(matched), sum(a.cost for a in matched)
            over = _over_limit(rule, used, calls, spend)
            if over:
                return Verdict(
                    status="denied", reason=f"{matched[0].describe()} is over a limit: {over}",
                    rule=ref, action=matched[0], **base,
                )  # fmt: skip
            counted[ref] = RuleUsage(calls=calls, spend=spend)

    needing = [
        (policy, rule)
        for policy in policies
        for rule in policy.rules
        if rule.effect == "require_approval"
        and any(rule.matches(a) for a in actions)
        and (rule.cost_above is None or cost > rule.cost_above)
    ]
    if needing:
        refs = [f"{p.name}/{r.rule_id}" for p, r in needing]
        approvers = sorted({a for _, r in needing for a in r.approvers})
        if len(approvers) > MAX_APPROVERS:
            return Verdict(
                status="denied",
                reason=f"the rules {', '.join(refs)} name {len(approvers)} approvers together; "
                f"an approval takes at most {MAX_APPROVERS}: give them fewer",
                rule=refs[0], action=actions[0], **base,
            )  # fmt: skip
        return Verdict(
            status="approval_required",
            reason=f"{actions[0].describe()} needs a person's approval ({', '.join(refs)})",
            rule=refs[0],
            counted=counted,
            approval=ApprovalNeeded(
                rules=refs,
                approvers=approvers,
                timeout_seconds=min(r.approval_timeout_seconds for _, r in needing),
            ),
            **base,
        )
    return Verdict(status="allowed", reason="no policy objects", counted=counted, **base)


def _over_limit(rule: PolicyRule, used: RuleUsage, calls: int, spend: float) -> str | None:
    if rule.max_calls_per_day is not None and used.calls + calls > rule.max_calls_per_day:
        return f"{used.calls} of {rule.max_calls_per_day} calls used today"
    if rule.max_spend_per_day is not None and used.spend + spend > rule.max_spend_per_day:
        return (
            f"{used.spend:g} of {rule.max_spend_per_day:g} spent today; this would spend {spend:g}"
        )
    return None


def resolve_approval(verdict: Verdict, answer: dict[str, Any]) -> Verdict:
    """The verdict once the approval workflow has answered. `verdict` is the policies' verdict
    judged again after the wait: if they now deny the action, it stays denied; otherwise the
    person's answer (approved, rejected, or expired) decides."""
    if verdict.status == "denied":
        return verdict
    status = answer.get("status")
    by = answer.get("by")
    if status == "approved":
        return verdict.model_copy(update={"status": "approved", "reason": f"approved by {by}"})
    if status == "rejected":
        comment = f": {answer['comment']}" if answer.get("comment") else ""
        reason = f"rejected by {by}{comment}"
    else:
        status, reason = "expired", "no one answered the approval request in time"
    return verdict.model_copy(update={"status": status, "reason": reason, "counted": {}})
