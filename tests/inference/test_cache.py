"""The response cache on Azurite: hits, misses, expiry, large bodies, what is (not) cached."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from aos.agents.models import utcnow
from aos.inference import ChatMessage, ResponseCache
from aos.inference.config import InferenceConfig
from aos.settings import Settings
from aos.storage.clients import StorageClients
from tests.inference.conftest import FakeTime, inference_settings, make_client
from tests.inference.fakeserver import FakeLorax

MESSAGES = [ChatMessage(role="user", content="Is the sky blue?")]


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


async def test_roundtrip_and_expiry(settings: Settings, clients: StorageClients):
    clock = Clock()
    cache = ResponseCache(clients, settings.storage_prefix, 60, now=clock)
    key = ResponseCache.key("lorax", "http://x/generate", {"inputs": "hi"})

    assert await cache.get(key) is None
    assert await cache.put(key, "hello", prompt_tokens=3, completion_tokens=1, model="m")
    hit = await cache.get(key)
    assert hit is not None
    assert (hit.text, hit.prompt_tokens, hit.completion_tokens, hit.model) == ("hello", 3, 1, "m")

    clock.now += timedelta(seconds=59)
    assert await cache.get(key) is not None
    clock.now += timedelta(seconds=1)
    assert await cache.get(key) is None  # expired: a miss

    assert await cache.purge_expired() == 1
    clock.now -= timedelta(seconds=60)
    assert await cache.get(key) is None  # gone for good


async def test_large_answers_go_to_a_blob(settings: Settings, clients: StorageClients):
    cache = ResponseCache(clients, settings.storage_prefix, 60)
    key = ResponseCache.key("lorax", "http://x/generate", {"inputs": "long"})
    text = "é" * 50_000
    assert await cache.put(key, text)

    table = clients.tables().get_table_client(cache.table_name)
    entity = await table.get_entity(key[:2], key)
    assert "text" not in entity and entity["text_blob"] == f"{key}.txt"
    hit = await cache.get(key)
    assert hit is not None and hit.text == text

    clock = Clock()
    clock.now += timedelta(seconds=61)
    later = ResponseCache(clients, settings.storage_prefix, 60, now=clock)
    assert await later.purge_expired() == 1
    container = clients.blobs().get_container_client(cache.container_name)
    assert [b.name async for b in container.list_blobs()] == []


def test_key_covers_every_input():
    body = {"inputs": "hi", "parameters": {"adapter_id": "a", "max_new_tokens": 5}}
    key = ResponseCache.key("lorax", "http://x/generate", body)
    assert key == ResponseCache.key("lorax", "http://x/generate", dict(reversed(body.items())))
    assert key != ResponseCache.key("openai", "http://x/generate", body)
    assert key != ResponseCache.key("lorax", "http://y/generate", body)
    for change in (
        {"inputs": "ho"},
        {"parameters": {"adapter_id": "b", "max_new_tokens": 5}},
        {"parameters": {"adapter_id": "a", "max_new_tokens": 6}},
    ):
        assert key != ResponseCache.key("lorax", "http://x/generate", {**body, **change})


async def test_client_serves_deterministic_requests_from_the_cache(
    lorax: FakeLorax, fake_time: FakeTime, settings: Settings, clients: StorageClients
):
    lorax.texts("first", "second")
    clock = Clock()
    cache = ResponseCache(clients, settings.storage_prefix, 300, now=clock)
    async with make_client(lorax.url, fake_time) as client:
        miss = await client.generate(MESSAGES, cache=cache)
        hit = await client.generate(MESSAGES, cache=cache)
        assert (miss.text, miss.cached) == ("first", False)
        assert (hit.text, hit.cached) == ("first", True)
        assert hit.usage.cache_hits == 1 and hit.usage.calls == 0 and hit.usage.total_tokens == 0
        assert len(lorax.requests) == 1

        clock.now += timedelta(seconds=301)  # expired: asked again
        again = await client.generate(MESSAGES, cache=cache)
        assert (again.text, again.cached) == ("second", False)
        assert len(lorax.requests) == 2


async def test_sampled_requests_are_never_cached(
    lorax: FakeLorax, fake_time: FakeTime, settings: Settings, clients: StorageClients
):
    cache = ResponseCache(clients, settings.storage_prefix, 300)
    async with make_client(lorax.url, fake_time) as client:
        for _ in range(2):
            result = await client.generate(MESSAGES, parameters={"temperature": 0.8}, cache=cache)
            assert not result.cached
    assert len(lorax.requests) == 2


async def test_rejected_answers_are_not_cached(
    lorax: FakeLorax, fake_time: FakeTime, settings: Settings, clients: StorageClients
):
    lorax.texts("bad", "good", "never")
    cache = ResponseCache(clients, settings.storage_prefix, 300)
    async with make_client(lorax.url, fake_time) as client:
        results = [
            await client.generate(MESSAGES, cache=cache, cache_if=lambda t: t != "bad")
            for _ in range(3)
        ]
    assert [(r.text, r.cached) for r in results] == [
        ("bad", False),
        ("good", False),
        ("good", True),
    ]


async def test_ttl_zero_disables_the_cache(settings: Settings, clients: StorageClients):
    off = inference_settings("http://lorax:8080", settings, cache_ttl_seconds="0")
    assert ResponseCache.from_settings(off, clients) is None
    on = inference_settings("http://lorax:8080", settings)
    cache = ResponseCache.from_settings(on, clients, InferenceConfig.from_settings(on))
    assert cache is not None and cache.ttl == timedelta(days=1)


async def test_storage_failure_is_a_miss_not_an_error(
    lorax: FakeLorax,
    fake_time: FakeTime,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.WARNING, logger="aos.inference")
    broken = Settings.from_env(
        {
            **settings.environ,
            "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=a2V5;TableEndpoint=http://127.0.0.1:1/devstoreaccount1;"
            "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;",
        }
    )
    async with StorageClients.from_settings(broken) as dead_storage:
        cache = ResponseCache(dead_storage, settings.storage_prefix, 300)
        async with make_client(lorax.url, fake_time) as client:
            result = await client.generate(MESSAGES, cache=cache)
    assert result.text == "ok" and not result.cached
    assert "inference cache: read failed" in caplog.text
    assert "inference cache: write failed" in caplog.text
    assert "a2V5" not in caplog.text
