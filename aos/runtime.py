"""Process-wide resources for functions: settings and storage, built once per event loop.

The Functions worker runs async functions on one event loop; SDK clients hold connections bound
to it, so each loop gets its own. Stores are keyed by the storage settings in force, so a change
of settings (as in tests) gets a fresh store instead of a stale one.
"""

from __future__ import annotations

import asyncio
import weakref

from aos.settings import Settings
from aos.storage.store import AgentStore

_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, AgentStore]] = (
    weakref.WeakKeyDictionary()
)


def settings() -> Settings:
    return Settings.from_env()


def agent_store() -> AgentStore:
    """The AgentStore for the running event loop and the current storage settings."""
    current = settings()
    key = (
        current.storage_connection,
        current.get(current.storage_connection),
        current.get(f"{current.storage_connection}__accountName"),
        current.storage_prefix,
    )
    per_loop = _stores.setdefault(asyncio.get_running_loop(), {})
    if key not in per_loop:
        per_loop[key] = AgentStore.from_settings(current)
    return per_loop[key]


async def close() -> None:
    """Close the stores of the running loop (at host shutdown, or the end of a test)."""
    from aos.governance.auth import close_authenticator

    await close_authenticator()
    for store in _stores.pop(asyncio.get_running_loop(), {}).values():
        await store.close()
