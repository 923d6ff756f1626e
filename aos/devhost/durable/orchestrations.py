"""Orchestration episodes: replay the SDK over the history, act on the actions it returns.

This is what the Durable extension's out-of-process "orchestrator shim" and the Durable Task
Framework do together for a Python orchestrator:

1. New messages become new history events after an ``OrchestratorStarted``; the SDK's handler
   gets the whole history (past events marked ``IsPlayed``) and returns its ``OrchestratorState``:
   the cumulative list of actions the code has scheduled so far, and whether it is done.
2. Actions past the ones already acted on are new. Each one but ``WaitForExternalEvent`` takes the
   next sequence number, exactly as the SDK numbers its tasks, and becomes a decision event:
   ``TaskScheduled`` (``EventId`` = the number), ``TimerCreated``,
   ``SubOrchestrationInstanceCreated`` or ``EventSent`` (entity calls and signals), plus the
   work it implies.
3. Completion (``ExecutionCompleted``), failure, or ``ContinueAsNew`` ends the execution.

Retries (``CallActivityWithRetry``, ``CallSubOrchestratorWithRetry``) are done as DTFx's retry
interceptor does them: after a failed attempt a timer (next sequence number) for
``first * backoff^(attempt-1)`` (capped by the max interval), then, if attempts remain, the call
again under a new number. After the last attempt one more timer fires before the failure surfaces,
which is what the SDK expects. Since the SDK numbers those timers and retries while it reads the
failure or timer event, such an event is always delivered in an episode of its own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import history as h
from .functions import FunctionNotFound, FunctionRegistry, run_orchestrator
from .history import OrchestrationStatus
from .store import CONSUMED_MEMORY, InstanceRecord, Message, WorkItem

# Message kinds delivered to orchestration instances.
START = "ExecutionStarted"
TASK_COMPLETED = "TaskCompleted"
TASK_FAILED = "TaskFailed"
SUB_COMPLETED = "SubOrchestrationInstanceCompleted"
SUB_FAILED = "SubOrchestrationInstanceFailed"
TIMER_FIRED = "TimerFired"
EVENT_RAISED = "EventRaised"
TERMINATE = "ExecutionTerminated"
SUSPEND = "ExecutionSuspended"
RESUME = "ExecutionResumed"
# Message kind delivered to entities.
ENTITY_OPERATION = "EntityOperation"

# actionType values (the SDK's ActionType / the shim's AsyncActionType)
CALL_ACTIVITY = 0
CALL_ACTIVITY_WITH_RETRY = 1
CALL_SUB_ORCHESTRATOR = 2
CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
CONTINUE_AS_NEW = 4
CREATE_TIMER = 5
WAIT_FOR_EXTERNAL_EVENT = 6
CALL_ENTITY = 7
CALL_HTTP = 8
SIGNAL_ENTITY = 9
SCHEDULED_SIGNAL_ENTITY = 10
WHEN_ANY = 11
WHEN_ALL = 12

# The schema versions the extension announces: "upperSchemaVersion" V2 and, for SDKs that know
# it, "upperSchemaVersionNew" V3.
UPPER_SCHEMA_VERSION = 1
UPPER_SCHEMA_VERSION_NEW = 2


def new_execution_id() -> str:
    return uuid.uuid4().hex


def flatten_actions(actions: list) -> list[dict]:
    """The SDK's action list in scheduling order, compound actions expanded."""
    flat: list[dict] = []

    def walk(action: dict) -> None:
        if action.get("actionType") in (WHEN_ANY, WHEN_ALL):
            for child in action.get("compoundActions") or []:
                walk(child)
        else:
            flat.append(action)

    for group in actions or []:
        for action in group if isinstance(group, list) else [group]:
            walk(action)
    return flat


def initial_runtime() -> dict[str, Any]:
    return {
        "next_id": 0,
        "action_count": 0,
        "timer_actions": {},  # action index -> timer id (to notice cancellation)
        "timers": {},  # timer id -> message id of its TimerFired, while pending
        "retries": {},  # group key -> retry state
        "retry_tasks": {},  # task id -> group key (attempts in flight)
        "retry_timers": {},  # timer id -> group key
        "entity_requests": [],  # request ids of entity calls (their responses are EventRaised)
        "consumed": [],
    }


