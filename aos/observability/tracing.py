"""OpenTelemetry spans that follow an event from its Service Bus message to every activity.

A message's W3C `traceparent` becomes the parent of the trigger's span; orchestrations carry the
traceparent in their input, activities start their spans under it, and outgoing messages carry
the current one. Without a configured exporter the spans cost next to nothing (the API's no-op
tracer); exporting to Azure Monitor is configured separately.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()


def tracer() -> trace.Tracer:
    return trace.get_tracer("aos")


@contextmanager
def span(
    name: str, traceparent: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Iterator[trace.Span]:
    """A span named `name`, child of `traceparent` when given, else of the current span."""
    parent = _propagator.extract({"traceparent": traceparent}) if traceparent else None
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer().start_as_current_span(name, context=parent, attributes=clean) as current:
        yield current


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to put on outgoing messages."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def orchestration_step(context: Any, name: str, traceparent: str | None) -> None:
    """Record that an orchestration reached a step: a span emitted once (not again on replay)
    and ended at once, because an orchestrator suspends at every step and a span held open
    across that suspension would leak into whatever the thread runs next."""
    if getattr(context, "is_replaying", False):
        return
    attributes = {"aos.instance_id": context.instance_id, "aos.step": name}
    with span(f"orchestration {name}", traceparent, attributes):
        pass
