"""The app's durable functions, and calling them the way the Python worker does.

``app.get_functions()`` gives ``Function`` objects (a ``FunctionBuilder`` is accepted too). The
callable of an ``orchestrationTrigger`` or ``entityTrigger`` function is the SDK's own ``handle``
(``Orchestrator.create`` / ``Entity.create``), which takes the context JSON the extension sends;
an ``activityTrigger`` function is the user's function itself. Trigger payloads go through the
worker's converters (``azure.functions.durable_functions``) as ``meta.Datum`` values.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from azure.functions import meta
from azure.functions.durable_functions import (
    ActivityTriggerConverter,
    EnitityTriggerConverter,
    OrchestrationTriggerConverter,
)

OUT_OF_PROC_LABEL = "\n\n$OutOfProcData$:"


class FunctionNotFound(LookupError):
    """No orchestrator, activity or entity of that name is registered."""


@dataclass(frozen=True)
class DurableFunction:
    name: str
    kind: str  # "orchestrator" | "activity" | "entity" | "client"
    parameter: str  # the trigger binding's name (the parameter the worker fills)
    callable: Callable[..., Any]


def _unwrap(item: Any) -> Any:
    """A ``Function`` from ``get_functions()``; a ``FunctionBuilder`` holds one in ``_function``."""
    if not hasattr(item, "get_function_json") and hasattr(item, "_function"):
        return item._function
    return item


class FunctionRegistry:
    """Durable functions by kind; names are matched case-insensitively as the host does."""

    _KINDS: ClassVar[dict[str, str]] = {
        "orchestrationTrigger": "orchestrator",
        "activityTrigger": "activity",
        "entityTrigger": "entity",
    }

    def __init__(self, functions: Iterable[Any]) -> None:
        self._by_kind: dict[str, dict[str, DurableFunction]] = {
            "orchestrator": {},
            "activity": {},
            "entity": {},
        }
        for item in functions:
            function = _unwrap(item)
            bindings = json.loads(function.get_function_json()).get("bindings", [])
            for binding in bindings:
                kind = self._KINDS.get(binding.get("type", ""))
                if kind is None:
                    continue
                name = function.get_function_name()
                entry = DurableFunction(name, kind, binding["name"], function.get_user_function())
                self._by_kind[kind][name.lower()] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(f.name for f in self._by_kind[kind].values())

    def find(self, kind: str, name: str) -> DurableFunction | None:
        return self._by_kind[kind].get((name or "").lower())

    def get(self, kind: str, name: str) -> DurableFunction:
        found = self.find(kind, name)
        if found is None:
            known = ", ".join(f"'{n}'" for n in self.names(kind)) or "(none)"
            raise FunctionNotFound(
                f"The function '{name}' doesn't exist, is disabled, or is not an {kind} "
                f"function. Additional info: The following are the known {kind} functions: "
                f"{known}."
            )
        return found


# -- orchestrators ------------------------------------------------------------------------------


@dataclass
class OrchestratorResult:
    """The SDK's ``OrchestratorState`` (parsed), or an error that came without one."""

    state: dict | None
    error: str | None = None
    details: str | None = None


def run_orchestrator(function: DurableFunction, context: dict) -> OrchestratorResult:
    """Run one episode: the SDK replays ``context["history"]`` and returns its state JSON."""
    datum = meta.Datum(type="string", value=json.dumps(context))
    trigger_value = OrchestrationTriggerConverter.decode(datum, trigger_metadata=None)
    try:
        returned = function.callable(trigger_value)
    except Exception as exc:  # the SDK raises with the state appended after a label
        message = str(exc)
        details = _details(exc)
        if OUT_OF_PROC_LABEL in message:
            error, _, payload = message.partition(OUT_OF_PROC_LABEL)
            try:
                state = json.loads(payload)
            except ValueError:
                return OrchestratorResult(None, error, details)
            return OrchestratorResult(state, state.get("error") or error, details)
        return OrchestratorResult(None, message or type(exc).__name__, details)
    encoded = OrchestrationTriggerConverter.encode(returned, expected_type=None)
    value = encoded.value
    state = json.loads(value) if isinstance(value, (str, bytes)) else value
    return OrchestratorResult(state)


def _details(exc: BaseException) -> str:
    import traceback

    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"Message: {exc}, StackTrace: {stack}"


# -- entities -----------------------------------------------------------------------------------


def run_entity(function: DurableFunction, context: dict) -> dict:
    """Run one batch; returns ``{"entityExists", "entityState", "results", "signals"}``."""
    datum = meta.Datum(type="string", value=json.dumps(context))
    trigger_value = EnitityTriggerConverter.decode(datum, trigger_metadata=None)
    returned = function.callable(trigger_value)
    encoded = EnitityTriggerConverter.encode(returned, expected_type=None)
    value = encoded.value
    return json.loads(value) if isinstance(value, (str, bytes)) else value


# -- activities ---------------------------------------------------------------------------------


class ActivityError(Exception):
    def __init__(self, reason: str, details: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


async def run_activity(function: DurableFunction, input_value: str | None) -> str:
    """Call an activity with its input decoded by ``ActivityTriggerConverter``; returns the result
    as JSON text (``ActivityTriggerConverter.encode``). Failures raise ``ActivityError``."""
    try:
        datum = meta.Datum(type="string", value=input_value if input_value is not None else "null")
        argument = ActivityTriggerConverter.decode(datum, trigger_metadata=None)
        user_function = function.callable
        kwargs = {function.parameter: argument}
        if inspect.iscoroutinefunction(user_function):
            returned = await user_function(**kwargs)
        else:
            returned = await asyncio.to_thread(user_function, **kwargs)
            if inspect.isawaitable(returned):
                returned = await returned
        encoded = ActivityTriggerConverter.encode(returned, expected_type=None)
        return encoded.value
    except Exception as exc:
        reason = f"Activity function '{function.name}' failed: {type(exc).__name__}: {exc}"
        details = json.dumps(
            {
                "$type": "System.Exception, System.Private.CoreLib",
                "ClassName": "System.Exception",
                "Message": f"{type(exc).__name__}: {exc}",
                "StackTraceString": _details(exc),
            }
        )
        raise ActivityError(reason, details) from exc
