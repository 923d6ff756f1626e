"""Fixtures for inference tests: a scriptable LoRAX stand-in and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aos.inference.client import close_shared_clients
from aos.settings import Settings
from tests.inference.fakeserver import FakeLorax


class FakeTime:
    """An injectable sleep/clock pair: sleeping advances the clock instantly and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall_clock(self) -> datetime:
        return self.wall

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def lorax() -> AsyncIterator[FakeLorax]:
    server = FakeLorax(adapters={"acme/ceo-lora", "acme/cfo-lora"})
    await server.start()
    yield server
    await server.stop()
    await close_shared_clients()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def inference_settings(url: str, base: Settings | None = None, **values: str) -> Settings:
    """Settings with AOS_INFERENCE_ENDPOINT=url plus AOS_INFERENCE_<NAME>=value for each value."""
    env = dict(base.environ) if base is not None else {}
    env["AOS_INFERENCE_ENDPOINT"] = url
    env.update({f"AOS_INFERENCE_{name.upper()}": value for name, value in values.items()})
    return Settings.from_env(env)


def make_client(url: str, fake_time: FakeTime, base: Settings | None = None, **values: str):
    """An InferenceClient on the fake clock (jitter fixed at its low end)."""
    from aos.inference.client import InferenceClient
    from aos.inference.config import InferenceConfig

    config = InferenceConfig.from_settings(inference_settings(url, base, **values))
    return InferenceClient(
        config,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        wall_clock=fake_time.wall_clock,
        rand=lambda: 0.0,
    )