@dataclass
class Outcome:
    """What one unit of orchestration work produced, for one store commit."""

    record: InstanceRecord
    consumed: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    work_items: list[WorkItem] = field(default_factory=list)
    changed: bool = True


class NonDeterminism(Exception):
    pass


class UnsupportedAction(Exception):
    """An action the local host does not carry out (the orchestration fails with this)."""


def startable(record: InstanceRecord | None, message: Message) -> bool:
    """Whether a start message begins an execution: a new instance, a replacement of a finished
    one, or the execution the record is waiting to start."""
    execution = message.payload.get("execution_id")
    if record is None:
        return True
    if record.is_terminal:
        return execution != record.execution_id
    return execution == record.execution_id and not record.history


def _payload_json(value: Any) -> str:
    """How the extension stores an action's ``input`` (itself JSON text, held as a string)."""
    return json.dumps(value)


class OrchestrationRunner:
    """Turns an instance's pending messages into an ``Outcome``. No I/O; calls user code."""

    def __init__(self, functions: FunctionRegistry) -> None:
        self.functions = functions

    # -- which messages go into the next episode -------------------------------------------------

    def select(
        self, record: InstanceRecord | None, messages: list[Message], now: datetime
    ) -> tuple[list[Message], list[Message]]:
        """``(batch, dropped)``: the messages for the next episode, and messages that can never
        apply (stale executions, finished instances, duplicates) to discard."""
        dropped: list[Message] = []
        live: list[Message] = []
        consumed = set(record.runtime.get("consumed", [])) if record else set()
        for message in messages:
            if message.id in consumed:
                dropped.append(message)
                continue
            if message.kind == START:
                if startable(record, message):
                    live.append(message)
                elif (
                    record is None
                    or record.is_terminal
                    or (message.payload.get("execution_id") == record.execution_id)
                ):
                    dropped.append(message)  # already started, or ended before it began
                else:
                    live.append(message)  # conflict: answered by the start handler
                continue
            if record is None or record.is_terminal:
                dropped.append(message)
                continue
            execution = message.payload.get("execution_id")
            if execution is not None and execution != record.execution_id:
                dropped.append(message)
                continue
            live.append(message)

        if record is None or record.is_terminal:
            starts = [m for m in live if m.kind == START]
            return starts[:1], dropped
        terminate = next((m for m in live if m.kind == TERMINATE), None)
        if terminate is not None:
            return [terminate], dropped
        conflict = next(
            (
                m
                for m in live
                if m.kind == START and m.payload.get("execution_id") != record.execution_id
            ),
            None,
        )
        if conflict is not None:
            return [conflict], dropped
        if not record.history:
            start = next((m for m in live if m.kind == START), None)
            if start is None:
                return [], dropped
            rest = [m for m in live if m is not start and self._deliverable(record, m, now)]
            batch = [start]
            for message in rest:
                if self._allocates(record, message):
                    break
                batch.append(message)
            return batch, dropped
        if record.status == OrchestrationStatus.Suspended:
            resume = next((m for m in live if m.kind == RESUME), None)
            return ([resume] if resume else []), dropped
        deliverable = [m for m in live if self._deliverable(record, m, now)]
        if not deliverable:
            return [], dropped
        if self._allocates(record, deliverable[0]):
            return deliverable[:1], dropped
        batch = []
        for message in deliverable:
            if self._allocates(record, message):
                break
            batch.append(message)
        return batch, dropped

    @staticmethod
    def _deliverable(record: InstanceRecord, message: Message, now: datetime) -> bool:
        if message.kind == START:
            return False
        return message.due is None or message.due <= now

    @staticmethod
    def _allocates(record: InstanceRecord, message: Message) -> bool:
        """Whether the SDK takes sequence numbers while reading this message's event."""
        runtime = record.runtime
        if message.kind in (TASK_FAILED, SUB_FAILED):
            return str(message.payload["task_id"]) in runtime.get("retry_tasks", {})
        if message.kind == TIMER_FIRED:
            return str(message.payload["timer_id"]) in runtime.get("retry_timers", {})
        return message.kind in (SUSPEND, RESUME)

    # -- running an episode ----------------------------------------------------------------------

    def run(self, record: InstanceRecord | None, batch: list[Message], now: datetime) -> Outcome:
        first = batch[0]
        if first.kind == START and startable(record, first):
            record = self._begin(record, first, now)
        elif first.kind == START:
            assert record is not None
            return self._refuse_start(record, first, now)
        assert record is not None
        record = record.copy()
        outcome = Outcome(record, consumed=[m.id for m in batch])
        if first.kind == TERMINATE:
            self._terminate(outcome, first, now)
            return outcome
        if first.kind in (SUSPEND, RESUME):
            self._suspend_or_resume(outcome, first, now)
            return outcome
        try:
            self._episode(outcome, batch, now)
        except (NonDeterminism, FunctionNotFound, UnsupportedAction) as exc:
            self._fail(outcome, str(exc), None, now, decisions=[])
        return outcome

    def _begin(
        self, record: InstanceRecord | None, start: Message, now: datetime
    ) -> InstanceRecord:
        payload = start.payload
        if record is not None and payload.get("execution_id") == record.execution_id:
            return record
        return InstanceRecord(
            instance_id=start.target,
            name=payload["name"],
            execution_id=payload["execution_id"],
            status=OrchestrationStatus.Pending,
            created_time=start.created,
            last_updated_time=now,
            input=payload.get("input"),
            parent=payload.get("parent"),
            runtime=initial_runtime(),
        )

    def _refuse_start(self, record: InstanceRecord, start: Message, now: datetime) -> Outcome:
        """A sub-orchestration asked for an instance id that is already running."""
        outcome = Outcome(record.copy(), consumed=[start.id], changed=False)
        parent = start.payload.get("parent")
        if parent:
            reason = (
                f"An orchestration with instance ID '{record.instance_id}' already exists "
                f"and is {record.status.name}."
            )
            outcome.messages.append(
                _to_parent(parent, SUB_FAILED, now, reason=reason, details=None)
            )
        return outcome

    def _episode(self, outcome: Outcome, batch: list[Message], now: datetime) -> None:
        record = outcome.record
        runtime = record.runtime
        function = self.functions.get("orchestrator", record.name)
        past = h.replayed(record.history)
        new_events: list[dict] = [h.orchestrator_started(now)]
        allocating: Message | None = None
        for message in batch:
            if self._allocates(record, message):
                allocating = message
            new_events.extend(self._events_for(record, message))
        if record.status in (OrchestrationStatus.Pending, OrchestrationStatus.ContinuedAsNew):
            record.status = OrchestrationStatus.Running

        context = {
            "history": past + new_events,
            "input": json.loads(record.input) if record.input is not None else None,
            "instanceId": record.instance_id,
            "isReplaying": bool(past),
            "parentInstanceId": (record.parent or {}).get("instance_id"),
            "upperSchemaVersion": UPPER_SCHEMA_VERSION,
            "upperSchemaVersionNew": UPPER_SCHEMA_VERSION_NEW,
            "longRunningTimerIntervalDuration": None,
            "maximumShortTimerDuration": None,
            "defaultHttpAsyncRequestSleepTimeMillseconds": 30000,
        }
        result = run_orchestrator(function, context)
        record.history = record.history + new_events
        state = result.state or {}
        if state.get("customStatus") is not None:  # the shim keeps the last one otherwise
            record.custom_status = json.dumps(state["customStatus"])

        decisions: list[dict] = []
        if allocating is not None:
            self._retry_step(outcome, allocating, now, decisions)
        actions = flatten_actions(state.get("actions", []))
        self._check_determinism(record, actions)
        self._cancelled_timers(outcome, actions)
        continue_as_new: dict | None = None
        for index in range(runtime["action_count"], len(actions)):
            action = actions[index]
            kind = action.get("actionType")
            if kind == CONTINUE_AS_NEW:
                runtime["next_id"] += 1
                continue_as_new = action
                continue
            self._act(outcome, index, action, now, decisions)
        runtime["action_count"] = max(runtime["action_count"], len(actions))
        if continue_as_new is None:
            continue_as_new = next(
                (a for a in actions if a.get("actionType") == CONTINUE_AS_NEW), None
            )

        if result.error is not None:
            self._fail(outcome, result.error, result.details, now, decisions)
        elif state.get("isDone") and continue_as_new is not None:
            self._continue_as_new(outcome, continue_as_new, actions, now, decisions)
        elif state.get("isDone"):
            self._complete(outcome, state.get("output"), now, decisions)
        else:
            record.history.extend(decisions)
            record.history.append(h.orchestrator_completed(now))
            record.last_updated_time = now

    @staticmethod
    def _check_determinism(record: InstanceRecord, actions: list[dict]) -> None:
        """The actions already acted on must come back the same on every replay."""
        signatures = record.runtime.setdefault("signatures", [])
        for index, action in enumerate(actions):
            signature = [
                action.get("actionType"),
                action.get("functionName")
                or action.get("externalEventName")
                or action.get("instanceId"),
                action.get("operation"),
            ]
            if index < len(signatures):
                if signatures[index] != signature:
                    raise NonDeterminism(
                        "Non-Deterministic workflow detected: action "
                        f"{index} was {signatures[index]} in an earlier replay and is now "
                        f"{signature}."
                    )
            else:
                signatures.append(signature)

    def _events_for(self, record: InstanceRecord, message: Message) -> list[dict]:
        p = message.payload
        ts = message.created
        if message.kind == START:
            events = [
                h.execution_started(
                    message.created,
                    name=record.name,
                    instance_id=record.instance_id,
                    execution_id=record.execution_id,
                    input_text=record.input,
                    parent=record.parent,
                )
            ]
            for carried in p.get("carried_events", []):
                events.append(h.event_raised(ts, carried["name"], carried.get("input")))
            return events
        if message.kind == TASK_COMPLETED:
            return [h.task_completed(ts, p["task_id"], p.get("result"))]
        if message.kind == TASK_FAILED:
            return [h.task_failed(ts, p["task_id"], p["reason"], p.get("details"))]
        if message.kind == SUB_COMPLETED:
            return [h.sub_orchestration_completed(ts, p["task_id"], p.get("result"))]
        if message.kind == SUB_FAILED:
            return [h.sub_orchestration_failed(ts, p["task_id"], p["reason"], p.get("details"))]
        if message.kind == TIMER_FIRED:
            record.runtime["timers"].pop(str(p["timer_id"]), None)
            return [h.timer_fired(ts, p["timer_id"], p["fire_at"])]
        if message.kind == EVENT_RAISED:
            return [h.event_raised(ts, p["name"], p.get("input"))]
        return []

    # -- actions ---------------------------------------------------------------------------------

    def _take_id(self, record: InstanceRecord) -> int:
        task_id = record.runtime["next_id"]
        record.runtime["next_id"] = task_id + 1
        return task_id

    def _act(
        self, outcome: Outcome, index: int, action: dict, now: datetime, decisions: list[dict]
    ) -> None:
        record = outcome.record
        kind = action.get("actionType")
        if kind == WAIT_FOR_EXTERNAL_EVENT:
            return
        if kind == CALL_HTTP:
            raise UnsupportedAction("CallHttp is not supported by the local host")
        if kind == SCHEDULED_SIGNAL_ENTITY:
            raise UnsupportedAction("Scheduled entity signals are not supported by the local host")
        if kind not in (
            CALL_ACTIVITY,
            CALL_ACTIVITY_WITH_RETRY,
            CALL_SUB_ORCHESTRATOR,
            CALL_SUB_ORCHESTRATOR_WITH_RETRY,
            CREATE_TIMER,
            CALL_ENTITY,
            SIGNAL_ENTITY,
        ):
            raise UnsupportedAction(
                f"Received an unexpected action type from the out-of-proc function: '{kind}'."
            )
        task_id = self._take_id(record)
        if kind in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
            name = self.functions.get("activity", action["functionName"]).name
            input_text = action.get("input")
            self._schedule_activity(outcome, task_id, name, input_text, now, decisions)
            if kind == CALL_ACTIVITY_WITH_RETRY:
                self._open_retry(record, task_id, "activity", name, input_text, None, action, now)
        elif kind in (CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY):
            name = self.functions.get("orchestrator", action["functionName"]).name
            explicit = action.get("instanceId")
            if explicit and explicit.startswith("@"):
                raise UnsupportedAction("Orchestration instance ids must not start with @")
            if explicit and explicit in (
                record.instance_id,
                (record.parent or {}).get("instance_id"),
            ):
                raise UnsupportedAction(
                    "The instance ID of a sub-orchestration must be different than the instance "
                    "ID of a parent orchestration."
                )
            input_text = action.get("input")
            self._schedule_sub(outcome, task_id, name, explicit, input_text, now, decisions)
            if kind == CALL_SUB_ORCHESTRATOR_WITH_RETRY:
                self._open_retry(
                    record, task_id, "orchestrator", name, input_text, explicit, action, now
                )
        elif kind == CREATE_TIMER:
            fire_at = h.parse_timestamp(action["fireAt"])
            decisions.append(h.timer_created(now, task_id, fire_at))
            record.runtime["timer_actions"][str(index)] = task_id
            if not action.get("isCanceled"):
                self._schedule_timer(outcome, task_id, fire_at, now)
        else:  # CALL_ENTITY, SIGNAL_ENTITY
            self._send_entity_message(
                outcome, task_id, action, kind == SIGNAL_ENTITY, now, decisions
            )

    def _schedule_activity(
        self,
        outcome: Outcome,
        task_id: int,
        name: str,
        input_text: Any,
        now: datetime,
        decisions: list[dict],
    ) -> None:
        record = outcome.record
        decisions.append(h.task_scheduled(now, task_id, name, _payload_json(input_text)))
        outcome.work_items.append(
            WorkItem(
                id=f"{record.instance_id}|{record.execution_id}|task|{task_id}",
                instance_id=record.instance_id,
                execution_id=record.execution_id,
                task_id=task_id,
                name=name,
                input=input_text,
                created=now,
            )
        )

    def _schedule_sub(
        self,
        outcome: Outcome,
        task_id: int,
        name: str,
        explicit_id: str | None,
        input_text: Any,
        now: datetime,
        decisions: list[dict],
    ) -> None:
        record = outcome.record
        child_id = explicit_id or f"{record.execution_id}:{task_id}"
        stored_input = _payload_json(input_text)
        decisions.append(h.sub_orchestration_created(now, task_id, name, child_id, stored_input))
        parent = {
            "instance_id": record.instance_id,
            "execution_id": record.execution_id,
            "task_id": task_id,
            "name": record.name,
        }
        outcome.messages.append(
            Message(
                id=f"{child_id}|start|{record.instance_id}|{record.execution_id}|{task_id}",
                target=child_id,
                kind=START,
                payload={
                    "name": name,
                    "input": stored_input,
                    "execution_id": new_execution_id(),
                    "parent": parent,
                },
                created=now,
            )
        )

    def _schedule_timer(
        self, outcome: Outcome, timer_id: int, fire_at: datetime, now: datetime
    ) -> None:
        record = outcome.record
        message_id = f"{record.instance_id}|{record.execution_id}|timer|{timer_id}"
        record.runtime["timers"][str(timer_id)] = message_id
        outcome.messages.append(
            Message(
                id=message_id,
                target=record.instance_id,
                kind=TIMER_FIRED,
                payload={
                    "execution_id": record.execution_id,
                    "timer_id": timer_id,
                    "fire_at": h.format_timestamp(fire_at),
                },
                created=now,
                due=fire_at,
            )
        )

    def _send_entity_message(
        self,
        outcome: Outcome,
        task_id: int,
        action: dict,
        signal: bool,
        now: datetime,
        decisions: list[dict],
    ) -> None:
        record = outcome.record
        target = action["instanceId"]
        entity_name = target[1:].split("@", 1)[0]
        self.functions.get("entity", entity_name)
        request_id = str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{record.instance_id}_{record.execution_id}_{task_id}")
        )
        request: dict[str, Any] = {"op": action.get("operation"), "id": request_id}
        if signal:
            request["signal"] = True
        if action.get("input") is not None:
            request["input"] = _payload_json(action.get("input"))
        request["parent"] = record.instance_id
        request["parentExecution"] = record.execution_id
        decisions.append(h.event_sent(now, task_id, target, "op", json.dumps(request)))
        if not signal:
            record.runtime["entity_requests"].append(request_id)
        outcome.messages.append(
            Message(
                id=f"{target}|req|{request_id}",
                target=target,
                kind=ENTITY_OPERATION,
                payload={
                    "id": request_id,
                    "op": action.get("operation"),
                    "signal": signal,
                    "input": request.get("input"),
                    "parent": record.instance_id,
                    "parent_execution": record.execution_id,
                },
                created=now,
            )
        )

    def _cancelled_timers(self, outcome: Outcome, actions: list[dict]) -> None:
        runtime = outcome.record.runtime
        for index, timer_id in list(runtime["timer_actions"].items()):
            position = int(index)
            if position < len(actions) and actions[position].get("isCanceled"):
                message_id = runtime["timers"].pop(str(timer_id), None)
                if message_id:
                    outcome.consumed.append(message_id)
                del runtime["timer_actions"][index]

    # -- retries ---------------------------------------------------------------------------------

    def _open_retry(
        self,
        record: InstanceRecord,
        task_id: int,
        kind: str,
        name: str,
        input_text: Any,
        instance_id: str | None,
        action: dict,
        now: datetime,
    ) -> None:
        options = action.get("retryOptions") or {}
        key = str(task_id)
        record.runtime["retries"][key] = {
            "kind": kind,
            "name": name,
            "input": input_text,
            "instance_id": instance_id,
            "options": options,
            "attempt": 1,
            "first_attempt": h.format_timestamp(now),
        }
        record.runtime["retry_tasks"][key] = key

    def _retry_step(
        self, outcome: Outcome, message: Message, now: datetime, decisions: list[dict]
    ) -> None:
        record = outcome.record
        runtime = record.runtime
        if message.kind in (TASK_FAILED, SUB_FAILED):
            key = runtime["retry_tasks"].pop(str(message.payload["task_id"]))
            retry = runtime["retries"][key]
            delay = retry_delay(retry["options"], retry["attempt"])
            timer_id = self._take_id(record)
            fire_at = now + delay
            decisions.append(h.timer_created(now, timer_id, fire_at))
            runtime["retry_timers"][str(timer_id)] = key
            self._schedule_timer(outcome, timer_id, fire_at, now)
        elif message.kind == TIMER_FIRED:
            key = runtime["retry_timers"].pop(str(message.payload["timer_id"]))
            retry = runtime["retries"][key]
            max_attempts = int(retry["options"].get("maxNumberOfAttempts", 1))
            if retry["attempt"] >= max_attempts:
                del runtime["retries"][key]
                return
            retry["attempt"] += 1
            task_id = self._take_id(record)
            runtime["retry_tasks"][str(task_id)] = key
            if retry["kind"] == "activity":
                self._schedule_activity(
                    outcome, task_id, retry["name"], retry["input"], now, decisions
                )
            else:
                self._schedule_sub(
                    outcome,
                    task_id,
                    retry["name"],
                    retry["instance_id"],
                    retry["input"],
                    now,
                    decisions,
                )

    # -- endings ---------------------------------------------------------------------------------

    def _finish(self, outcome: Outcome, status: OrchestrationStatus, now: datetime) -> None:
        record = outcome.record
        record.status = status
        record.last_updated_time = now
        # pending timers of a finished execution are moot
        for message_id in record.runtime.get("timers", {}).values():
            outcome.consumed.append(message_id)
        record.runtime["timers"] = {}

    def _complete(
        self, outcome: Outcome, output: Any, now: datetime, decisions: list[dict]
    ) -> None:
        record = outcome.record
        record.output = json.dumps(output)
        record.history.extend(decisions)
        record.history.append(
            h.execution_completed(now, OrchestrationStatus.Completed, record.output)
        )
        record.history.append(h.orchestrator_completed(now))
        self._finish(outcome, OrchestrationStatus.Completed, now)
        if record.parent:
            outcome.messages.append(
                _to_parent(record.parent, SUB_COMPLETED, now, result=record.output)
            )

    def _fail(
        self,
        outcome: Outcome,
        error: str,
        details: str | None,
        now: datetime,
        decisions: list[dict],
    ) -> None:
        record = outcome.record
        reason = f"Orchestrator function '{record.name}' failed: {error}"
        record.output = json.dumps(reason)
        record.history.extend(decisions)
        failure = {"ErrorType": "OrchestrationFailureException", "ErrorMessage": reason}
        record.history.append(
            h.execution_completed(now, OrchestrationStatus.Failed, details or reason, failure)
        )
        record.history.append(h.orchestrator_completed(now))
        self._finish(outcome, OrchestrationStatus.Failed, now)
        if record.parent:
            outcome.messages.append(
                _to_parent(record.parent, SUB_FAILED, now, reason=reason, details=details)
            )

    def _terminate(self, outcome: Outcome, message: Message, now: datetime) -> None:
        record = outcome.record
        reason = message.payload.get("reason")
        record.history.append(h.orchestrator_started(now))
        record.history.append(h.execution_terminated(message.created, reason))
        record.output = reason
        record.history.append(h.execution_completed(now, OrchestrationStatus.Terminated, reason))
        record.history.append(h.orchestrator_completed(now))
        self._finish(outcome, OrchestrationStatus.Terminated, now)

    def _suspend_or_resume(self, outcome: Outcome, message: Message, now: datetime) -> None:
        record = outcome.record
        reason = message.payload.get("reason")
        record.history.append(h.orchestrator_started(now))
        if message.kind == SUSPEND:
            record.history.append(h.execution_suspended(message.created, reason))
            if record.status in (OrchestrationStatus.Running, OrchestrationStatus.Pending):
                record.status = OrchestrationStatus.Suspended
        else:
            record.history.append(h.execution_resumed(message.created, reason))
            if record.status == OrchestrationStatus.Suspended:
                record.status = OrchestrationStatus.Running
        record.history.append(h.orchestrator_completed(now))
        record.last_updated_time = now

    def _continue_as_new(
        self,
        outcome: Outcome,
        action: dict,
        actions: list[dict],
        now: datetime,
        decisions: list[dict],
    ) -> None:
        record = outcome.record
        carried = self._unprocessed_events(record, actions)
        self._finish(outcome, OrchestrationStatus.ContinuedAsNew, now)
        new_input = _payload_json(action.get("input"))
        execution_id = new_execution_id()
        record.execution_id = execution_id
        record.input = new_input
        record.output = None
        record.custom_status = None
        record.history = []
        consumed = record.runtime.get("consumed", [])
        record.runtime = initial_runtime()
        record.runtime["consumed"] = consumed
        outcome.messages.append(
            Message(
                id=f"{record.instance_id}|{execution_id}|start",
                target=record.instance_id,
                kind=START,
                payload={
                    "name": record.name,
                    "input": new_input,
                    "execution_id": execution_id,
                    "parent": record.parent,
                    "carried_events": carried,
                },
                created=now,
            )
        )

    @staticmethod
    def _unprocessed_events(record: InstanceRecord, actions: list[dict]) -> list[dict]:
        """External events of this execution that no ``wait_for_external_event`` took."""
        responses = set(record.runtime.get("entity_requests", []))
        waits: dict[str, int] = {}
        for action in actions:
            if action.get("actionType") == WAIT_FOR_EXTERNAL_EVENT:
                name = action.get("externalEventName")
                waits[name] = waits.get(name, 0) + 1
        carried = []
        for item in record.history:
            if item.get("EventType") != h.EventType.EventRaised or item.get("Name") in responses:
                continue
            name = item.get("Name")
            if waits.get(name, 0) > 0:
                waits[name] -= 1
            else:
                carried.append({"name": name, "input": item.get("Input")})
        return carried


def retry_delay(options: dict, attempt: int) -> timedelta:
    """DTFx's next delay after failed attempt number ``attempt`` (1-based)."""
    first = float(options.get("firstRetryIntervalInMilliseconds", 0))
    backoff = float(options.get("backoffCoefficient", 1.0) or 1.0)
    delay = first * backoff ** (attempt - 1)
    max_interval = options.get("maxRetryIntervalInMilliseconds")
    if max_interval is not None:
        delay = min(delay, float(max_interval))
    return timedelta(milliseconds=delay)


def _to_parent(parent: dict, kind: str, now: datetime, **payload: Any) -> Message:
    return Message(
        id=f"{parent['instance_id']}|{parent['execution_id']}|sub|{parent['task_id']}",
        target=parent["instance_id"],
        kind=kind,
        payload={
            "execution_id": parent["execution_id"],
            "task_id": parent["task_id"],
            **payload,
        },
        created=now,
    )


def remember_consumed(record: InstanceRecord, ids: list[str]) -> None:
    consumed = record.runtime.setdefault("consumed", [])
    consumed.extend(ids)
    del consumed[:-CONSUMED_MEMORY]
