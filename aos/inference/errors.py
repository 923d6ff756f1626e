"""Errors of the inference client. Each is an AOSError with a stable `code`.

None of them ever carries a credential: messages name the endpoint without its query string and
any text the endpoint sent back is passed through `redact` before it is quoted.
"""

from __future__ import annotations

from aos.errors import AOSError
from aos.inference.accounting import Usage


class InferenceError(AOSError):
    """Base class of inference failures. `usage` holds what the failed call spent (attempts)."""

    code = "inference_error"
    usage: Usage | None = None


class InferenceNotConfigured(InferenceError):
    """No inference endpoint is configured (AOS_INFERENCE_ENDPOINT is unset).

    Not a fault: callers decide with the deterministic scorer alone.
    """

    code = "inference_not_configured"


class InferenceUnavailableError(InferenceError):
    """The endpoint cannot be used now: the circuit is open, or retries ran out on 429, 5xx or
    connection errors. Callers fall back to the deterministic scorer."""

    code = "inference_unavailable"


class InferenceTimeoutError(InferenceUnavailableError):
    """The endpoint did not answer within AOS_INFERENCE_TIMEOUT_SECONDS (on every attempt)."""

    code = "inference_timeout"


class InferenceRequestError(InferenceError):
    """The endpoint refused the request (a 4xx other than 429): retrying would not help."""

    code = "inference_request_rejected"

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None):
        super().__init__(message, field=field)
        self.status = status


class AdapterUnavailableError(InferenceRequestError):
    """The endpoint could not load the requested adapter (LoRAX 424, OpenAI-style 404)."""

    code = "inference_adapter_unavailable"


class InferenceResponseError(InferenceError):
    """The endpoint answered 200 with a body that is not the documented response shape."""

    code = "inference_bad_response"
