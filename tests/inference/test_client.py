"""The client against the LoRAX stand-in: request shapes, adapters, fallbacks, errors."""

from __future__ import annotations

import json
import logging

import pytest

from aos.agents.models import AgentDefinition
from aos.inference import (
    ChatMessage,
    InferenceRequestError,
    InferenceResponseError,
)
from aos.inference.client import render_prompt
from tests.inference.conftest import FakeTime, make_client
from tests.inference.fakeserver import FakeLorax, Reply

MESSAGES = [
    ChatMessage(role="system", content="You are the CEO's adviser."),
    ChatMessage(role="user", content="Should we grow revenue?"),
]
ADAPTERS = json.dumps({"ceo": "acme/ceo-lora", "cfo": {"id": "acme/cfo-lora", "source": "s3"}})


def agent(adapter_name: str | None) -> AgentDefinition:
    return AgentDefinition(agent_id="ceo", purpose="Grow revenue", adapter_name=adapter_name)


async def test_lorax_generate_sends_the_documented_shape(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts("Yes.")
    async with make_client(lorax.url, fake_time, adapters=ADAPTERS, adapter_source="hub") as client:
        selection = client.select_adapter(agent("ceo"))
        result = await client.generate(MESSAGES, adapter=selection)

    assert result.text == "Yes."
    assert result.model == "acme/ceo-lora"
    assert result.adapter.adapter_id == "acme/ceo-lora" and not result.adapter.fell_back
    assert result.usage.calls == 1 and result.usage.attempts == 1
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 7)
    assert not result.cached
    [request] = lorax.requests
    assert request.path == "/generate"
    assert request.body["inputs"] == render_prompt(MESSAGES)
    assert request.body["parameters"] == {
        "adapter_id": "acme/ceo-lora",
        "adapter_source": "hub",
        "max_new_tokens": 512,
        "do_sample": False,
        "details": True,
        "return_full_text": False,
    }
    assert "Authorization" not in request.headers


async def test_lorax_sampling_parameters(lorax: FakeLorax, fake_time: FakeTime):
    async with make_client(
        lorax.url, fake_time, parameters='{"max_new_tokens": 64, "temperature": 0.7}'
    ) as client:
        await client.generate(MESSAGES, parameters={"seed": 42, "top_p": 0.9, "stop": ["\n\n"]})
    params = lorax.requests[0].body["parameters"]
    assert params["do_sample"] is True
    assert params["temperature"] == 0.7
    assert params["seed"] == 42 and params["top_p"] == 0.9 and params["stop"] == ["\n\n"]
    assert params["max_new_tokens"] == 64
    assert "adapter_id" not in params


async def test_per_adapter_source_overrides_the_default(lorax: FakeLorax, fake_time: FakeTime):
    async with make_client(lorax.url, fake_time, adapters=ADAPTERS, adapter_source="hub") as client:
        await client.generate(MESSAGES, adapter=client.select_adapter(agent("cfo")))
    params = lorax.requests[0].body["parameters"]
    assert (params["adapter_id"], params["adapter_source"]) == ("acme/cfo-lora", "s3")


