"""Shared fixtures. Storage tests talk to a real Azurite that this set-up starts on free ports
(or to the one named by AOS_TEST_STORAGE_CONNECTION)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from aos.devhost.azurite import Azurite, free_ports
from aos.settings import Settings
from aos.storage.clients import StorageClients


@pytest.fixture(scope="session")
def azurite_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("AOS_TEST_STORAGE_CONNECTION")
    if external:
        yield external
        return
    blob, queue, table = free_ports(3)
    with Azurite(tmp_path_factory.mktemp("azurite"), ports=(blob, queue, table)) as azurite:
        yield azurite.connection_string


@pytest.fixture
def settings(azurite_connection: str) -> Settings:
    """Settings pointing at Azurite, with a storage prefix unique to the test."""
    prefix = "t" + uuid.uuid4().hex[:12]
    return Settings.from_env(
        {"AzureWebJobsStorage": azurite_connection, "AOS_STORAGE_PREFIX": prefix}
    )


@pytest.fixture
async def clients(settings: Settings) -> AsyncIterator[StorageClients]:
    async with StorageClients.from_settings(settings) as storage:
        yield storage


@pytest.fixture(scope="session", autouse=True)
async def _close_sdk_http_session() -> AsyncIterator[None]:
    """The Durable SDK's client keeps one aiohttp session per process; close it at the end."""
    yield
    from azure.durable_functions.models.utils.http_utils import _close_session

    await _close_session()
