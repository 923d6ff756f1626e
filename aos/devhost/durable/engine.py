"""The durable engine: runs orchestrations, entities and activities of one function app.

Everything goes through the ``DurableStore``: an operation (start, raise event, signal...) adds a
message; a worker per target (orchestration instance or entity) takes that target's messages one
unit at a time, runs the user code and commits the result; activities are work items run in the
background; timers are messages with a due time, woken with asyncio's scheduling on real time.
An engine started over a store another engine left behind resumes its work.

Inputs given to this class's methods follow the SDK client's rules, so an app sees the same
values as behind the real host: ``start_new(input=v)``, ``raise_event(data=v)`` and
``signal_entity(input=v)`` behave like ``DurableOrchestrationClient`` called with ``v`` (which
serializes ``v`` to JSON text and sends that text as a JSON string). In particular the
orchestration input arrives as ``v``, the entity operation input as ``v``, but an external event
arrives as the JSON *text* of ``v``, exactly as through the real extension. The ``*_json``
methods take the JSON text the HTTP API received instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import history as h
from .entities import EntityRunner, entity_id, split_entity_id
from .functions import ActivityError, FunctionNotFound, FunctionRegistry, run_activity
from .history import OrchestrationStatus, utcnow
from .orchestrations import (
    ENTITY_OPERATION,
    EVENT_RAISED,
    RESUME,
    START,
    SUSPEND,
    TASK_COMPLETED,
    TASK_FAILED,
    TERMINATE,
    OrchestrationRunner,
    Outcome,
    initial_runtime,
    new_execution_id,
    remember_consumed,
)
from .store import (
    DurableStore,
    InMemoryDurableStore,
    InstanceQuery,
    InstanceRecord,
    Message,
    WorkItem,
)

log = logging.getLogger(__name__)

MAX_INSTANCE_ID_LENGTH = 100


class DurableError(Exception):
    """Base of the engine's errors."""


class InstanceNotFound(DurableError):
    pass


class InstanceExists(DurableError):
    pass


class InstanceGone(DurableError):
    """The instance has finished (completed, failed or terminated)."""


class InvalidArgument(DurableError, ValueError):
    pass


@dataclass(frozen=True)
class EntityState:
    exists: bool
    state: Any = None


def _client_payload(value: Any) -> str | None:
    """What the extension stores for a value the SDK client sent (JSON text sent as a string)."""
    if value is None:
        return None
    from azure.durable_functions.models.utils.df_serialization import df_dumps

    return json.dumps(df_dumps(value))


