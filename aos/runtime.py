"""Process-wide resources for functions: settings and storage, built once per event loop.

The Functions worker runs async functions on one event loop; SDK clients hold connections bound
to it, so each loop gets its own set (tests run several loops in one process).
"""

from __future__ import annotations

import asyncio
import weakref

from aos.settings import Settings
from aos.storage.store import AgentStore

_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AgentStore] = (
    weakref.WeakKeyDictionary()
)


def settings() -> Settings:
    return Settings.from_env()


def agent_store() -> AgentStore:
    """The AgentStore for the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    store = _stores.get(loop)
    if store is None:
        store = _stores[loop] = AgentStore.from_settings(settings())
    return store
