"""A local Durable Functions runtime: the durable engine and the Durable HTTP management API.

``DurableEngine`` runs the orchestrations, activities and entities of a ``DFApp`` (it takes
``app.get_functions()``) through the Durable Functions Python SDK's own handlers, with the history
and payloads the Durable extension would give them; ``ManagementApi`` serves the extension's
HTTP API over it, so ``DurableOrchestrationClient`` works unchanged.
"""

from .engine import (
    DurableEngine,
    DurableError,
    EntityState,
    InstanceExists,
    InstanceGone,
    InstanceNotFound,
    InvalidArgument,
)
from .functions import FunctionNotFound
from .management import ManagementApi
from .store import DurableStore, InMemoryDurableStore

__all__ = [
    "DurableEngine",
    "DurableError",
    "DurableStore",
    "EntityState",
    "FunctionNotFound",
    "InMemoryDurableStore",
    "InstanceExists",
    "InstanceGone",
    "InstanceNotFound",
    "InvalidArgument",
    "ManagementApi",
]
