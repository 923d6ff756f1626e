"""Errors of the messaging layer. Each names the message, field, topic or setting at fault."""

from __future__ import annotations

from aos.errors import AOSError


class MalformedMessageError(AOSError):
    """A message that is not a valid CloudEvent; `field` names the attribute or property at
    fault (e.g. ``source``, ``cloudEvents:source``, ``content_type``, ``body``).

    Retrying cannot fix it: a host dead-letters such a message instead of abandoning it.
    """

    code = "malformed_message"


class PublishError(AOSError):
    """Events could not be sent to a topic; the message names the topic (`field` is "topic")."""

    code = "publish_failed"

    def __init__(self, message: str, *, topic: str) -> None:
        super().__init__(message, field="topic")
        self.topic = topic


class MessageLockLostError(AOSError):
    """The peek-lock on a received message is gone (it expired and the message was received
    again, or the message was already settled): settle nothing, the message will be redelivered.
    """

    code = "message_lock_lost"
