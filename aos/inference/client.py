"""Async client for LoRAX's HTTP API (and any OpenAI-compatible chat endpoint).

Two request shapes, chosen by AOS_INFERENCE_API (see aos.inference.config):

- ``lorax``: ``POST {endpoint}/generate`` with ``{"inputs": <prompt>, "parameters": {"adapter_id",
  "adapter_source", "max_new_tokens", "do_sample", "temperature", "details": true, ...}}``, answered
  by ``{"generated_text": ..., "details": {"prompt_tokens", "generated_tokens", ...}}``. LoRAX
  applies no chat template here, so the messages are rendered as a plain prompt.
- ``openai``: ``POST .../chat/completions`` with ``{"model": <adapter id or base model>,
  "messages": [...], "max_tokens", "temperature"}``, answered by ``choices[0].message.content``
  and ``usage.prompt_tokens`` / ``usage.completion_tokens``.

One aiohttp session (one connection pool) per client; `shared_client` keeps one client per
event loop and configuration, so every agent turn in a worker reuses the same connections.

The key travels only in the request header. It is never logged, never in a repr, never in an
error message: any text the endpoint sends back is passed through `redact` before it is quoted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from aos.inference.accounting import Usage
from aos.inference.adapters import BASE_MODEL, AdapterRegistry, AdapterSelection
from aos.inference.config import KEY, KEY_HEADER, GenerationParameters, InferenceConfig
from aos.inference.errors import (
    AdapterUnavailableError,
    InferenceError,
    InferenceNotConfigured,
    InferenceRequestError,
    InferenceResponseError,
)
from aos.inference.resilience import (
    CircuitBreaker,
    RetryPolicy,
    TransientFailure,
    call_with_retries,
    parse_retry_after,
)

if TYPE_CHECKING:
    import aiohttp

    from aos.inference.cache import ResponseCache

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300
_REDACTED = "***"


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class InferenceResult(BaseModel):
    """A model's answer, with the adapter that produced it and what it cost."""

    text: str
    adapter: AdapterSelection
    model: str
    usage: Usage
    cached: bool = False
    finish_reason: str | None = None


def render_prompt(messages: Sequence[ChatMessage]) -> str:
    """Messages as one plain prompt for LoRAX's /generate (which applies no chat template)."""
    parts = []
    for message in messages:
        if message.role == "system":
            parts.append(message.content)
        else:
            parts.append(f"{message.role.capitalize()}:\n{message.content}")
    parts.append("Assistant:\n")
    return "\n\n".join(parts)


