"""Requests, responses and errors of the admin API.

Errors are answered as JSON `{"error": {"code", "message", "field"?}}` with the status that
fits: 400 bad input, 404 unknown, 409 conflict, 412 stale ETag, 413 body too large.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from uuid import uuid4

from pydantic import BaseModel, ValidationError

from aos.agents.models import MAX_ID_LENGTH
from aos.errors import (
    AlreadyExistsError,
    AOSError,
    AuditChainError,
    AuthenticationError,
    BusyError,
    ConcurrencyError,
    ConfigurationError,
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", bound=Callable[..., Any])
RoleName = Literal["reader", "operator", "admin"]

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_STATUS: list[tuple[type[AOSError], int]] = [
    (AuditChainError, 500),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (AlreadyExistsError, 409),
    (InvalidTransitionError, 409),
    (ConcurrencyError, 412),
    (ConfigurationError, 503),
    (BusyError, 503),
    (AOSError, 400),
]


class PayloadTooLargeError(InvalidInputError):
    code = "payload_too_large"


@dataclass
class ApiRequest:
    """A request to the admin API. `caller` is who made it, once authenticated."""

    method: str
    url: str
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    route_params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    caller: Any = None
    _request_id: str = field(default_factory=lambda: uuid4().hex, repr=False)

    def check_body_size(self) -> None:
        if len(self.body) > MAX_BODY_BYTES:
            raise PayloadTooLargeError(
                f"the body is {len(self.body)} bytes; at most {MAX_BODY_BYTES} are accepted",
                field="body",
            )

    def json(self, model: type[M]) -> M:
        """The body parsed and validated as `model`; errors name the field."""
        self.check_body_size()
        try:
            data = json.loads(self.body or b"null")
        except (ValueError, RecursionError) as exc:
            reason = "it nests too deeply" if isinstance(exc, RecursionError) else exc
            raise InvalidInputError(f"the body is not valid JSON: {reason}", field="body") from None
        if data is None:
            raise InvalidInputError("a JSON body is required", field="body")
        check_depth(data)
        return validate(model, data)

    def route(self, name: str) -> str:
        return self.route_params[name]

    def slug(self, name: str) -> str:
        """A route parameter that must be an id (lowercase slug), checked before any use."""
        from aos.agents.models import check_slug

        value = self.route_params.get(name, "")
        try:
            return check_slug(value)
        except ValueError as exc:
            raise InvalidInputError(f"{name} {exc}", field=name) from None

    def agent_id(self) -> str:
        return self.slug("agent_id")

    def paging(self) -> dict[str, Any]:
        """The `page_size` and `continuation` query parameters, as a listing takes them."""
        return {
            "page_size": self.int_param("page_size", 50),
            "continuation": self.params.get("continuation"),
        }

    @property
    def request_id(self) -> str:
        """The client's request id (`x-ms-client-request-id` or `x-request-id`) when it sent a
        well-formed one, so a retried request is recognised; else one made up for it."""
        for name in ("x-ms-client-request-id", "x-request-id"):
            value = self.headers.get(name, "")
            if _REQUEST_ID.match(value):
                return value
        return self._request_id

    @property
    def correlation_id(self) -> str:
        """The client's `x-correlation-id` when well-formed, else the trace id of its
        `traceparent`, else the request id."""
        given = self.headers.get("x-correlation-id", "")
        if _REQUEST_ID.match(given):
            return given
        parts = self.headers.get("traceparent", "").split("-")
        if len(parts) == 4 and re.fullmatch(r"[0-9a-f]{32}", parts[1]):
            return parts[1]
        return self.request_id

    @property
    def actor(self) -> str:
        return getattr(self.caller, "actor", None) or "anonymous"

    def int_param(self, name: str, default: int) -> int:
        raw = self.params.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            message = f"{name} must be a whole number, not {raw!r}"
            raise InvalidInputError(message, field=name) from None


@dataclass
class ApiResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):  # already encoded (e.g. an MCP response)
            return self.body
        if isinstance(self.body, BaseModel):
            return self.body.model_dump_json(exclude_none=True).encode()
        return json.dumps(self.body, default=str).encode()


def requires(role: RoleName) -> Callable[[H], H]:
    """Mark a handler with the least role that may call it; the HTTP adapter checks the caller
    against it before the handler runs, and refuses a handler that carries no mark."""

    def mark(handler: H) -> H:
        handler.required_role = role  # type: ignore[attr-defined]
        return handler

    return mark


def check_depth(data: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON whose objects and arrays nest deeper than `limit`: no AOS document needs
    more, and deep nesting is a cheap way to make a server work hard."""
    containers = (dict, list)
    level = [data] if isinstance(data, containers) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise InvalidInputError(f"the body nests deeper than {limit} levels", field="body")
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, containers)
        ]


def page_response(page: Any) -> ApiResponse:
    """A page of a listing as the API answers it: items and the token for the next page."""
    return ApiResponse(
        200,
        {
            "items": [item.model_dump(mode="json") for item in page.items],
            "continuation": page.continuation,
        },
    )


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def from_validation_error(exc: ValidationError) -> InvalidInputError:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"] if not location else f"{location}: {error['msg']}"
    return InvalidInputError(message, field=location or None)


async def handle(
    request: ApiRequest,
    client: Any,
    store: Callable[[], Any],
    handler: Callable[..., Any],
    *args: Any,
) -> ApiResponse:
    """Serve one admin API request: size check, caller and role check, then the handler with
    the `store()`. Every failure becomes a JSON error answer."""
    from aos.governance.auth import Role, require

    try:
        request.check_body_size()
        role = getattr(handler, "required_role", None)
        if role is None:  # fail closed: a handler must say who may call it
            raise TypeError(f"handler {handler.__qualname__} declares no required role")
        request.caller = await require(request.headers, request.params, Role(role))
        return await handler(request, client, store(), *args)
    except Exception as exc:
        return error_response(exc)


def error_response(exc: Exception) -> ApiResponse:
    """The JSON error answer for an exception; unexpected ones are logged, not echoed."""
    if isinstance(exc, ValidationError):
        exc = from_validation_error(exc)
    if isinstance(exc, AOSError):
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        if isinstance(exc, PayloadTooLargeError):
            status = 413
        headers = {"Retry-After": "30"} if isinstance(exc, BusyError) else {}
        if isinstance(exc, AuthenticationError):
            # RFC 6750: a bare challenge when no credentials came; else the error and why. The
            # description is a quoted-string, so only printable ASCII without quote or backslash.
            challenge = "Bearer"
            if exc.bearer_error:
                described = re.sub(r'[^\x20-\x7e]|["\\]', "'", exc.message)[:400]
                challenge += f' error="{exc.bearer_error}", error_description="{described}"'
            headers["WWW-Authenticate"] = challenge
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.field:
            error["field"] = exc.field
        return ApiResponse(status, {"error": error}, headers)
    logger.exception("unexpected error in the admin API")
    return ApiResponse(
        500, {"error": {"code": "internal_error", "message": "internal error; see the app's logs"}}
    )


def agent_id_pattern() -> str:
    return f"^[a-z0-9](?:[a-z0-9-]{{0,{MAX_ID_LENGTH - 2}}}[a-z0-9])?$"
