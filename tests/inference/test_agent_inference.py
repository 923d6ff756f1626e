"""PurposeDrivenAgent (library mode) decides with its adapter when an endpoint is configured."""

from __future__ import annotations

import json

import pytest

from aos.agents import PurposeDrivenAgent
from aos.inference.errors import InferenceUnavailableError
from aos.settings import Settings
from aos.storage.store import AgentStore
from tests.inference.fakeserver import FakeLorax, Reply


def judgement(choice: int | None, *scores: float) -> str:
    judgements = [{"option": i, "alignment": s, "reason": f"r{i}"} for i, s in enumerate(scores)]
    return json.dumps({"choice": choice, "judgements": judgements})


@pytest.fixture
async def agent(
    settings: Settings, lorax: FakeLorax, monkeypatch: pytest.MonkeyPatch
) -> PurposeDrivenAgent:
    for name, value in settings.environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AOS_INFERENCE_ENDPOINT", lorax.url)
    monkeypatch.setenv("AOS_INFERENCE_ADAPTERS", json.dumps({"ceo": "acme/ceo-lora"}))
    monkeypatch.setenv("AOS_INFERENCE_MAX_ATTEMPTS", "1")
    store = AgentStore.from_settings(Settings.from_env())
    ceo = PurposeDrivenAgent(
        agent_id="ceo",
        purpose="Strategic oversight and company growth",
        success_criteria=["Revenue growth"],
        adapter_name="ceo",
        store=store,
    )
    await ceo.initialize()
    await ceo.start()
    yield ceo
    await store.close()


async def test_decision_and_alignment_use_the_adapter(
    agent: PurposeDrivenAgent, lorax: FakeLorax
) -> None:
    lorax.texts(judgement(1, 0.05, 0.9), judgement(0, 0.8))
    decision = await agent.make_purpose_driven_decision(
        {"options": ["Order pizza", "Plan revenue growth"]}
    )
    alignment = await agent.evaluate_purpose_alignment("Plan revenue growth")

    assert decision.method == "combined"
    assert decision.chosen == "Plan revenue growth"
    assert alignment.method == "combined"
    assert {r.body["parameters"]["adapter_id"] for r in lorax.requests} == {"acme/ceo-lora"}
    assert agent.state.counters.inference_calls == 2


async def test_dead_endpoint_keeps_the_event(agent: PurposeDrivenAgent, lorax: FakeLorax) -> None:
    lorax.reply(Reply(status=503, body={"error": "down", "error_type": "overloaded"}))
    event = {"id": "e-1", "source": "/s", "type": "t", "data": {"options": ["Plan growth"]}}
    with pytest.raises(InferenceUnavailableError, match="kept"):
        await agent.handle_event(event)
    assert agent.state.counters.events_received == 0

    lorax.texts(judgement(0, 0.9))
    result = await agent.handle_event(event)  # delivered again once the endpoint is back
    assert result.duplicate is False
    assert result.decision is not None and result.decision.method == "combined"
