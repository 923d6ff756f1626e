"""What the engine hands the SDK's handlers: the JSON the Durable extension would send."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import azure.durable_functions as df

from aos.devhost.durable import DurableEngine
from aos.devhost.durable.history import status_history


class _Recorded:
    """A function-list entry whose callable records the trigger payload it receives."""

    def __init__(self, name: str, trigger: str, handler: Callable[[Any], Any]) -> None:
        self.name, self.trigger, self.handler = name, trigger, handler
        self.payloads: list[dict] = []

    def get_function_name(self) -> str:
        return self.name

    def get_function_json(self) -> str:
        return json.dumps({"bindings": [{"type": self.trigger, "name": "context"}]})

    def get_user_function(self) -> Callable[[Any], Any]:
        def record(context: Any) -> Any:
            self.payloads.append(json.loads(context.body))
            return self.handler(context)

        return record


def _orchestrator(context: df.DurableOrchestrationContext):
    counter = df.EntityId("Counter", "k")
    value = yield context.call_entity(counter, "add", {"n": 1})
    return value


def _counter(context: df.DurableEntityContext) -> None:
    state = context.get_state(lambda: 0) + context.get_input()["n"]
    context.set_state(state)
    context.set_result(state)


async def test_orchestration_and_entity_payloads() -> None:
    orchestrator = _Recorded("Orch", "orchestrationTrigger", df.Orchestrator.create(_orchestrator))
    entity = _Recorded("Counter", "entityTrigger", df.Entity.create(_counter))
    async with DurableEngine([orchestrator, entity]) as engine:
        instance_id = await engine.start_new("orch", "proto-1", {"a": 1})
        status = await engine.wait_for(instance_id)
    assert status["output"] == 1

    first = orchestrator.payloads[0]
    assert first["instanceId"] == "proto-1"
    assert first["input"] == json.dumps({"a": 1})  # JSON text held in a JSON string
    assert first["isReplaying"] is False
    assert first["parentInstanceId"] is None
    assert (first["upperSchemaVersion"], first["upperSchemaVersionNew"]) == (1, 2)
    started, execution = first["history"]
    assert started["EventType"] == 12 and started["EventId"] == -1
    assert execution["EventType"] == 0 and execution["Name"] == "Orch"
    assert execution["Input"] == json.dumps(json.dumps({"a": 1}))
    assert execution["OrchestrationInstance"]["InstanceId"] == "proto-1"
    assert execution["IsPlayed"] is False

    second = orchestrator.payloads[1]
    assert second["isReplaying"] is True
    kinds = [(e["EventType"], e["IsPlayed"]) for e in second["history"]]
    assert kinds == [(12, True), (0, True), (14, True), (13, True), (12, False), (15, False)]
    sent, response = second["history"][2], second["history"][5]
    assert sent["EventId"] == 0 and sent["InstanceId"] == "@counter@k" and sent["Name"] == "op"
    request = json.loads(sent["Input"])
    assert request["op"] == "add" and request["parent"] == "proto-1"
    assert response["Name"] == request["id"]
    assert json.loads(response["Input"]) == {"result": "1"}

    batch_call = entity.payloads[0]
    assert batch_call["self"] == {"name": "counter", "key": "k"}
    assert batch_call["exists"] is False and batch_call["state"] is None
    assert batch_call["batch"] == [
        {"name": "add", "input": json.dumps(json.dumps({"n": 1})), "isSignal": False}
    ]


def test_status_history_folds_scheduling_into_completion() -> None:
    events = [
        {"EventType": 12, "EventId": -1, "IsPlayed": True, "Timestamp": "t0"},
        {
            "EventType": 0,
            "EventId": -1,
            "IsPlayed": True,
            "Timestamp": "t0",
            "Name": "o",
            "Input": None,
            "Version": "",
            "OrchestrationInstance": {},
            "ParentInstance": None,
            "Tags": None,
        },
        {
            "EventType": 4,
            "EventId": 0,
            "IsPlayed": True,
            "Timestamp": "t1",
            "Name": "a",
            "Version": "",
            "Input": '"\\"x\\""',
        },
        {"EventType": 13, "EventId": -1, "IsPlayed": True, "Timestamp": "t1"},
        {
            "EventType": 5,
            "EventId": -1,
            "IsPlayed": False,
            "Timestamp": "t2",
            "TaskScheduledId": 0,
            "Result": '"done"',
        },
        {
            "EventType": 1,
            "EventId": -1,
            "IsPlayed": False,
            "Timestamp": "t2",
            "OrchestrationStatus": 1,
            "Result": '"done"',
            "FailureDetails": None,
        },
    ]
    assert status_history(events, show_output=True, show_input=True) == [
        {"EventType": "ExecutionStarted", "Timestamp": "t0", "Input": None, "FunctionName": "o"},
        {
            "EventType": "TaskCompleted",
            "Timestamp": "t2",
            "Result": "done",
            "ScheduledTime": "t1",
            "FunctionName": "a",
            "Input": '"\\"x\\""',
        },
        {
            "EventType": "ExecutionCompleted",
            "Timestamp": "t2",
            "OrchestrationStatus": "Completed",
            "Result": "done",
            "FailureDetails": None,
        },
    ]
    hidden = status_history(events, show_output=False, show_input=False)
    assert "Result" not in hidden[1] and "Input" not in hidden[1]
