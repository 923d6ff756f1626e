"""History events, shaped as the Durable Functions extension serializes them for the Python SDK.

The extension hands the SDK the Durable Task Framework's own history events serialized by
Newtonsoft.Json with default settings: PascalCase property names, ``EventType`` as its integer,
``EventId`` (-1 for events that are not scheduling decisions), ``IsPlayed`` and ``Timestamp``,
plus the properties of each event class (``Name``, ``Input``, ``Result``, ``TaskScheduledId``,
``TimerId``, ``FireAt``, ``Reason``, ``Details``, ``InstanceId``, ...). Payloads (``Input``,
``Result``) are JSON *text*, as DTFx stores them.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any


class EventType(IntEnum):
    """DurableTask.Core.History.EventType (the SDK's HistoryEventType)."""

    ExecutionStarted = 0
    ExecutionCompleted = 1
    ExecutionFailed = 2
    ExecutionTerminated = 3
    TaskScheduled = 4
    TaskCompleted = 5
    TaskFailed = 6
    SubOrchestrationInstanceCreated = 7
    SubOrchestrationInstanceCompleted = 8
    SubOrchestrationInstanceFailed = 9
    TimerCreated = 10
    TimerFired = 11
    OrchestratorStarted = 12
    OrchestratorCompleted = 13
    EventSent = 14
    EventRaised = 15
    ContinueAsNew = 16
    GenericEvent = 17
    HistoryState = 18
    ExecutionSuspended = 19
    ExecutionResumed = 20


class OrchestrationStatus(IntEnum):
    """DurableTask.Core.OrchestrationStatus, whose names are the HTTP API's runtime statuses."""

    Running = 0
    Completed = 1
    ContinuedAsNew = 2
    Failed = 3
    Canceled = 4
    Terminated = 5
    Pending = 6
    Suspended = 7


TERMINAL_STATUSES = frozenset(
    {
        OrchestrationStatus.Completed,
        OrchestrationStatus.Failed,
        OrchestrationStatus.Terminated,
        OrchestrationStatus.Canceled,
    }
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_timestamp(value: datetime) -> str:
    """A history timestamp: ISO 8601 in UTC with a ``Z`` (the SDK parses it with dateutil)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_status_time(value: datetime) -> str:
    """A status timestamp as the HTTP API writes it: ``ToString("s") + "Z"``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> datetime:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python before 3.11 could not take 7 fractional digits; .NET writes them. Trim to 6.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = ""
        rest = ""
        for i, ch in enumerate(tail):
            if not ch.isdigit():
                rest = tail[i:]
                break
            digits += ch
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def event(kind: EventType, timestamp: datetime, event_id: int = -1, **fields: Any) -> dict:
    """One history event. ``IsPlayed`` starts False; it is set True when the event is replayed."""
    data: dict[str, Any] = {"EventType": int(kind), "EventId": event_id, "IsPlayed": False}
    data["Timestamp"] = format_timestamp(timestamp)
    data.update(fields)
    return data


def orchestrator_started(ts: datetime) -> dict:
    return event(EventType.OrchestratorStarted, ts)


def orchestrator_completed(ts: datetime) -> dict:
    return event(EventType.OrchestratorCompleted, ts)


def execution_started(
    ts: datetime,
    *,
    name: str,
    instance_id: str,
    execution_id: str,
    input_text: str | None,
    parent: dict | None = None,
) -> dict:
    parent_instance = None
    if parent:
        parent_instance = {
            "Name": parent.get("name"),
            "OrchestrationInstance": {
                "InstanceId": parent["instance_id"],
                "ExecutionId": parent.get("execution_id"),
            },
            "TaskScheduleId": parent.get("task_id"),
            "Version": "",
        }
    return event(
        EventType.ExecutionStarted,
        ts,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent_instance,
        Name=name,
        Version="",
        Input=input_text,
        Tags=None,
    )


def execution_completed(
    ts: datetime, status: OrchestrationStatus, result: str | None, failure: dict | None = None
) -> dict:
    return event(
        EventType.ExecutionCompleted,
        ts,
        OrchestrationStatus=int(status),
        Result=result,
        FailureDetails=failure,
    )


def execution_terminated(ts: datetime, reason: str | None) -> dict:
    return event(EventType.ExecutionTerminated, ts, Input=reason)


def continue_as_new(ts: datetime, result: str | None) -> dict:
    return event(
        EventType.ContinueAsNew,
        ts,
        OrchestrationStatus=int(OrchestrationStatus.ContinuedAsNew),
        Result=result,
    )


def task_scheduled(ts: datetime, task_id: int, name: str, input_text: str | None) -> dict:
    return event(EventType.TaskScheduled, ts, task_id, Name=name, Version="", Input=input_text)


def task_completed(ts: datetime, task_id: int, result: str | None) -> dict:
    return event(EventType.TaskCompleted, ts, TaskScheduledId=task_id, Result=result)


def task_failed(ts: datetime, task_id: int, reason: str, details: str | None) -> dict:
    return event(EventType.TaskFailed, ts, TaskScheduledId=task_id, Reason=reason, Details=details)


def sub_orchestration_created(
    ts: datetime, task_id: int, name: str, instance_id: str, input_text: str | None
) -> dict:
    return event(
        EventType.SubOrchestrationInstanceCreated,
        ts,
        task_id,
        Name=name,
        Version="",
        InstanceId=instance_id,
        Input=input_text,
    )


def sub_orchestration_completed(ts: datetime, task_id: int, result: str | None) -> dict:
    return event(
        EventType.SubOrchestrationInstanceCompleted, ts, TaskScheduledId=task_id, Result=result
    )


def sub_orchestration_failed(ts: datetime, task_id: int, reason: str, details: str | None) -> dict:
    return event(
        EventType.SubOrchestrationInstanceFailed,
        ts,
        TaskScheduledId=task_id,
        Reason=reason,
        Details=details,
    )


def timer_created(ts: datetime, timer_id: int, fire_at: datetime) -> dict:
    return event(EventType.TimerCreated, ts, timer_id, FireAt=format_timestamp(fire_at))


def timer_fired(ts: datetime, timer_id: int, fire_at: str) -> dict:
    return event(EventType.TimerFired, ts, TimerId=timer_id, FireAt=fire_at)


def event_raised(ts: datetime, name: str, input_text: str | None) -> dict:
    return event(EventType.EventRaised, ts, Name=name, Input=input_text)


def event_sent(ts: datetime, event_id: int, instance_id: str, name: str, input_text: str) -> dict:
    return event(
        EventType.EventSent, ts, event_id, InstanceId=instance_id, Name=name, Input=input_text
    )


def execution_suspended(ts: datetime, reason: str | None) -> dict:
    return event(EventType.ExecutionSuspended, ts, Reason=reason)


def execution_resumed(ts: datetime, reason: str | None) -> dict:
    return event(EventType.ExecutionResumed, ts, Reason=reason)


def replayed(events: list[dict]) -> list[dict]:
    """The events as the SDK sees them on a later replay: every one marked played."""
    return [{**e, "IsPlayed": True} for e in events]


# -- the status endpoint's view of history (DurableClient.GetDurableOrchestrationStatusAsync) ---


def parse_json_token(value: Any) -> Any:
    """The extension's ``ParseToJToken``: JSON when the text parses, the text itself otherwise."""
    import json

    if value is None:
        return None
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return ""
    try:
        return json.loads(text)
    except ValueError:
        return value


def status_history(events: list[dict], *, show_output: bool, show_input: bool) -> list[dict]:
    """History for ``showHistory=true``: event type names, scheduling events folded into their
    completions, OrchestratorStarted/Completed dropped, EventId/IsPlayed removed."""
    items = [dict(e) for e in events]
    scheduled: dict[str, tuple[int, dict]] = {}
    drop: set[int] = set()
    for index, item in enumerate(items):
        try:
            kind = EventType(item["EventType"])
        except (KeyError, ValueError):
            continue
        item["EventType"] = kind.name
        if kind in (EventType.TaskScheduled, EventType.SubOrchestrationInstanceCreated):
            scheduled[f"{kind.name}_{item.get('EventId')}"] = (index, item)
            item.pop("Version", None)
        elif kind in (
            EventType.TaskCompleted,
            EventType.TaskFailed,
            EventType.SubOrchestrationInstanceCompleted,
            EventType.SubOrchestrationInstanceFailed,
        ):
            prefix = (
                "TaskScheduled"
                if kind in (EventType.TaskCompleted, EventType.TaskFailed)
                else "SubOrchestrationInstanceCreated"
            )
            found = scheduled.get(f"{prefix}_{item.get('TaskScheduledId')}")
            if found:
                source_index, source = found
                item["ScheduledTime"] = source["Timestamp"]
                item["FunctionName"] = source.get("Name")
                if show_input:
                    item["Input"] = source.get("Input")
                drop.add(source_index)
            item.pop("TaskScheduledId", None)
            is_completion = kind in (
                EventType.TaskCompleted,
                EventType.SubOrchestrationInstanceCompleted,
            )
            if is_completion and not show_output:
                item.pop("Result", None)
            elif is_completion:
                item["Result"] = parse_json_token(item.get("Result"))
        elif kind == EventType.ExecutionStarted:
            item["FunctionName"] = item.pop("Name", None)
            for key in ("OrchestrationInstance", "ParentInstance", "Version", "Tags"):
                item.pop(key, None)
        elif kind in (EventType.ExecutionCompleted, EventType.ContinueAsNew):
            with contextlib.suppress(ValueError):
                item["OrchestrationStatus"] = OrchestrationStatus(
                    item.get("OrchestrationStatus")
                ).name
            if show_output:
                item["Result"] = parse_json_token(item.get("Result"))
            else:
                item.pop("Result", None)
        elif kind == EventType.TimerFired:
            item.pop("TimerId", None)
        elif kind in (EventType.OrchestratorStarted, EventType.OrchestratorCompleted):
            drop.add(index)
        if not show_input:
            item.pop("Input", None)
        item.pop("EventId", None)
        item.pop("IsPlayed", None)
    return [item for index, item in enumerate(items) if index not in drop]
