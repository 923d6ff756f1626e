"""AOS_INFERENCE_* settings: defaults, the disabled state, and errors that name the setting."""

from __future__ import annotations

import pytest

from aos.errors import ConfigurationError
from aos.inference import InferenceClient, InferenceConfig, InferenceNotConfigured
from aos.inference.adapters import AdapterRegistry
from aos.settings import Settings
from tests.inference.conftest import inference_settings


def test_no_endpoint_means_disabled():
    config = InferenceConfig.from_settings(Settings.from_env({}))
    assert not config.enabled and config.route == ""
    with pytest.raises(InferenceNotConfigured) as caught:
        InferenceClient(config)
    assert caught.value.field == "AOS_INFERENCE_ENDPOINT"
    assert caught.value.code == "inference_not_configured"


def test_defaults():
    config = InferenceConfig.from_settings(inference_settings("http://lorax:8080/"))
    assert config.enabled
    assert config.url == "http://lorax:8080" and config.route == "http://lorax:8080/generate"
    assert config.api == "lorax" and config.key is None and config.key_header == "authorization"
    assert config.timeout_seconds == 30 and config.max_attempts == 3
    assert config.cache_ttl_seconds == 86400
    assert config.breaker_failures == 5 and config.breaker_cooldown_seconds == 30
    assert config.parameters.max_new_tokens == 512 and config.parameters.deterministic
    assert config.model_weight == 0.5 and config.response_format == "none"
    assert config.adapters == {} and config.adapter_source is None


@pytest.mark.parametrize(
    "endpoint,chat_path,route",
    [
        ("http://lorax:8080", None, "http://lorax:8080/v1/chat/completions"),
        ("http://vllm:8000/v1", None, "http://vllm:8000/v1/chat/completions"),
        (
            "https://res.openai.azure.com/openai/v1",
            None,
            "https://res.openai.azure.com/openai/v1/chat/completions",
        ),
        (
            "https://res.services.ai.azure.com/models?api-version=2024-05-01-preview",
            None,
            "https://res.services.ai.azure.com/models/chat/completions",
        ),
        (
            "https://res.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
            None,
            "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions",
        ),
        ("http://gw:9000/llm", "/api/chat", "http://gw:9000/llm/api/chat"),
    ],
)
def test_openai_routes(endpoint: str, chat_path: str | None, route: str):
    values = {"api": "openai"}
    if chat_path:
        values["chat_path"] = chat_path
    config = InferenceConfig.from_settings(inference_settings(endpoint, **values))
    assert config.route == route


def test_adapter_mapping_forms():
    config = InferenceConfig.from_settings(
        inference_settings(
            "http://lorax:8080",
            adapters='{"ceo": "acme/ceo", "cfo": {"id": "/data/cfo", "source": "local"}}',
            adapter_source="s3",
        )
    )
    registry = AdapterRegistry(config)
    ceo, cfo = registry.select("ceo"), registry.select("cfo")
    assert (ceo.adapter_id, ceo.source, ceo.fell_back) == ("acme/ceo", "s3", False)
    assert (cfo.adapter_id, cfo.source) == ("/data/cfo", "local")
    assert registry.select(None).adapter_id is None and not registry.select(None).fell_back
    assert registry.select("cto").fell_back


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("ENDPOINT", "lorax:8080", "must be an http(s) URL"),
        ("API", "grpc", "must be 'lorax' or 'openai'"),
        ("TIMEOUT_SECONDS", "soon", "must be a number"),
        ("TIMEOUT_SECONDS", "0", "greater than 0"),
        ("MAX_ATTEMPTS", "2.5", "must be an integer"),
        ("MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("CACHE_TTL_SECONDS", "-1", "greater than or equal to 0"),
        ("BREAKER_FAILURES", "0", "greater than or equal to 1"),
        ("BREAKER_COOLDOWN_SECONDS", "x", "must be a number"),
        ("ADAPTERS", "{not json", "not valid JSON"),
        ("ADAPTERS", "[1]", "must be a JSON object"),
        ("ADAPTERS", '{"ceo": 3}', "'ceo' must map to an adapter id"),
        ("PARAMETERS", '{"temperature": -1}', "(temperature)"),
        ("PARAMETERS", '{"nucleus": 1}', "(nucleus)"),
        ("MODEL_WEIGHT", "2", "less than or equal to 1"),
        ("RESPONSE_FORMAT", "xml", "Input should be 'none', 'json' or 'schema'"),
        ("KEY_HEADER", "api key", "must be a header name"),
    ],
)
def test_bad_settings_name_the_setting(name: str, value: str, message: str):
    env = {"AOS_INFERENCE_ENDPOINT": "http://lorax:8080", f"AOS_INFERENCE_{name}": value}
    with pytest.raises(ConfigurationError) as caught:
        InferenceConfig.from_settings(Settings.from_env(env))
    assert caught.value.field == f"AOS_INFERENCE_{name}"
    assert f"AOS_INFERENCE_{name}" in caught.value.message
    assert message in caught.value.message
