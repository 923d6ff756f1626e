"""Fixtures for the local durable runtime: an engine over the sample app, and its HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aos.devhost.durable import DurableEngine, InMemoryDurableStore, ManagementApi

from .durable_app import FUNCTIONS


@pytest.fixture
async def engine() -> AsyncIterator[DurableEngine]:
    async with DurableEngine(FUNCTIONS, store=InMemoryDurableStore(), task_hub="testhub") as eng:
        yield eng


@pytest.fixture
async def api(engine: DurableEngine) -> AsyncIterator[ManagementApi]:
    async with ManagementApi(engine) as server:
        yield server
