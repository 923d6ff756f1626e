"""Shared fixtures. Storage tests talk to a real Azurite that this set-up starts on free ports
(or to the one named by AOS_TEST_STORAGE_CONNECTION)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from aos.devhost.azurite import Azurite, free_ports
from aos.devhost.durable import DurableEngine, InMemoryDurableStore, ManagementApi
from aos.settings import Settings
from aos.storage.clients import StorageClients
from tests.governance.identity import IdentityProvider
from tests.support import App, app_functions


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


@pytest.fixture
async def app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    """The function app on the local durable engine (in memory), with Azurite for AOS data."""
    for name, value in settings.environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ServiceBusConnection", raising=False)
    monkeypatch.setattr("aos.workflows.turn.TURN_RETRY_FIRST_INTERVAL_MS", 50)
    functions = list(app_functions().values())
    async with (
        DurableEngine(functions, store=InMemoryDurableStore(), task_hub="aoshub") as engine,
        ManagementApi(engine) as api,
    ):
        yield App(engine, api)
    from aos.runtime import close

    await close()


# -- a local Microsoft Entra ID for the admin API's token tests ---------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {
        name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for name in ("k1", "k2", "k3", "rogue")
    }


@pytest.fixture
async def idp(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider(keys)
    await provider.start()
    yield provider
    await provider.close()
