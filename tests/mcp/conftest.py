"""Fixtures for the MCP tests: a store on the test's Azurite, with agent 'ceo' registered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aos.agents.models import AgentDefinition
from aos.settings import Settings
from aos.storage.store import AgentStore


def ceo_definition() -> AgentDefinition:
    return AgentDefinition(
        agent_id="ceo",
        purpose="Strategic oversight and company growth",
        purpose_scope="Company-wide strategy, not day-to-day operations",
        success_criteria=["Revenue growth", "Healthy margins"],
        constraints=["Never share confidential financials externally"],
        role="executive",
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[AgentStore]:
    async with AgentStore.from_settings(settings) as agent_store:
        yield agent_store


@pytest.fixture
async def ceo(store: AgentStore) -> AgentStore:
    await store.registry.register(ceo_definition())
    return store
