"""Multi-agent workflows: chain, fan-out/fan-in, vote with quorum, human approval, heartbeat.

Each agent's part is a decision made by the `agent_decide` activity from the agent's snapshot
(read from its entity), so a workflow sees every agent's current goals and purpose.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from aos.agents.entity import ENTITY_NAME
from aos.agents.models import Model, Option, Slug
from aos.governance.policy import MAX_APPROVERS
from aos.workflows.turn import ORCHESTRATOR as TURN_ORCHESTRATOR
from aos.workflows.turn import turn_instance_id

MAX_APPROVAL_SECONDS = 30 * 24 * 3600


class Task(Model):
    """What the agents are asked: a situation and the options to choose among."""

    situation: str = Field("", max_length=4000)
    options: list[Option] = Field(min_length=1, max_length=20)


class ChainRequest(Model):
    """Each agent in turn chooses among the options the previous one found aligned."""

    agents: list[Slug] = Field(min_length=1, max_length=10)
    task: Task


class FanOutRequest(Model):
    """All agents decide at once; the option with the highest total rank wins."""

    agents: list[Slug] = Field(min_length=1, max_length=25)
    task: Task


class VoteRequest(Model):
    """Each agent votes for the option it chooses (or abstains); a quorum of votes is needed,
    and the winner needs more than `threshold` of the votes cast."""

    agents: list[Slug] = Field(min_length=1, max_length=25)
    task: Task
    quorum: int | None = Field(None, ge=1, description="Votes needed; default: a majority.")
    threshold: float = Field(0.5, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_quorum(self) -> VoteRequest:
        if self.quorum is not None and self.quorum > len(self.agents):
            raise ValueError(f"quorum {self.quorum} exceeds the {len(self.agents)} voters")
        return self


class ApprovalRequest(Model):
    """Wait for a person to approve or reject, or expire after `timeout_seconds`."""

    subject: str = Field(min_length=1, max_length=500)
    details: Any = None
    approvers: list[str] = Field(default_factory=list, max_length=MAX_APPROVERS)
    timeout_seconds: int = Field(86_400, ge=1, le=MAX_APPROVAL_SECONDS)


MAX_BY = 200


class Approval(Model):
    """The external event `approval` that answers an approval workflow."""

    decision: Literal["approve", "reject"]
    by: str = Field(min_length=1, max_length=MAX_BY)
    comment: str = Field("", max_length=2000)


class HeartbeatRequest(Model):
    """A perpetual loop: every `interval_seconds`, wake the agent with an `aos.heartbeat` event."""

    agent_id: Slug
    interval_seconds: int = Field(3600, ge=1)
    iterations: int | None = Field(None, ge=1, description="Stop after this many; default never.")
    done: int = Field(0, ge=0)


APPROVAL_EVENT = "approval"

WORKFLOWS: dict[str, type[Model]] = {
    "chain": ChainRequest,
    "fanout": FanOutRequest,
    "vote": VoteRequest,
    "approval": ApprovalRequest,
    "heartbeat": HeartbeatRequest,
}


def named_agents(request: dict[str, Any]) -> list[str]:
    """The agents a workflow's (validated) input names: `agents`, or the heartbeat's
    `agent_id`."""
    agents = request.get("agents") or [request.get("agent_id")]
    return [agent_id for agent_id in agents if agent_id]


def orchestrator_name(workflow: str) -> str:
    return f"workflow_{workflow}"


def _decide(
    context: Any, agent_id: str, task: dict[str, Any], workflow: str, step: int
) -> Generator[Any, Any, Any]:
    """An agent's decision on the task, as step `step` of `workflow` (the decision's id and its
    audit record derive from both, so a replay or retry makes the same one)."""
    import azure.durable_functions as df

    snapshot = yield context.call_entity(df.EntityId(ENTITY_NAME, agent_id), "snapshot")
    decision = yield context.call_activity(
        "agent_decide",
        {
            "snapshot": snapshot,
            "task": task,
            "agent_id": agent_id,
            "workflow": workflow,
            "step": step,
        },
    )
    return decision


def chain(context: Any) -> Generator[Any, Any, Any]:
    request = ChainRequest.model_validate(context.get_input())
    task = request.task.model_dump(mode="json")
    steps = []
    for step, agent_id in enumerate(request.agents):
        decision = yield from _decide(context, agent_id, task, context.instance_id, step)
        steps.append({"agent_id": agent_id, "decision": decision})
        context.set_custom_status({"step": len(steps), "of": len(request.agents)})
        if decision["outcome"] == "decline":
            return {"status": "stopped", "stopped_by": agent_id, "steps": steps}
        aligned = [o for o in decision["options"] if o["alignment"]["aligned"]]
        by_action = {o.action: o for o in request.task.options}
        task = {
            "situation": f"{task['situation']}\n{agent_id} chose: {decision['chosen']}".strip(),
            "options": [by_action[o["action"]].model_dump(mode="json") for o in aligned],
        }
    return {"status": "completed", "chosen": steps[-1]["decision"]["chosen"], "steps": steps}


def fanout(context: Any) -> Generator[Any, Any, Any]:
    request = FanOutRequest.model_validate(context.get_input())
    task = request.task.model_dump(mode="json")
    decisions = yield context.task_all(
        [context.call_sub_orchestrator("workflow_decide", _step(context, a, task, n))
         for n, a in enumerate(request.agents)]
    )  # fmt: skip
    totals: dict[str, float] = {o.action: 0.0 for o in request.task.options}
    supporters: dict[str, list[str]] = {o.action: [] for o in request.task.options}
    for agent_id, decision in zip(request.agents, decisions, strict=True):
        for option in decision["options"]:
            totals[option["action"]] += option["rank_score"]
            if option["alignment"]["aligned"]:
                supporters[option["action"]].append(agent_id)
    candidates = [a for a in totals if supporters[a]]
    chosen = max(candidates, key=lambda a: totals[a]) if candidates else None
    return {
        "status": "completed" if chosen else "no_aligned_option",
        "chosen": chosen,
        "scores": {a: round(s, 4) for a, s in totals.items()},
        "supporters": supporters,
        "decisions": dict(zip(request.agents, decisions, strict=True)),
    }


def _step(context: Any, agent_id: str, task: dict[str, Any], step: int) -> dict[str, Any]:
    return {"agent_id": agent_id, "task": task, "workflow": context.instance_id, "step": step}


def decide_one(context: Any) -> Generator[Any, Any, Any]:
    """One agent's decision as a sub-orchestration, so fan-out can run them in parallel."""
    payload = context.get_input()
    # Inputs from before a deploy name no workflow or step: the instance is its own workflow.
    workflow, step = payload.get("workflow", context.instance_id), payload.get("step", 0)
    return (yield from _decide(context, payload["agent_id"], payload["task"], workflow, step))


