"""Errors a user of AOS can hit. Each names what is wrong and what to do about it.

The shapes follow azure.core.exceptions: one base class, one subclass per kind of failure, so
callers (and the HTTP layer) can map them to status codes without parsing messages.
"""

from __future__ import annotations


class AOSError(Exception):
    """Base class. `code` is a stable machine-readable name; `field` names the input at fault."""

    code = "aos_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInputError(AOSError):
    """Input that breaks a rule; `field` names it and the message says what is allowed."""

    code = "invalid_input"


class ConfigurationError(AOSError):
    """A setting is missing or malformed; the message names the setting."""

    code = "configuration_error"


class NotFoundError(AOSError):
    code = "not_found"


class AlreadyExistsError(AOSError):
    code = "already_exists"


class ConcurrencyError(AOSError):
    """Someone else changed the record since it was read (ETag mismatch): read again, retry."""

    code = "concurrency_conflict"


class BusyError(AOSError):
    """At capacity for now (e.g. an agent's queue is full): try again later."""

    code = "busy"


class InvalidTransitionError(AOSError):
    """A lifecycle change that the agent's current state does not allow."""

    code = "invalid_transition"

    def __init__(self, current: str, requested: str) -> None:
        super().__init__(f"agent cannot go from '{current}' to '{requested}'", field="lifecycle")
        self.current = current
        self.requested = requested


class SchemaVersionError(AOSError):
    """Stored state was written by a newer AOS than this one (or is otherwise unreadable)."""

    code = "schema_version"


class AuthenticationError(AOSError):
    """The caller could not be identified: no credentials, or ones that are not valid (HTTP 401).

    `bearer_error` is the OAuth 2.0 error code for the `WWW-Authenticate: Bearer` challenge
    (RFC 6750): "invalid_token" when a bearer token was presented and rejected, None when the
    request carried no credentials this app accepts. The message never quotes a credential.
    """

    code = "unauthenticated"

    def __init__(
        self, message: str, *, field: str | None = None, bearer_error: str | None = "invalid_token"
    ) -> None:
        super().__init__(message, field=field)
        self.bearer_error = bearer_error


class PermissionDeniedError(AOSError):
    """The caller is known but lacks the role the operation needs (HTTP 403)."""

    code = "forbidden"


class AuditChainError(AOSError):
    """A stored chain is damaged (a row is missing or unreadable): `verify` says where."""

    code = "audit_chain_damaged"
