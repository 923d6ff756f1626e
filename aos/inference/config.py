"""Inference settings: which endpoint serves the agents' model, and how to talk to it.

Read from the one Settings object with `settings.get(NAME)` (the Functions host puts app settings
in the environment; a Key Vault reference such as ``@Microsoft.KeyVault(SecretUri=...)`` is
resolved by App Service in Azure and by AOS elsewhere, see aos.governance.secrets). Every
setting is optional:

``AOS_INFERENCE_ENDPOINT``
    Base URL of the endpoint, e.g. ``http://lorax:8080`` (LoRAX), ``http://vllm:8000/v1``,
    ``https://<resource>.openai.azure.com/openai/v1`` or
    ``https://<resource>.services.ai.azure.com/models?api-version=2024-05-01-preview``. A query
    string is sent with every request and never logged. Unset: inference is disabled
    (`InferenceConfig.enabled` is False) and agents decide with the deterministic scorer alone.
``AOS_INFERENCE_API``
    ``lorax`` (default): LoRAX's native ``POST /generate`` with ``parameters.adapter_id``.
    ``openai``: ``POST .../chat/completions`` with ``model`` = the adapter id, or the base model
    when there is no adapter (LoRAX's own /v1 API, vLLM with ``--lora-modules``, Azure AI Foundry,
    Azure OpenAI v1).
``AOS_INFERENCE_CHAT_PATH``
    Path of chat completions under the endpoint for the ``openai`` API. Default:
    ``/chat/completions`` when the endpoint path ends in ``/v1`` or ``/models`` or names a
    ``/deployments/`` entry, else ``/v1/chat/completions``.
``AOS_INFERENCE_KEY``
    The endpoint's key (or a Key Vault reference). Unset: no auth header.
``AOS_INFERENCE_KEY_HEADER``
    ``authorization`` (default): ``Authorization: Bearer <key>``. Any other value is the header
    name that carries the key verbatim, e.g. ``api-key`` (Azure OpenAI / AI Foundry keys).
``AOS_INFERENCE_BASE_MODEL``
    Name of the base model: the ``model`` of ``openai`` requests without an adapter (LoRAX
    accepts ``""`` or its model id). Default ``""``.
``AOS_INFERENCE_ADAPTERS``
    JSON object from an agent's ``adapter_name`` to the adapter id to request, e.g.
    ``{"ceo": "acme/ceo-lora", "cfo": {"id": "/data/cfo", "source": "local"}}``. A name missing
    from it falls back to the base model, visibly (see aos.inference.adapters).
``AOS_INFERENCE_ADAPTER_SOURCE``
    LoRAX ``adapter_source`` for every adapter (``hub``, ``local``, ``s3``, ``pbase``). Default:
    unset (LoRAX loads from the Hugging Face hub). Sent with the ``lorax`` API only.
``AOS_INFERENCE_TIMEOUT_SECONDS``
    Time allowed for one request, connection included. Default 30.
``AOS_INFERENCE_MAX_ATTEMPTS``
    Attempts per call, the first included, on 429, 5xx, timeouts and connection errors. Default 3.
``AOS_INFERENCE_CACHE_TTL_SECONDS``
    How long a deterministic (temperature 0) answer is reused from Table storage. Default 86400;
    0 disables the cache.
``AOS_INFERENCE_BREAKER_FAILURES``
    Consecutive failed attempts (5xx, timeouts, connection errors) that open the circuit: further
    calls fail at once with InferenceUnavailableError. Default 5.
``AOS_INFERENCE_BREAKER_COOLDOWN_SECONDS``
    How long the circuit stays open before one trial call is let through. Default 30.
``AOS_INFERENCE_PARAMETERS``
    JSON object of default generation parameters (``max_new_tokens``, ``temperature``,
    ``top_p``, ``seed``, ``stop``). Default ``{"max_new_tokens": 512, "temperature": 0}``.
``AOS_INFERENCE_MODEL_WEIGHT``
    Weight of the model's judgement in a combined alignment score (the deterministic score has
    the rest). Default 0.5.
``AOS_INFERENCE_RESPONSE_FORMAT``
    ``none`` (default), ``json`` (ask for a JSON object) or ``schema`` (ask for the judgement's
    JSON schema: LoRAX structured output, OpenAI ``json_schema``). Only for endpoints that
    support it; replies are validated either way.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from aos.errors import ConfigurationError
from aos.settings import Settings

ENDPOINT = "AOS_INFERENCE_ENDPOINT"
API = "AOS_INFERENCE_API"
CHAT_PATH = "AOS_INFERENCE_CHAT_PATH"
KEY = "AOS_INFERENCE_KEY"
KEY_HEADER = "AOS_INFERENCE_KEY_HEADER"
BASE_MODEL = "AOS_INFERENCE_BASE_MODEL"
ADAPTERS = "AOS_INFERENCE_ADAPTERS"
ADAPTER_SOURCE = "AOS_INFERENCE_ADAPTER_SOURCE"
TIMEOUT = "AOS_INFERENCE_TIMEOUT_SECONDS"
MAX_ATTEMPTS = "AOS_INFERENCE_MAX_ATTEMPTS"
CACHE_TTL = "AOS_INFERENCE_CACHE_TTL_SECONDS"
BREAKER_FAILURES = "AOS_INFERENCE_BREAKER_FAILURES"
BREAKER_COOLDOWN = "AOS_INFERENCE_BREAKER_COOLDOWN_SECONDS"
PARAMETERS = "AOS_INFERENCE_PARAMETERS"
MODEL_WEIGHT = "AOS_INFERENCE_MODEL_WEIGHT"
RESPONSE_FORMAT = "AOS_INFERENCE_RESPONSE_FORMAT"

SETTING_NAMES = (
    ENDPOINT,
    API,
    CHAT_PATH,
    KEY,
    KEY_HEADER,
    BASE_MODEL,
    ADAPTERS,
    ADAPTER_SOURCE,
    TIMEOUT,
    MAX_ATTEMPTS,
    CACHE_TTL,
    BREAKER_FAILURES,
    BREAKER_COOLDOWN,
    PARAMETERS,
    MODEL_WEIGHT,
    RESPONSE_FORMAT,
)

ApiStyle = Literal["lorax", "openai"]
ResponseFormat = Literal["none", "json", "schema"]


class GenerationParameters(BaseModel):
    """Generation parameters in one vocabulary, mapped to each API by the client.

    Temperature 0 means greedy decoding (LoRAX ``do_sample: false``): deterministic, so cacheable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(512, gt=0, le=32_768)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, gt=0)
    stop: tuple[str, ...] = Field((), max_length=4)

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0.0

    def merged(
        self, overrides: dict[str, Any] | GenerationParameters | None
    ) -> GenerationParameters:
        if overrides is None:
            return self
        if isinstance(overrides, GenerationParameters):
            overrides = overrides.model_dump(exclude_unset=True)
        return GenerationParameters.model_validate({**self.model_dump(), **overrides})


class AdapterSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=512)
    source: str | None = Field(None, min_length=1, max_length=32)


class InferenceConfig(BaseModel):
    """Resolved inference settings. `enabled` is False when no endpoint is configured."""

    model_config = ConfigDict(frozen=True)

    url: str | None = Field(None, description="Endpoint URL without query string or user info.")
    query: tuple[tuple[str, str], ...] = Field((), repr=False, exclude=True)
    api: ApiStyle = "lorax"
    chat_path: str | None = None
    key: SecretStr | None = None
    key_header: str = "authorization"
    base_model: str = ""
    adapters: dict[str, AdapterSpec] = Field(default_factory=dict)
    adapter_source: str | None = None
    timeout_seconds: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=10)
    cache_ttl_seconds: float = Field(86_400.0, ge=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_seconds: float = Field(30.0, ge=0)
    parameters: GenerationParameters = Field(default_factory=GenerationParameters)
    model_weight: float = Field(0.5, ge=0.0, le=1.0)
    response_format: ResponseFormat = "none"

    @property
    def enabled(self) -> bool:
        return self.url is not None

    @property
    def route(self) -> str:
        """The URL requests go to (without the query string)."""
        if self.url is None:
            return ""
        if self.api == "lorax":
            return f"{self.url}/generate"
        if self.chat_path:
            return f"{self.url}/{self.chat_path.lstrip('/')}"
        path = urlsplit(self.url).path
        if path.endswith(("/v1", "/models")) or "/deployments/" in path:
            return f"{self.url}/chat/completions"
        return f"{self.url}/v1/chat/completions"

    def fingerprint(self) -> tuple[Any, ...]:
        """What identifies a client: two configs with the same fingerprint can share one."""
        return (
            self.url,
            self.query,
            self.api,
            self.chat_path,
            self.key.get_secret_value() if self.key else None,
            self.key_header,
            self.timeout_seconds,
            self.max_attempts,
            self.breaker_failures,
            self.breaker_cooldown_seconds,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceConfig:
        """Resolve the AOS_INFERENCE_* settings; a malformed one raises ConfigurationError."""
        values: dict[str, Any] = {}
        endpoint = settings.get(ENDPOINT)
        if endpoint:
            values["url"], values["query"] = _endpoint(endpoint.strip())

        api = (settings.get(API) or "lorax").strip().lower()
        if api not in ("lorax", "openai"):
            raise ConfigurationError(f"setting {API} must be 'lorax' or 'openai'", field=API)
        values["api"] = api

        if chat_path := settings.get(CHAT_PATH):
            values["chat_path"] = chat_path.strip()

        key = settings.get(KEY)
        if key:
            if key.strip().startswith("@Microsoft.KeyVault("):
                # Resolved at start (aos.governance.secrets); still here means it was not.
                raise ConfigurationError(
                    f"setting {KEY} is a Key Vault reference that was not resolved: give the "
                    "app's identity 'Key Vault Secrets User' on the vault, or set the key itself",
                    field=KEY,
                )
            values["key"] = SecretStr(key.strip())
        header = (settings.get(KEY_HEADER) or "authorization").strip()
        if not header or any(c in header for c in " :\r\n"):
            raise ConfigurationError(
                f"setting {KEY_HEADER} must be a header name", field=KEY_HEADER
            )
        values["key_header"] = header.lower()

        values["base_model"] = (settings.get(BASE_MODEL) or "").strip()
        values["adapters"] = _adapters(settings.get(ADAPTERS))
        if source := settings.get(ADAPTER_SOURCE):
            values["adapter_source"] = source.strip()

        numbers = {
            "timeout_seconds": (TIMEOUT, float),
            "max_attempts": (MAX_ATTEMPTS, int),
            "cache_ttl_seconds": (CACHE_TTL, float),
            "breaker_failures": (BREAKER_FAILURES, int),
            "breaker_cooldown_seconds": (BREAKER_COOLDOWN, float),
            "model_weight": (MODEL_WEIGHT, float),
        }
        for field, (name, kind) in numbers.items():
            raw = settings.get(name)
            if raw is not None:
                try:
                    values[field] = kind(raw.strip())
                except ValueError:
                    raise ConfigurationError(
                        f"setting {name} must be {'an integer' if kind is int else 'a number'}",
                        field=name,
                    ) from None

        if raw := settings.get(PARAMETERS):
            values["parameters"] = _json_setting(PARAMETERS, raw, dict)

        response_format = (settings.get(RESPONSE_FORMAT) or "none").strip().lower()
        values["response_format"] = response_format

        try:
            return cls(**values)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else ""
            name = _FIELD_SETTINGS.get(field, field)
            where = ".".join(str(part) for part in error["loc"][1:])
            detail = f" ({where})" if where else ""
            raise ConfigurationError(
                f"setting {name} is invalid{detail}: {error['msg']}", field=name
            ) from None


_FIELD_SETTINGS = {
    "url": ENDPOINT,
    "api": API,
    "timeout_seconds": TIMEOUT,
    "max_attempts": MAX_ATTEMPTS,
    "cache_ttl_seconds": CACHE_TTL,
    "breaker_failures": BREAKER_FAILURES,
    "breaker_cooldown_seconds": BREAKER_COOLDOWN,
    "parameters": PARAMETERS,
    "model_weight": MODEL_WEIGHT,
    "response_format": RESPONSE_FORMAT,
    "adapters": ADAPTERS,
    "adapter_source": ADAPTER_SOURCE,
}


def _endpoint(value: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"setting {ENDPOINT} must be an http(s) URL such as http://lorax:8080", field=ENDPOINT
        )
    if parts.username or parts.password:
        raise ConfigurationError(
            f"setting {ENDPOINT} must not carry credentials; put the key in {KEY}", field=ENDPOINT
        )
    url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return url, tuple(parse_qsl(parts.query, keep_blank_values=True))


def _json_setting(name: str, raw: str, kind: type) -> Any:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"setting {name} is not valid JSON: {exc.msg}", field=name
        ) from None
    if not isinstance(value, kind):
        raise ConfigurationError(f"setting {name} must be a JSON object", field=name)
    return value


def _adapters(raw: str | None) -> dict[str, AdapterSpec]:
    if not raw:
        return {}
    mapping = _json_setting(ADAPTERS, raw, dict)
    adapters = {}
    for name, value in mapping.items():
        spec = {"id": value} if isinstance(value, str) else value
        try:
            adapters[name] = AdapterSpec.model_validate(spec)
        except ValidationError:
            raise ConfigurationError(
                f"setting {ADAPTERS}: '{name}' must map to an adapter id, or to an object "
                "with 'id' and optionally 'source'",
                field=ADAPTERS,
            ) from None
    return adapters
