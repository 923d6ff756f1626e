"""Where the durable engine keeps everything: the store interface and its in-memory form.

All of the engine's state goes through a ``DurableStore`` so an engine built over the same store
after a restart picks up where the last one stopped:

- an ``InstanceRecord`` per orchestration instance: status, input/output, custom status, the
  current execution's history and the engine's bookkeeping for it (``runtime``);
- an ``EntityRecord`` per entity id (``@name@key``): whether it exists and its state;
- ``Message``s, the inbox of each orchestration instance and entity (task results, timers, which
  carry a ``due`` time, external events, entity operations, start and terminate requests);
- ``WorkItem``s, the activities waiting to run.

Each unit of engine work is committed with one call (``commit_orchestration``,
``commit_entity``, ``commit_activity``), which writes the new state, adds the messages and work
items it produced, and removes the messages it consumed. A store that cannot do that atomically
still gives exactly-once effects: records remember the ids of the messages they consumed, and
message and work-item ids are deterministic, so a replayed commit is recognised and dropped.
"""

from __future__ import annotations

import copy
import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .history import TERMINAL_STATUSES, OrchestrationStatus

# How many consumed message ids a record remembers, to recognise a replayed delivery.
CONSUMED_MEMORY = 500


@dataclass
class InstanceRecord:
    instance_id: str
    name: str
    execution_id: str
    status: OrchestrationStatus
    created_time: datetime
    last_updated_time: datetime
    input: str | None = None  # JSON text, as in ExecutionStarted.Input
    output: str | None = None  # JSON text (or the raw reason of a termination)
    custom_status: str | None = None  # JSON text
    parent: dict | None = None  # {"instance_id", "execution_id", "task_id", "name"}
    history: list[dict] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def copy(self) -> InstanceRecord:
        return copy.deepcopy(self)


@dataclass
class EntityRecord:
    entity_id: str  # "@name@key"
    exists: bool = False
    state: str | None = None  # JSON text
    last_modified: datetime | None = None
    consumed: list[str] = field(default_factory=list)

    def copy(self) -> EntityRecord:
        return copy.deepcopy(self)


@dataclass
class Message:
    """A message to an orchestration instance or an entity (``target``)."""

    id: str
    target: str
    kind: str
    payload: dict[str, Any]
    created: datetime
    due: datetime | None = None  # timers: not deliverable before this time
    seq: int = 0  # arrival order, assigned by the store


@dataclass
class WorkItem:
    """An activity to run for an orchestration instance."""

    id: str
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None
    created: datetime


@dataclass
class InstanceQuery:
    runtime_status: list[OrchestrationStatus] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    instance_id_prefix: str | None = None


def matches(record: InstanceRecord, query: InstanceQuery) -> bool:
    if query.runtime_status and record.status not in query.runtime_status:
        return False
    if query.created_from and record.created_time < query.created_from:
        return False
    if query.created_to and record.created_time > query.created_to:
        return False
    return not (
        query.instance_id_prefix and not record.instance_id.startswith(query.instance_id_prefix)
    )


class DurableStore(ABC):
    """Persistence for the durable engine. All methods are coroutines; records are copies."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the store (create tables, containers...)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    # orchestration instances
    @abstractmethod
    async def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    @abstractmethod
    async def create_instance(self, record: InstanceRecord, start: Message) -> bool:
        """Create (or replace a terminal) instance and queue its start message; False when an
        instance with that id exists and is not in a terminal state."""

    @abstractmethod
    async def list_instances(self, query: InstanceQuery) -> list[InstanceRecord]:
        """Matching instances ordered by (created_time, instance_id)."""

    @abstractmethod
    async def delete_instance(self, instance_id: str) -> bool:
        """Remove the instance, its messages and its work items."""

    @abstractmethod
    async def commit_orchestration(
        self,
        record: InstanceRecord,
        consumed: list[str],
        messages: list[Message],
        work_items: list[WorkItem],
    ) -> None: ...

    # entities
    @abstractmethod
    async def get_entity(self, entity_id: str) -> EntityRecord | None: ...

    @abstractmethod
    async def list_entities(self) -> list[EntityRecord]: ...

    @abstractmethod
    async def commit_entity(
        self, record: EntityRecord, consumed: list[str], messages: list[Message]
    ) -> None: ...

    # messages
    @abstractmethod
    async def add_messages(self, messages: list[Message]) -> None: ...

    @abstractmethod
    async def get_messages(self, target: str) -> list[Message]:
        """The target's messages in arrival order, due or not."""

    @abstractmethod
    async def delete_messages(self, target: str, ids: list[str]) -> None: ...

    @abstractmethod
    async def message_targets(self) -> dict[str, datetime | None]:
        """Every target with messages, and the earliest ``due`` among them (None: due now)."""

    # activity work items
    @abstractmethod
    async def list_work_items(self) -> list[WorkItem]: ...

    @abstractmethod
    async def commit_activity(self, item_id: str, messages: list[Message]) -> None:
        """Queue the activity's result and remove its work item."""