async def test_openai_chat_uses_adapter_as_model(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts("Yes.", "Maybe.")
    async with make_client(
        lorax.url, fake_time, api="openai", adapters=ADAPTERS, base_model=lorax.base_model
    ) as client:
        adapted = await client.generate(MESSAGES, adapter=client.select_adapter(agent("ceo")))
        base = await client.generate(MESSAGES, adapter=client.select_adapter(agent(None)))

    assert adapted.text == "Yes." and base.text == "Maybe."
    first, second = lorax.requests
    assert first.path == "/v1/chat/completions"
    assert first.body["model"] == "acme/ceo-lora"
    assert first.body["messages"] == [m.model_dump() for m in MESSAGES]
    assert first.body["temperature"] == 0.0 and first.body["max_tokens"] == 512
    assert first.body["stream"] is False
    assert second.body["model"] == lorax.base_model
    assert base.adapter.adapter_id is None and not base.adapter.fell_back
    assert "no adapter" in (base.adapter.reason or "")
    assert adapted.usage.prompt_tokens == 11 and adapted.usage.completion_tokens == 7


async def test_openai_endpoint_with_v1_path_and_query(lorax: FakeLorax, fake_time: FakeTime):
    async with make_client(
        f"{lorax.url}/openai/v1?api-version=2024-10-21",
        fake_time,
        api="openai",
        key="azure-key-value-0001",
        key_header="api-key",
    ) as client:
        assert client.config.route == f"{lorax.url}/openai/v1/chat/completions"
        await client.generate(MESSAGES)
    [request] = lorax.requests
    assert request.path == "/openai/v1/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert request.headers["api-key"] == "azure-key-value-0001"
    assert "Authorization" not in request.headers
    assert request.body["model"] == ""  # no base model configured: LoRAX's "base model"


async def test_bearer_key_header(lorax: FakeLorax, fake_time: FakeTime):
    async with make_client(lorax.url, fake_time, key="token-1234567890") as client:
        await client.generate(MESSAGES)
    assert lorax.requests[0].headers["Authorization"] == "Bearer token-1234567890"


async def test_unmapped_adapter_falls_back_visibly(
    lorax: FakeLorax, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="aos.inference")
    async with make_client(lorax.url, fake_time, adapters=ADAPTERS) as client:
        selection = client.select_adapter(agent("cto"))
        result = await client.generate(MESSAGES, adapter=selection)
    assert selection.fell_back and selection.adapter_id is None
    assert "'cto' is not mapped in AOS_INFERENCE_ADAPTERS" in (selection.reason or "")
    assert result.adapter.fell_back
    assert "adapter_id" not in lorax.requests[0].body["parameters"]
    assert "'cto' falls back to the base model" in caplog.text


@pytest.mark.parametrize("api,flavor,status", [("lorax", "lorax", 424), ("openai", "openai", 404)])
async def test_adapter_the_endpoint_cannot_load_falls_back_to_base(
    lorax: FakeLorax,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
    api: str,
    flavor: str,
    status: int,
):
    caplog.set_level(logging.WARNING, logger="aos.inference")
    lorax.flavor = flavor
    lorax.default = Reply(text="from base")
    mapping = json.dumps({"ceo": "acme/missing-lora"})
    async with make_client(lorax.url, fake_time, api=api, adapters=mapping) as client:
        result = await client.generate(MESSAGES, adapter=client.select_adapter(agent("ceo")))

    assert result.text == "from base"
    assert result.adapter.fell_back and result.adapter.adapter_id is None
    assert result.adapter.adapter_name == "ceo"
    assert "could not load adapter 'acme/missing-lora'" in (result.adapter.reason or "")
    assert f"HTTP {status}" in (result.adapter.reason or "")
    assert result.usage.attempts == 2 and result.usage.calls == 1
    assert len(lorax.requests) == 2
    assert "falls back to the base model" in caplog.text


async def test_unknown_adapter_on_lorax_chat_route_is_a_424(lorax: FakeLorax, fake_time: FakeTime):
    """LoRAX's own /v1 route fails an unknown adapter like /generate does (424)."""
    mapping = json.dumps({"ceo": "acme/missing-lora"})
    async with make_client(lorax.url, fake_time, api="openai", adapters=mapping) as client:
        result = await client.generate(MESSAGES, adapter=client.select_adapter(agent("ceo")))
    assert result.adapter.fell_back and "HTTP 424" in (result.adapter.reason or "")
    assert [r.body["model"] for r in lorax.requests] == ["acme/missing-lora", ""]


@pytest.mark.parametrize("status", [400, 401, 403, 422])
async def test_client_errors_are_not_retried(lorax: FakeLorax, fake_time: FakeTime, status: int):
    lorax.reply(Reply(status=status, body={"error": "nope", "error_type": "validation"}))
    async with make_client(lorax.url, fake_time) as client:
        with pytest.raises(InferenceRequestError) as caught:
            await client.generate(MESSAGES)
    assert caught.value.status == status
    assert f"HTTP {status}: nope" in caught.value.message
    assert len(lorax.requests) == 1 and fake_time.sleeps == []
    assert caught.value.usage is not None and caught.value.usage.attempts == 1
    if status in (401, 403):
        assert "AOS_INFERENCE_KEY" in caught.value.message


async def test_malformed_success_body(lorax: FakeLorax, fake_time: FakeTime):
    lorax.reply(Reply(body={"unexpected": True}), Reply(raw=b"<html>", status=200))
    async with make_client(lorax.url, fake_time) as client:
        with pytest.raises(InferenceResponseError, match="without 'generated_text'"):
            await client.generate(MESSAGES)
        with pytest.raises(InferenceResponseError, match="not JSON"):
            await client.generate(MESSAGES)
        # The endpoint answered: a malformed body is no outage.
        assert client.breaker.consecutive_failures == 0


async def test_one_connection_pool_for_all_calls(lorax: FakeLorax, fake_time: FakeTime):
    async with make_client(lorax.url, fake_time) as client:
        await client.generate(MESSAGES)
        session = client._session
        await client.generate(MESSAGES)
        assert client._session is session
    assert session is not None and session.closed


@pytest.mark.parametrize("api", ["lorax", "openai"])
@pytest.mark.parametrize("fmt", ["none", "json", "schema"])
async def test_response_format_setting(lorax: FakeLorax, fake_time: FakeTime, api: str, fmt: str):
    schema = {"type": "object", "properties": {"choice": {"type": "integer"}}}
    async with make_client(lorax.url, fake_time, api=api, response_format=fmt) as client:
        await client.generate(MESSAGES, response_schema=schema)
    body = lorax.requests[0].body
    sent = (
        body["parameters"].get("response_format") if api == "lorax" else body.get("response_format")
    )
    expected = {
        ("lorax", "none"): None,
        ("lorax", "json"): {"type": "json_object"},
        ("lorax", "schema"): {"type": "json_object", "schema": schema},
        ("openai", "none"): None,
        ("openai", "json"): {"type": "json_object"},
        ("openai", "schema"): {
            "type": "json_schema",
            "json_schema": {"name": "aos_response", "schema": schema},
        },
    }[(api, fmt)]
    assert sent == expected
