"""Requests, responses and errors of the admin API.

Errors are answered as JSON `{"error": {"code", "message", "field"?}}` with the status that
fits: 400 bad input, 404 unknown, 409 conflict, 412 stale ETag, 413 body too large.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from aos.agents.models import MAX_ID_LENGTH
from aos.errors import (
    AlreadyExistsError,
    AOSError,
    BusyError,
    ConcurrencyError,
    ConfigurationError,
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
)

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 1024 * 1024

_STATUS: list[tuple[type[AOSError], int]] = [
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
    method: str
    url: str
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    route_params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def json(self, model: type[M]) -> M:
        """The body parsed and validated as `model`; errors name the field."""
        if len(self.body) > MAX_BODY_BYTES:
            raise PayloadTooLargeError(
                f"the body is {len(self.body)} bytes; at most {MAX_BODY_BYTES} are accepted",
                field="body",
            )
        try:
            data = json.loads(self.body or b"null")
        except ValueError as exc:
            raise InvalidInputError(f"the body is not valid JSON: {exc}", field="body") from None
        if data is None:
            raise InvalidInputError("a JSON body is required", field="body")
        return validate(model, data)

    def route(self, name: str) -> str:
        return self.route_params[name]

    def agent_id(self) -> str:
        from aos.agents.models import check_slug

        value = self.route_params.get("agent_id", "")
        try:
            return check_slug(value)
        except ValueError as exc:
            raise InvalidInputError(f"agent_id {exc}", field="agent_id") from None

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


def error_response(exc: Exception) -> ApiResponse:
    """The JSON error answer for an exception; unexpected ones are logged, not echoed."""
    if isinstance(exc, ValidationError):
        exc = from_validation_error(exc)
    if isinstance(exc, AOSError):
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        if isinstance(exc, PayloadTooLargeError):
            status = 413
        headers = {"Retry-After": "30"} if isinstance(exc, BusyError) else {}
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
