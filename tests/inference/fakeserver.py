"""A scriptable stand-in for a LoRAX server (aiohttp.web on 127.0.0.1, a free port).

It implements the documented, non-streaming request/response shapes of LoRAX's ``POST /generate``
and ``POST /v1/chat/completions`` (router/src/lib.rs, docs/reference/openapi.json):

- /generate: ``{"inputs", "parameters": {...}}`` -> ``{"generated_text", "details"?}``; details
  (``finish_reason``, ``prompt_tokens``, ``generated_tokens``, ...) only when
  ``parameters.details`` is true, as LoRAX's serde default is false.
- /v1/chat/completions: ``{"model", "messages", ...}`` -> ``{"id", "object", "created", "model",
  "choices": [{"index", "message": {"role", "content"}, "finish_reason"}], "usage"}``; ``model``
  "" or the base model id means no adapter.
- Errors are ``{"error": <message>, "error_type": <type>}``. An adapter LoRAX cannot load fails
  the request with 424 and error_type "generation" (InferError::GenerationError). With
  ``flavor="openai"`` an unknown model is a 404 in OpenAI's error shape instead (vLLM, Azure).

Tests script replies per request (`script`), set the known adapters, require a key, and read
back every request (`requests`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """One scripted answer. `text` may be a function of the request body."""

    text: str | Callable[[dict[str, Any]], str] | None = None
    status: int = 200
    body: Any = None  # a JSON body to send as is (errors, malformed answers)
    raw: bytes | None = None  # bytes to send as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int = 11
    completion_tokens: int = 7


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: Any


class FakeLorax:
    def __init__(
        self,
        *,
        base_model: str = "mistralai/Mistral-7B-Instruct-v0.1",
        adapters: set[str] | None = None,
        flavor: str = "lorax",
    ) -> None:
        self.base_model = base_model
        self.adapters = set(adapters or ())
        self.flavor = flavor
        self.script: deque[Reply] = deque()
        self.default = Reply(text="ok")
        self.requests: list[Recorded] = []
        self.required_key: tuple[str, str] | None = None  # (header, expected value)
        self.echo_auth_in_errors = False
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- scripting -------------------------------------------------------------------------

    def reply(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def texts(self, *texts: str) -> None:
        self.script.extend(Reply(text=t) for t in texts)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/generate", self._generate)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers --------------------------------------------------------------------------

    async def _take(self, request: web.Request) -> tuple[Reply, Any, web.Response | None]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        self.requests.append(
            Recorded(request.path, dict(request.headers), dict(request.query), body)
        )
        reply = self.script.popleft() if self.script else self.default
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay)
        if self.required_key is not None:
            header, expected = self.required_key
            if request.headers.get(header) != expected:
                message = "invalid or missing credentials"
                if self.echo_auth_in_errors:
                    message += f"; got {header}: {request.headers.get(header)}"
                return reply, body, _error(401, message, "authentication")
        if reply.raw is not None:
            return (
                reply,
                body,
                web.Response(status=reply.status, body=reply.raw, headers=reply.headers),
            )
        if reply.body is not None or reply.status != 200:
            payload = reply.body
            if payload is None:
                payload = {"error": f"scripted {reply.status}", "error_type": "scripted"}
            if self.echo_auth_in_errors and isinstance(payload, dict) and "error" in payload:
                auth = request.headers.get("Authorization") or request.headers.get("api-key")
                payload = {**payload, "error": f"{payload['error']} (auth was {auth})"}
            return (
                reply,
                body,
                web.json_response(payload, status=reply.status, headers=reply.headers),
            )
        if not isinstance(body, dict):
            return (
                reply,
                body,
                _error(422, "Input validation error: body is not JSON", "validation"),
            )
        return reply, body, None

    def _text(self, reply: Reply, body: dict[str, Any]) -> str:
        return reply.text(body) if callable(reply.text) else (reply.text or "")

    async def _generate(self, request: web.Request) -> web.Response:
        reply, body, early = await self._take(request)
        if early is not None:
            return early
        inputs = body.get("inputs")
        if not isinstance(inputs, str) or not inputs:
            return _error(422, "Input validation error: `inputs` cannot be empty", "validation")
        params = body.get("parameters") or {}
        max_new = params.get("max_new_tokens")
        if max_new is not None and (not isinstance(max_new, int) or max_new <= 0):
            return _error(
                422,
                "Input validation error: `max_new_tokens` must be strictly positive",
                "validation",
            )
        temperature = params.get("temperature")
        if temperature is not None and temperature < 0:
            return _error(
                422, "Input validation error: `temperature` must be non-negative", "validation"
            )
        adapter = params.get("adapter_id")
        if adapter and adapter not in self.adapters:
            return _unknown_adapter(adapter)
        payload: dict[str, Any] = {"generated_text": self._text(reply, body)}
        if params.get("details"):
            payload["details"] = {
                "finish_reason": "eos_token",
                "prompt_tokens": reply.prompt_tokens,
                "generated_tokens": reply.completion_tokens,
                "skipped_tokens": 0,
                "seed": params.get("seed"),
                "prefill": [],
                "tokens": [],
            }
        return web.json_response(payload, headers=reply.headers)

    async def _chat(self, request: web.Request) -> web.Response:
        reply, body, early = await self._take(request)
        if early is not None:
            return early
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list) or not messages:
            return _error(
                422, "Input validation error: `model` and `messages` are required", "validation"
            )
        if model not in ("", self.base_model) and model not in self.adapters:
            if self.flavor == "openai":
                return web.json_response(
                    {
                        "error": {
                            "message": f"The model `{model}` does not exist.",
                            "type": "invalid_request_error",
                            "param": "model",
                            "code": "model_not_found",
                        }
                    },
                    status=404,
                )
            return _unknown_adapter(model)
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        return web.json_response(
            {
                "id": "null",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self._text(reply, body)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
            headers=reply.headers,
        )


def _error(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


def _unknown_adapter(adapter: str) -> web.Response:
    # What LoRAX answers when the adapter download fails: GenerationError -> 424.
    return _error(
        424,
        f"Request failed during generation: Server error: Repository Not Found for adapter "
        f"'{adapter}'",
        "generation",
    )