def _encode_token(created: datetime, instance_id: str) -> str:
    raw = json.dumps([h.format_timestamp(created), instance_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        created, instance_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return h.parse_timestamp(created), instance_id
    except Exception as exc:
        raise InvalidArgument(f"invalid continuation token: {token!r}") from exc


class DurableEngine:
    """Runs a function app's durable functions. Use as ``async with DurableEngine(...)``."""

    def __init__(
        self,
        functions: Iterable[Any],
        store: DurableStore | None = None,
        task_hub: str = "aoshub",
        *,
        max_concurrent_activities: int = 16,
    ) -> None:
        self.functions = FunctionRegistry(functions)
        self.store = store if store is not None else InMemoryDurableStore()
        self.task_hub = task_hub
        self._orchestrations = OrchestrationRunner(self.functions)
        self._entities = EntityRunner(self.functions)
        self._activity_slots = asyncio.Semaphore(max_concurrent_activities)
        self._runners: dict[str, asyncio.Task] = {}
        self._dirty: set[str] = set()
        self._work: dict[str, asyncio.Task] = {}
        self._wakeups: set[asyncio.TimerHandle] = set()
        self._changed: asyncio.Condition | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> DurableEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the store and resume whatever work it holds."""
        if self._started:
            return
        self._changed = asyncio.Condition()
        await self.store.open()
        self._started = True
        for target, due in (await self.store.message_targets()).items():
            self._wake(target, due)
        for item in await self.store.list_work_items():
            self._start_work(item)

    async def stop(self) -> None:
        """Stop all workers where they are (work not committed is redone by the next engine)."""
        if not self._started:
            return
        self._started = False
        for handle in self._wakeups:
            handle.cancel()
        self._wakeups.clear()
        tasks = [*self._runners.values(), *self._work.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._runners.clear()
        self._work.clear()
        self._dirty.clear()
        await self.store.close()

    # -- orchestration client operations ---------------------------------------------------------

    async def start_new(
        self, orchestrator: str, instance_id: str | None = None, input: Any = None
    ) -> str:
        """Start an orchestration as ``client.start_new(orchestrator, instance_id, input)``."""
        return await self.start_new_json(orchestrator, instance_id, _client_payload(input))

    async def start_new_json(
        self, orchestrator: str, instance_id: str | None, input_text: str | None
    ) -> str:
        """Start an orchestration whose input is ``input_text`` (JSON text as stored)."""
        self._require_started()
        name = self.functions.get("orchestrator", orchestrator).name
        if not instance_id:
            instance_id = uuid.uuid4().hex
        elif instance_id.startswith("@"):
            raise InvalidArgument("Orchestration instance ids must not start with @.")
        elif any(c in "/\\?#" or ord(c) < 32 or 127 <= ord(c) < 160 for c in instance_id):
            raise InvalidArgument(
                "Orchestration instance ids must not contain /, \\, #, ?, or control characters."
            )
        if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
            raise InvalidArgument(
                f"Instance ID lengths must not exceed {MAX_INSTANCE_ID_LENGTH} characters."
            )
        now = utcnow()
        execution_id = new_execution_id()
        record = InstanceRecord(
            instance_id=instance_id,
            name=name,
            execution_id=execution_id,
            status=OrchestrationStatus.Pending,
            created_time=now,
            last_updated_time=now,
            input=input_text,
            runtime=initial_runtime(),
        )
        start = Message(
            id=f"{instance_id}|{execution_id}|start",
            target=instance_id,
            kind=START,
            payload={"name": name, "input": input_text, "execution_id": execution_id},
            created=now,
        )
        if not await self.store.create_instance(record, start):
            existing = await self.store.get_instance(instance_id)
            status = existing.status.name if existing else "Running"
            raise InstanceExists(
                f"An Orchestration instance with the status {status} already exists."
            )
        self._kick(instance_id)
        await self._notify()
        return instance_id

    async def get_status(
        self,
        instance_id: str,
        *,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = True,
    ) -> dict | None:
        """The HTTP API's status payload for the instance, or None when there is none."""
        record = await self.store.get_instance(instance_id)
        if record is None:
            return None
        return self._status_payload(record, show_history, show_history_output, show_input)

    @staticmethod
    def _status_payload(
        record: InstanceRecord, show_history: bool, show_history_output: bool, show_input: bool
    ) -> dict:
        payload = {
            "name": record.name,
            "instanceId": record.instance_id,
            "runtimeStatus": record.status.name,
            "input": h.parse_json_token(record.input) if show_input else None,
            "customStatus": h.parse_json_token(record.custom_status),
            "output": h.parse_json_token(record.output),
            "createdTime": h.format_status_time(record.created_time),
            "lastUpdatedTime": h.format_status_time(record.last_updated_time),
        }
        if show_history and record.status != OrchestrationStatus.Pending:
            payload["historyEvents"] = h.status_history(
                record.history, show_output=show_history_output, show_input=show_input
            )
        return payload

    async def wait_for(self, instance_id: str, timeout: float = 10.0) -> dict:  # noqa: ASYNC109
        """Wait until the instance is Completed, Failed or Terminated; return its status."""
        assert self._changed is not None, "the engine is not started"

        async def finished() -> dict:
            async with self._changed:
                while True:
                    status = await self.get_status(instance_id)
                    if status and status["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
                        return status
                    await self._changed.wait()

        return await asyncio.wait_for(finished(), timeout)

    async def wait_until_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until no message is due and no activity is running (timers may be pending)."""
        assert self._changed is not None, "the engine is not started"

        async def idle() -> None:
            async with self._changed:
                while not await self._is_idle():
                    await self._changed.wait()

        await asyncio.wait_for(idle(), timeout)

    async def _is_idle(self) -> bool:
        if self._runners or self._work:
            return False
        now = utcnow()
        return all(
            due is not None and due > now for due in (await self.store.message_targets()).values()
        )

    async def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        """Raise an event as ``client.raise_event(instance_id, event_name, data)`` does: the
        orchestration receives ``json.dumps(data)`` (a string), as behind the real host."""
        await self.raise_event_json(instance_id, event_name, json.dumps(json.dumps(data)))

    async def raise_event_json(
        self, instance_id: str, event_name: str, input_text: str | None
    ) -> None:
        if not event_name:
            raise InvalidArgument("event_name must be a non-empty string.")
        record = await self._live_instance(instance_id)
        await self._send(
            record.instance_id, EVENT_RAISED, {"name": event_name, "input": input_text}
        )

    async def terminate(self, instance_id: str, reason: str | None = None) -> bool:
        """Terminate a running instance; False when it had already finished."""
        try:
            await self._live_instance(instance_id)
        except InstanceGone:
            return False
        await self._send(instance_id, TERMINATE, {"reason": reason})
        return True

    async def suspend(self, instance_id: str, reason: str | None = None) -> bool:
        try:
            await self._live_instance(instance_id)
        except InstanceGone:
            return False
        await self._send(instance_id, SUSPEND, {"reason": reason})
        return True

    async def resume(self, instance_id: str, reason: str | None = None) -> bool:
        try:
            await self._live_instance(instance_id)
        except InstanceGone:
            return False
        await self._send(instance_id, RESUME, {"reason": reason})
        return True

    async def restart(self, instance_id: str, new_instance_id: bool = True) -> str:
        record = await self.store.get_instance(instance_id)
        if record is None:
            raise InstanceNotFound(f"No instance with ID '{instance_id}' found.")
        return await self.start_new_json(
            record.name, None if new_instance_id else instance_id, record.input
        )

    async def purge(self, instance_id: str) -> int:
        """Delete a finished instance's history and state; the number deleted (0 or 1)."""
        record = await self.store.get_instance(instance_id)
        if record is None:
            raise InstanceNotFound(f"No instance with ID '{instance_id}' found.")
        if not record.is_terminal:
            return 0
        deleted = await self.store.delete_instance(instance_id)
        await self._notify()
        return int(deleted)

    async def purge_by(
        self,
        created_from: datetime,
        created_to: datetime | None = None,
        runtime_status: list[str] | None = None,
    ) -> int:
        statuses = [OrchestrationStatus[s] for s in runtime_status or []]
        query = InstanceQuery(
            runtime_status=statuses or None,
            created_from=created_from,
            created_to=created_to or utcnow(),
        )
        deleted = 0
        for record in await self.store.list_instances(query):
            if record.is_terminal and await self.store.delete_instance(record.instance_id):
                deleted += 1
        await self._notify()
        return deleted

    async def list_instances(
        self,
        *,
        runtime_status: list[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        instance_id_prefix: str | None = None,
        show_input: bool = False,
        top: int | None = None,
        continuation_token: str | None = None,
    ) -> tuple[list[dict], str | None]:
        """Statuses of matching instances (oldest first), and a token for the next page."""
        statuses = [OrchestrationStatus[s] for s in runtime_status or []]
        query = InstanceQuery(
            runtime_status=statuses or None,
            created_from=created_from,
            created_to=created_to,
            instance_id_prefix=instance_id_prefix,
        )
        records = await self.store.list_instances(query)
        if continuation_token:
            after = _decode_token(continuation_token)
            records = [r for r in records if (r.created_time, r.instance_id) > after]
        next_token = None
        if top is not None and top > 0 and len(records) > top:
            records = records[:top]
            last = records[-1]
            next_token = _encode_token(last.created_time, last.instance_id)
        return [self._status_payload(r, False, False, show_input) for r in records], next_token

    async def _live_instance(self, instance_id: str) -> InstanceRecord:
        record = await self.store.get_instance(instance_id)
        if record is None:
            raise InstanceNotFound(f"No instance with ID '{instance_id}' found.")
        if record.is_terminal:
            raise InstanceGone(
                f"Instance with ID {instance_id} is gone: either completed or failed"
            )
        return record

    # -- entity client operations ----------------------------------------------------------------

    async def signal_entity(
        self, entity_name: str, entity_key: str, operation: str, input: Any = None
    ) -> None:
        """Signal an entity as ``client.signal_entity(EntityId(name, key), operation, input)``."""
        await self.signal_entity_json(entity_name, entity_key, operation, _client_payload(input))

    async def signal_entity_json(
        self, entity_name: str, entity_key: str, operation: str, input_text: str | None
    ) -> None:
        self._require_started()
        self.functions.get("entity", entity_name)
        target = entity_id(entity_name, entity_key)
        request_id = str(uuid.uuid4())
        payload = {"id": request_id, "op": operation, "signal": True, "input": input_text}
        await self._send(target, ENTITY_OPERATION, payload, message_id=f"{target}|req|{request_id}")

    async def read_entity(self, entity_name: str, entity_key: str) -> EntityState:
        record = await self.store.get_entity(entity_id(entity_name, entity_key))
        if record is None or not record.exists:
            return EntityState(False)
        return EntityState(True, h.parse_json_token(record.state))

    # -- message plumbing ------------------------------------------------------------------------

    def _require_started(self) -> None:
        if not self._started:
            raise DurableError("the durable engine is not started")

    async def _send(
        self, target: str, kind: str, payload: dict, message_id: str | None = None
    ) -> None:
        self._require_started()
        message = Message(
            id=message_id or f"{target}|{kind}|{uuid.uuid4()}",
            target=target,
            kind=kind,
            payload=payload,
            created=utcnow(),
        )
        await self.store.add_messages([message])
        self._kick(target)

    def _wake(self, target: str, due: datetime | None) -> None:
        if due is None:
            self._kick(target)
            return
        delay = max(0.0, (due - utcnow()).total_seconds())
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._wakeups.discard(handle)
            if self._started:
                self._kick(target)

        handle = loop.call_later(delay, fire)
        self._wakeups.add(handle)

    def _kick(self, target: str) -> None:
        if not self._started:
            return
        self._dirty.add(target)
        if target not in self._runners:
            self._runners[target] = asyncio.create_task(self._run_target(target))

    async def _run_target(self, target: str) -> None:
        try:
            while target in self._dirty:
                self._dirty.discard(target)
                while await self._process(target):
                    pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("durable engine: processing %s failed", target)
        finally:
            self._runners.pop(target, None)
            await self._notify()

    async def _process(self, target: str) -> bool:
        """Process one unit of work for the target; False when there is nothing to do now."""
        messages = await self.store.get_messages(target)
        if not messages:
            return False
        now = utcnow()
        if target.startswith("@"):
            return await self._process_entity(target, messages, now)
        record = await self.store.get_instance(target)
        batch, dropped = self._orchestrations.select(record, messages, now)
        if not batch:
            if dropped:
                await self.store.delete_messages(target, [m.id for m in dropped])
                return True
            pending = [m.due for m in messages if m.due is not None and m.due > now]
            if pending:
                self._wake(target, min(pending))
            return False
        try:
            outcome = self._orchestrations.run(record, batch, now)
        except Exception as exc:  # a host-level failure: fail the instance rather than loop
            log.exception("durable engine: orchestration %s failed in the host", target)
            outcome = self._host_failure(record, batch, exc, now)
            if outcome is None:
                await self.store.delete_messages(target, [m.id for m in batch + dropped])
                return True
        outcome.consumed.extend(m.id for m in dropped)
        remember_consumed(outcome.record, [m.id for m in batch])
        await self.store.commit_orchestration(
            outcome.record, outcome.consumed, outcome.messages, outcome.work_items
        )
        self._dispatch(outcome.messages, outcome.work_items)
        await self._notify()
        return True

    def _host_failure(
        self, record: InstanceRecord | None, batch: list[Message], exc: Exception, now: datetime
    ) -> Outcome | None:
        if record is None:
            return None
        record = record.copy()
        outcome = Outcome(record, consumed=[m.id for m in batch])
        if record.is_terminal:
            return outcome
        self._orchestrations._fail(outcome, f"{type(exc).__name__}: {exc}", None, now, [])
        return outcome

    async def _process_entity(self, target: str, messages: list[Message], now: datetime) -> bool:
        record = await self.store.get_entity(target)
        outcome = self._entities.run(record, messages, now)
        if outcome is None:
            return False
        await self.store.commit_entity(outcome.record, outcome.consumed, outcome.messages)
        self._dispatch(outcome.messages, [])
        await self._notify()
        return True

    def _dispatch(self, messages: list[Message], work_items: list[WorkItem]) -> None:
        for message in messages:
            self._wake(message.target, message.due)
        for item in work_items:
            self._start_work(item)

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    # -- activities ------------------------------------------------------------------------------

    def _start_work(self, item: WorkItem) -> None:
        if not self._started or item.id in self._work:
            return
        self._work[item.id] = asyncio.create_task(self._run_work(item))

    async def _run_work(self, item: WorkItem) -> None:
        try:
            async with self._activity_slots:
                payload: dict[str, Any] = {
                    "execution_id": item.execution_id,
                    "task_id": item.task_id,
                }
                kind = TASK_COMPLETED
                try:
                    function = self.functions.get("activity", item.name)
                    payload["result"] = await run_activity(function, item.input)
                except ActivityError as exc:
                    kind = TASK_FAILED
                    payload.update(reason=exc.reason, details=exc.details)
                except FunctionNotFound as exc:
                    kind = TASK_FAILED
                    payload.update(reason=str(exc), details=None)
                message = Message(
                    id=f"{item.instance_id}|{item.execution_id}|result|{item.task_id}",
                    target=item.instance_id,
                    kind=kind,
                    payload=payload,
                    created=utcnow(),
                )
                await self.store.commit_activity(item.id, [message])
                self._kick(item.instance_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("durable engine: activity %s failed in the host", item.id)
        finally:
            self._work.pop(item.id, None)
            await self._notify()


def parse_entity_path(value: str) -> tuple[str, str]:
    """``@name@key`` to ``(name, key)``."""
    return split_entity_id(value)