class InMemoryDurableStore(DurableStore):
    """A store in this process's memory: each commit is atomic."""

    def __init__(self) -> None:
        self._instances: dict[str, InstanceRecord] = {}
        self._entities: dict[str, EntityRecord] = {}
        self._messages: dict[str, dict[str, Message]] = {}
        self._work: dict[str, WorkItem] = {}
        self._seq = itertools.count(1)

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        record = self._instances.get(instance_id)
        return record.copy() if record else None

    async def create_instance(self, record: InstanceRecord, start: Message) -> bool:
        existing = self._instances.get(record.instance_id)
        if existing is not None and not existing.is_terminal:
            return False
        if existing is not None:
            self._drop_target(record.instance_id)
        self._instances[record.instance_id] = record.copy()
        self._add([start])
        return True

    async def list_instances(self, query: InstanceQuery) -> list[InstanceRecord]:
        found = [r.copy() for r in self._instances.values() if matches(r, query)]
        return sorted(found, key=lambda r: (r.created_time, r.instance_id))

    async def delete_instance(self, instance_id: str) -> bool:
        existed = self._instances.pop(instance_id, None) is not None
        self._drop_target(instance_id)
        return existed

    def _drop_target(self, instance_id: str) -> None:
        self._messages.pop(instance_id, None)
        for item_id in [k for k, w in self._work.items() if w.instance_id == instance_id]:
            del self._work[item_id]

    async def commit_orchestration(
        self,
        record: InstanceRecord,
        consumed: list[str],
        messages: list[Message],
        work_items: list[WorkItem],
    ) -> None:
        self._instances[record.instance_id] = record.copy()
        self._remove(record.instance_id, consumed)
        self._add(messages)
        for item in work_items:
            self._work.setdefault(item.id, copy.deepcopy(item))

    async def get_entity(self, entity_id: str) -> EntityRecord | None:
        record = self._entities.get(entity_id)
        return record.copy() if record else None

    async def list_entities(self) -> list[EntityRecord]:
        return [r.copy() for r in self._entities.values()]

    async def commit_entity(
        self, record: EntityRecord, consumed: list[str], messages: list[Message]
    ) -> None:
        self._entities[record.entity_id] = record.copy()
        self._remove(record.entity_id, consumed)
        self._add(messages)

    async def add_messages(self, messages: list[Message]) -> None:
        self._add(messages)

    def _add(self, messages: list[Message]) -> None:
        for message in messages:
            inbox = self._messages.setdefault(message.target, {})
            if message.id not in inbox:
                stored = copy.deepcopy(message)
                stored.seq = next(self._seq)
                inbox[message.id] = stored

    def _remove(self, target: str, ids: list[str]) -> None:
        inbox = self._messages.get(target)
        if not inbox:
            return
        for message_id in ids:
            inbox.pop(message_id, None)
        if not inbox:
            del self._messages[target]

    async def get_messages(self, target: str) -> list[Message]:
        inbox = self._messages.get(target, {})
        return sorted((copy.deepcopy(m) for m in inbox.values()), key=lambda m: m.seq)

    async def delete_messages(self, target: str, ids: list[str]) -> None:
        self._remove(target, ids)

    async def message_targets(self) -> dict[str, datetime | None]:
        targets: dict[str, datetime | None] = {}
        for target, inbox in self._messages.items():
            dues = [m.due for m in inbox.values()]
            targets[target] = None if any(d is None for d in dues) else min(dues)  # type: ignore[type-var]
        return targets

    async def list_work_items(self) -> list[WorkItem]:
        return [copy.deepcopy(w) for w in self._work.values()]

    async def commit_activity(self, item_id: str, messages: list[Message]) -> None:
        if self._work.pop(item_id, None) is None:
            return  # already committed (or purged): the result is a duplicate
        self._add(messages)