class InferenceClient:
    """Calls one inference endpoint with retries, a circuit breaker and an optional cache.

    Build with `InferenceClient(config)` or `shared_client(config)`; `await close()` when done
    (the shared ones are closed by `close_shared_clients`).
    """

    def __init__(
        self,
        config: InferenceConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not config.enabled:
            raise InferenceNotConfigured(
                "inference is not configured: set AOS_INFERENCE_ENDPOINT to use a model",
                field="AOS_INFERENCE_ENDPOINT",
            )
        self.config = config
        self.adapters = AdapterRegistry(config)
        self.breaker = CircuitBreaker(
            config.breaker_failures,
            config.breaker_cooldown_seconds,
            clock=clock,
            name=f"inference endpoint {config.route}",
        )
        self.policy = RetryPolicy(max_attempts=config.max_attempts)
        self._session = session
        self._owns_session = session is None
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rand = rand
        self._secrets = _secrets(config)

    def __repr__(self) -> str:
        return (
            f"InferenceClient(api={self.config.api!r}, endpoint={self.config.route!r}, "
            f"circuit={self.breaker.state.value!r})"
        )

    # -- public ----------------------------------------------------------------------------

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterSelection | None = None,
        parameters: GenerationParameters | dict[str, Any] | None = None,
        response_schema: dict[str, Any] | None = None,
        cache: ResponseCache | None = None,
        cache_if: Callable[[str], bool] | None = None,
    ) -> InferenceResult:
        """Ask the model.

        Deterministic requests are served from, and stored in, `cache` when one is given; only
        answers `cache_if` accepts are stored, so a reply that failed validation is asked for
        again next time rather than replayed. An adapter the endpoint cannot load is retried on
        the base model, and the result's `adapter` says so (`fell_back`, `reason`).

        Raises InferenceUnavailableError (circuit open, retries exhausted), InferenceTimeoutError,
        InferenceRequestError (4xx) or InferenceResponseError (malformed 200); the error's
        `usage` holds the attempts spent.
        """
        selection = adapter or BASE_MODEL
        params = self.config.parameters.merged(parameters)
        tally = _Tally()
        try:
            try:
                return await self._generate(
                    messages, selection, params, response_schema, cache, cache_if, tally
                )
            except AdapterUnavailableError as exc:
                if selection.uses_base_model:
                    raise
                fallback = selection.fall_back(
                    f"the endpoint could not load adapter '{selection.adapter_id}': {exc.message}"
                )
                return await self._generate(
                    messages, fallback, params, response_schema, cache, cache_if, tally
                )
        except InferenceError as exc:
            exc.usage = Usage(attempts=tally.attempts)
            raise

    def select_adapter(self, target: Any) -> AdapterSelection:
        return self.adapters.select(target)

    def build_body(
        self,
        messages: Sequence[ChatMessage],
        adapter: AdapterSelection,
        params: GenerationParameters,
        response_schema: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of a request (no credentials are ever part of it)."""
        fmt = self.config.response_format
        if self.config.api == "lorax":
            parameters: dict[str, Any] = {
                "max_new_tokens": params.max_new_tokens,
                "details": True,
                "return_full_text": False,
            }
            if params.deterministic:
                parameters["do_sample"] = False
            else:
                parameters["do_sample"] = True
                parameters["temperature"] = params.temperature
                if params.top_p is not None:
                    parameters["top_p"] = params.top_p
                if params.seed is not None:
                    parameters["seed"] = params.seed
            if params.stop:
                parameters["stop"] = list(params.stop)
            if adapter.adapter_id is not None:
                parameters["adapter_id"] = adapter.adapter_id
                if adapter.source:
                    parameters["adapter_source"] = adapter.source
            if fmt == "json" or (fmt == "schema" and response_schema is None):
                parameters["response_format"] = {"type": "json_object"}
            elif fmt == "schema":
                parameters["response_format"] = {"type": "json_object", "schema": response_schema}
            return {"inputs": render_prompt(messages), "parameters": parameters}

        body: dict[str, Any] = {
            "model": adapter.adapter_id
            if adapter.adapter_id is not None
            else self.config.base_model,
            "messages": [m.model_dump() for m in messages],
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "stream": False,
        }
        if params.top_p is not None and not params.deterministic:
            body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if fmt == "json" or (fmt == "schema" and response_schema is None):
            body["response_format"] = {"type": "json_object"}
        elif fmt == "schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "aos_response", "schema": response_schema},
            }
        return body

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def redact(self, text: str) -> str:
        """Text with every credential (the key, query values) replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    # -- internals -------------------------------------------------------------------------

    async def _generate(
        self,
        messages: Sequence[ChatMessage],
        adapter: AdapterSelection,
        params: GenerationParameters,
        response_schema: dict[str, Any] | None,
        cache: ResponseCache | None,
        cache_if: Callable[[str], bool] | None,
        tally: _Tally,
    ) -> InferenceResult:
        body = self.build_body(messages, adapter, params, response_schema)
        model = _model_label(adapter, self.config)
        key = None
        if cache is not None and params.deterministic:
            key = cache.key(self.config.api, self.config.route, body)
            hit = await cache.get(key)
            if hit is not None:
                logger.debug("inference: cache hit for %s", model)
                return InferenceResult(
                    text=hit.text,
                    adapter=adapter,
                    model=model,
                    usage=Usage(attempts=tally.attempts, cache_hits=1),
                    cached=True,
                    finish_reason=hit.finish_reason,
                )

        async def attempt(_n: int) -> tuple[str, int, int, str | None]:
            return await self._post(body, adapter)

        text, prompt_tokens, completion_tokens, finish = await call_with_retries(
            attempt,
            policy=self.policy,
            breaker=self.breaker,
            sleep=self._sleep,
            rand=self._rand,
            target=f"inference endpoint {self.config.route}",
            on_attempt=tally.count,
        )
        usage = Usage(
            calls=1,
            attempts=tally.attempts,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        if key is not None and cache is not None and (cache_if is None or cache_if(text)):
            await cache.put(
                key,
                text,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                finish_reason=finish,
                model=model,
            )
        return InferenceResult(
            text=text, adapter=adapter, model=model, usage=usage, finish_reason=finish
        )

    def _session_for_loop(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
                trust_env=False,
            )
            self._owns_session = True
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.key is not None:
            key = self.config.key.get_secret_value()
            if self.config.key_header == "authorization":
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers[self.config.key_header] = key
        return headers

    async def _post(
        self, body: dict[str, Any], adapter: AdapterSelection
    ) -> tuple[str, int, int, str | None]:
        import aiohttp

        session = self._session_for_loop()
        try:
            async with session.post(
                self.config.route,
                params=list(self.config.query) or None,
                data=json.dumps(body, ensure_ascii=False).encode(),
                headers=self._headers(),
            ) as response:
                status = response.status
                raw = await response.read()
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            raise TransientFailure(
                f"no answer within {self.config.timeout_seconds:g}s", timeout=True
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = self.redact(str(exc))[:MAX_ERROR_CHARS]
            raise TransientFailure(
                f"connection failed ({type(exc).__name__}: {detail})"
                if detail
                else f"connection failed ({type(exc).__name__})"
            ) from None
        if status == 200:
            return self._parse(raw)
        self._raise_for(status, raw, retry_after, adapter)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for(
        self, status: int, raw: bytes, retry_after: str | None, adapter: AdapterSelection
    ) -> None:
        message = self.redact(_error_message(raw))[:MAX_ERROR_CHARS]
        described = f"HTTP {status}: {message}" if message else f"HTTP {status}"
        wait = parse_retry_after(retry_after, self._wall_clock())
        if status == 429:
            raise TransientFailure(described, retry_after=wait, counts_as_failure=False)
        if status == 408:
            raise TransientFailure(described, retry_after=wait, timeout=True)
        if adapter.adapter_id is not None and status in (404, 424):
            raise AdapterUnavailableError(described, status=status)
        if status == 424 or status >= 500:
            raise TransientFailure(described, retry_after=wait)
        if status in (401, 403):
            raise InferenceRequestError(
                f"the endpoint refused the credentials ({described}); check {KEY} and {KEY_HEADER}",
                status=status,
                field=KEY,
            )
        if status == 404:
            raise InferenceRequestError(
                f"the endpoint has no route {self.config.route} ({described}); check "
                "AOS_INFERENCE_ENDPOINT, AOS_INFERENCE_API and AOS_INFERENCE_CHAT_PATH",
                status=status,
            )
        raise InferenceRequestError(
            f"the endpoint rejected the request ({described})", status=status
        )

    def _parse(self, raw: bytes) -> tuple[str, int, int, str | None]:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InferenceResponseError(
                "the endpoint answered 200 with a body that is not JSON"
            ) from None
        try:
            if self.config.api == "lorax":
                text = data["generated_text"]
                details = data.get("details") or {}
                prompt = details.get("prompt_tokens") or 0
                completion = details.get("generated_tokens") or 0
                finish = details.get("finish_reason")
            else:
                choice = data["choices"][0]
                text = choice["message"]["content"]
                usage = data.get("usage") or {}
                prompt = usage.get("prompt_tokens") or 0
                completion = usage.get("completion_tokens") or 0
                finish = choice.get("finish_reason")
            if not isinstance(text, str):
                raise TypeError("text is not a string")
            return text, int(prompt), int(completion), finish if isinstance(finish, str) else None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            expected = (
                "'generated_text'" if self.config.api == "lorax" else "'choices[0].message.content'"
            )
            raise InferenceResponseError(
                f"the endpoint answered 200 without {expected}; is AOS_INFERENCE_API "
                f"('{self.config.api}') the endpoint's API?"
            ) from None


class _Tally:
    def __init__(self) -> None:
        self.attempts = 0

    def count(self) -> None:
        self.attempts += 1


def _model_label(adapter: AdapterSelection, config: InferenceConfig) -> str:
    if adapter.adapter_id is not None:
        return adapter.adapter_id
    return config.base_model or "base model"


def _secrets(config: InferenceConfig) -> list[str]:
    secrets = []
    if config.key is not None and config.key.get_secret_value():
        secrets.append(config.key.get_secret_value())
    secrets.extend(value for _, value in config.query if len(value) >= 8)
    return sorted(set(secrets), key=len, reverse=True)


def _error_message(raw: bytes) -> str:
    """The endpoint's error text: LoRAX {"error": ...}, OpenAI {"error": {"message": ...}}."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return " ".join(text.split())
    if isinstance(data, dict):
        error = data.get("error", data.get("message", data.get("detail")))
        if isinstance(error, dict):
            error = error.get("message") or error.get("code")
        if isinstance(error, str):
            return error
    return " ".join(text.split())


# -- one client per event loop and configuration ------------------------------------------

_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, InferenceClient]] = (
    weakref.WeakKeyDictionary()
)


def shared_client(config: InferenceConfig) -> InferenceClient:
    """The process's client for this configuration on the running loop (one connection pool).

    Its circuit breaker is shared too, so every agent in the worker sees a dead endpoint at once.
    """
    per_loop = _shared.setdefault(asyncio.get_running_loop(), {})
    key = config.fingerprint()
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = InferenceClient(config)
    else:
        # Adapter map, parameters and weights may change without a new connection pool.
        client.config = config
        client.adapters = AdapterRegistry(config)
    return client


async def close_shared_clients() -> None:
    """Close the running loop's shared clients (at host shutdown, or the end of a test)."""
    for client in _shared.pop(asyncio.get_running_loop(), {}).values():
        await client.close()
