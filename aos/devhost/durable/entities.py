"""Entity batches, run the way the extension's entity shim runs an out-of-process entity.

An entity id is ``@name@key`` with the name lower-cased (the extension's ``EntityId`` does
that). One batch at a time per entity: the operations queued for it go to the SDK's handler
together as ``{"self": {"name", "key"}, "exists", "state", "batch": [{"name", "input",
"isSignal"}]}``, where ``state`` and each ``input`` are JSON text (an operation's input is the
JSON text of the value the caller's SDK serialized, i.e. encoded twice, as the SDK's own tests
build it). The handler returns ``{"entityExists", "entityState", "results", "signals"}``; each
call (not signal) gets a response message ``{"result": <JSON text>[, "exceptionType": "Error"]}``
raised in the calling orchestration as an event named by the request id.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from .functions import FunctionRegistry, run_entity
from .orchestrations import ENTITY_OPERATION, EVENT_RAISED
from .store import CONSUMED_MEMORY, EntityRecord, Message

# Largest number of queued operations handed to the entity function in one batch.
MAX_BATCH = 100


def entity_id(name: str, key: str) -> str:
    return f"@{name.lower()}@{key}"


def split_entity_id(value: str) -> tuple[str, str]:
    if not value.startswith("@") or "@" not in value[1:]:
        raise ValueError(f"'{value}' is not an entity id (@name@key)")
    name, key = value[1:].split("@", 1)
    return name, key


@dataclass
class EntityOutcome:
    record: EntityRecord
    consumed: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


class EntityRunner:
    def __init__(self, functions: FunctionRegistry) -> None:
        self.functions = functions

    def run(
        self, record: EntityRecord | None, messages: list[Message], now: datetime
    ) -> EntityOutcome | None:
        target = messages[0].target
        record = record.copy() if record else EntityRecord(entity_id=target)
        seen = set(record.consumed)
        fresh = [m for m in messages if m.id not in seen and m.kind == ENTITY_OPERATION]
        stale = [m.id for m in messages if m.id in seen or m.kind != ENTITY_OPERATION]
        batch = fresh[:MAX_BATCH]
        outcome = EntityOutcome(record, consumed=stale + [m.id for m in batch])
        if not batch:
            return outcome
        name, key = split_entity_id(target)
        function = self.functions.find("entity", name)
        if function is None:
            error = (
                f"The function '{name}' doesn't exist, is disabled, or is not an entity function."
            )
            results = [{"isError": True, "result": json.dumps(error)} for _ in batch]
        else:
            context = {
                "self": {"name": name, "key": key},
                "exists": record.exists,
                "state": record.state if record.exists else None,
                "batch": [
                    {
                        "name": m.payload.get("op"),
                        "input": m.payload.get("input"),
                        "isSignal": bool(m.payload.get("signal")),
                    }
                    for m in batch
                ],
            }
            try:
                result = run_entity(function, context)
            except Exception as exc:  # the whole batch failed
                error = f"{type(exc).__name__} while processing operations: {exc}"
                results = [{"isError": True, "result": json.dumps(error)} for _ in batch]
            else:
                record.exists = bool(result.get("entityExists"))
                record.state = result.get("entityState") if record.exists else None
                results = list(result.get("results") or [])
                for signal in result.get("signals") or []:
                    outcome.messages.append(self._signal_from_entity(target, signal, now))
        record.last_modified = now
        for message, result in zip(batch, results, strict=False):
            if message.payload.get("signal") or not message.payload.get("parent"):
                continue
            response: dict = {"result": result.get("result")}
            if result.get("isError"):
                response["exceptionType"] = "Error"
            outcome.messages.append(
                Message(
                    id=f"{message.payload['parent']}|resp|{message.payload['id']}",
                    target=message.payload["parent"],
                    kind=EVENT_RAISED,
                    payload={
                        "execution_id": message.payload.get("parent_execution"),
                        "name": message.payload["id"],
                        "input": json.dumps(response),
                    },
                    created=now,
                )
            )
        record.consumed = (record.consumed + outcome.consumed)[-CONSUMED_MEMORY:]
        return outcome

    @staticmethod
    def _signal_from_entity(source: str, signal: dict, now: datetime) -> Message:
        target = signal.get("target") or {}
        request_id = str(uuid.uuid4())
        destination = entity_id(target.get("name", ""), target.get("key", ""))
        return Message(
            id=f"{destination}|req|{request_id}",
            target=destination,
            kind=ENTITY_OPERATION,
            payload={
                "id": request_id,
                "op": signal.get("name"),
                "signal": True,
                "input": signal.get("input"),
                "parent": source,
            },
            created=now,
        )