def vote(context: Any) -> Generator[Any, Any, Any]:
    request = VoteRequest.model_validate(context.get_input())
    task = request.task.model_dump(mode="json")
    decisions = yield context.task_all(
        [context.call_sub_orchestrator("workflow_decide", _step(context, a, task, n))
         for n, a in enumerate(request.agents)]
    )  # fmt: skip
    ballots = {
        agent_id: (decision["chosen"] if decision["outcome"] == "act" else None)
        for agent_id, decision in zip(request.agents, decisions, strict=True)
    }
    cast = [choice for choice in ballots.values() if choice is not None]
    quorum = request.quorum or len(request.agents) // 2 + 1
    tally = {o.action: cast.count(o.action) for o in request.task.options}
    result: dict[str, Any] = {"ballots": ballots, "tally": tally, "quorum": quorum}
    if len(cast) < quorum:
        return {**result, "status": "no_quorum", "chosen": None}
    leader = max(tally, key=lambda action: tally[action])
    if tally[leader] > request.threshold * len(cast):
        return {**result, "status": "consensus", "chosen": leader}
    return {**result, "status": "no_consensus", "chosen": None}


def approval(context: Any) -> Generator[Any, Any, Any]:
    request = ApprovalRequest.model_validate(context.get_input())
    deadline = context.current_utc_datetime + timedelta(seconds=request.timeout_seconds)
    context.set_custom_status(
        {
            "waiting_for": APPROVAL_EVENT,
            "subject": request.subject,
            "deadline": deadline.isoformat(),
        }
    )
    timer = context.create_timer(deadline)
    rejected_inputs = 0
    while True:
        answer = context.wait_for_external_event(APPROVAL_EVENT)
        winner = yield context.task_any([answer, timer])
        if winner is timer:
            return {
                "status": "expired",
                "subject": request.subject,
                "invalid_answers": rejected_inputs,
            }
        try:
            decision = Approval.model_validate(json_text_value(answer.result))
        except ValueError:
            rejected_inputs += 1  # a malformed answer does not end the wait
            continue
        timer.cancel()
        status = "approved" if decision.decision == "approve" else "rejected"
        return {"status": status, "subject": request.subject, **decision.model_dump()}


def json_text_value(value: Any) -> Any:
    """A value as sent, where the Python SDK hands it over as JSON text (external event data,
    an instance's input in its status), so decode that text when it is JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def heartbeat(context: Any) -> Generator[Any, Any, Any]:
    request = HeartbeatRequest.model_validate(context.get_input())
    fire_at = context.current_utc_datetime + timedelta(seconds=request.interval_seconds)
    yield context.create_timer(fire_at)
    event_id = f"heartbeat-{context.instance_id}-{request.done + 1}"
    event = {
        "id": event_id,
        "source": f"/aos/workflows/{context.instance_id}",
        "type": "aos.heartbeat",
        "subject": request.agent_id,
        "time": fire_at.isoformat(),
        "data": {"beat": request.done + 1},
    }
    turn = yield context.call_sub_orchestrator(
        TURN_ORCHESTRATOR,
        {"agent_id": request.agent_id, "event": event},
        turn_instance_id(request.agent_id, event_id),
    )
    done = request.done + 1
    if (turn or {}).get("ended") == "retired":
        return {"status": "agent_retired", "beats": done}
    if request.iterations is not None and done >= request.iterations:
        return {"status": "completed", "beats": done}
    context.continue_as_new({**request.model_dump(mode="json"), "done": done})
    return None
