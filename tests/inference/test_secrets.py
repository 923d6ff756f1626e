"""The key (and secret query values) never reach logs, reprs or error messages."""

from __future__ import annotations

import logging

import pytest

from aos.agents.alignment import DeterministicAlignmentScorer
from aos.agents.models import AgentDefinition, DecisionContext
from aos.devhost.azurite import free_ports
from aos.errors import ConfigurationError
from aos.inference import ChatMessage, InferenceConfig, InferenceError, decide_with_model
from tests.inference.conftest import FakeTime, inference_settings, make_client
from tests.inference.fakeserver import FakeLorax, Reply

KEY = "sk-live-TOPSECRET-0123456789"
QUERY_SECRET = "QuerySecretValue987654"
MESSAGES = [ChatMessage(role="user", content="hello")]


def assert_clean(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert QUERY_SECRET not in text
        assert "TOPSECRET" not in text


@pytest.mark.parametrize("key_header", ["authorization", "api-key"])
async def test_secrets_stay_out_of_errors_and_logs(
    lorax: FakeLorax,
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
    key_header: str,
):
    caplog.set_level(logging.DEBUG)
    lorax.echo_auth_in_errors = True  # a careless endpoint quoting the credentials back
    failures: list[InferenceError] = []
    async with make_client(
        f"{lorax.url}?code={QUERY_SECRET}",
        fake_time,
        key=KEY,
        key_header=key_header,
        max_attempts="2",
        timeout_seconds="0.2",
        breaker_failures="100",
    ) as client:
        # It works: the server got the key.
        assert (await client.generate(MESSAGES)).text == "ok"
        sent = lorax.requests[0]
        header = "Authorization" if key_header == "authorization" else "api-key"
        assert KEY in sent.headers[header]
        assert sent.query == {"code": QUERY_SECRET}

        lorax.reply(
            Reply(status=500, body={"error": "boom", "error_type": "x"}),
            Reply(status=500, body={"error": "boom", "error_type": "x"}),
            Reply(status=400, body={"error": "bad", "error_type": "validation"}),
            Reply(text="late", delay=5),
            Reply(text="late", delay=5),
        )
        for _ in range(3):
            with pytest.raises(InferenceError) as caught:
                await client.generate(MESSAGES)
            failures.append(caught.value)
        lorax.required_key = ("X-Other", "nope")
        with pytest.raises(InferenceError) as caught:
            await client.generate(MESSAGES)
        failures.append(caught.value)
        client_repr = repr(client)

    [port] = free_ports(1)
    async with make_client(
        f"http://127.0.0.1:{port}?code={QUERY_SECRET}", fake_time, key=KEY, max_attempts="1"
    ) as dead:
        with pytest.raises(InferenceError) as caught:
            await dead.generate(MESSAGES)
        failures.append(caught.value)

    assert [type(f).__name__ for f in failures] == [
        "InferenceUnavailableError",
        "InferenceRequestError",
        "InferenceTimeoutError",
        "InferenceRequestError",
        "InferenceUnavailableError",
    ]
    # The endpoint's own words are quoted, with the credentials taken out.
    assert "***" in failures[0].message and "auth was" in failures[0].message
    for failure in failures:
        assert_clean(str(failure), repr(failure), failure.message)
    assert_clean(client_repr, caplog.text)
    assert "boom" in caplog.text  # the logs did see the failures


def test_config_repr_and_dump_hide_the_key():
    config = InferenceConfig.from_settings(
        inference_settings(f"http://lorax:8080?code={QUERY_SECRET}", key=KEY)
    )
    assert config.key is not None and config.key.get_secret_value() == KEY
    assert_clean(repr(config), str(config), config.model_dump_json())


def test_unresolved_key_vault_reference_is_reported_without_its_value():
    reference = "@Microsoft.KeyVault(SecretUri=https://vault.vault.azure.net/secrets/TOPSECRET)"
    with pytest.raises(ConfigurationError) as caught:
        InferenceConfig.from_settings(inference_settings("http://lorax:8080", key=reference))
    assert caught.value.field == "AOS_INFERENCE_KEY"
    assert "Key Vault reference" in caught.value.message
    assert_clean(caught.value.message)


def test_credentials_in_the_endpoint_url_are_refused():
    with pytest.raises(ConfigurationError) as caught:
        InferenceConfig.from_settings(inference_settings("http://user:TOPSECRET@lorax:8080"))
    assert caught.value.field == "AOS_INFERENCE_ENDPOINT"
    assert_clean(caught.value.message)


async def test_fallback_reasons_in_decisions_hold_no_secret(lorax: FakeLorax, fake_time: FakeTime):
    lorax.echo_auth_in_errors = True
    lorax.default = Reply(status=503, body={"error": "down", "error_type": "x"})
    definition = AgentDefinition(agent_id="ceo", purpose="Grow revenue")
    context = DecisionContext(options=["Grow revenue in Europe"])
    async with make_client(lorax.url, fake_time, key=KEY) as client:
        result = await decide_with_model(
            definition, [], context, client, DeterministicAlignmentScorer(), "d-1"
        )
    assert result.decision.method == "deterministic"
    assert "down" in (result.fallback_reason or "")
    assert_clean(result.model_dump_json())
