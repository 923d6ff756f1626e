"""The agent's data: definition, goals, events, alignment and decisions.

Pydantic v2 models at every boundary. Each rejects bad input with an error whose location names
the field; limits keep what travels through entities and orchestrations small.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 2000
MAX_ITEM_LENGTH = 500
MAX_EVENT_DATA_BYTES = 256 * 1024  # the Service Bus Standard message limit
MAX_OPTIONS = 20

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")


def check_slug(value: str) -> str:
    if len(value) > MAX_ID_LENGTH or not _SLUG.match(value):
        raise ValueError(
            f"must be a lowercase slug of at most {MAX_ID_LENGTH} characters "
            "(a-z, 0-9 and inner '-'), e.g. 'ceo' or 'sales-lead'"
        )
    return value


def _check_aware(value: datetime | None) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise ValueError("must include a time zone offset, e.g. 2026-01-31T09:00:00Z")
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


Slug = Annotated[str, AfterValidator(check_slug)]
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH)
]
Item = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ITEM_LENGTH)
]
AwareDatetime = Annotated[datetime, AfterValidator(_check_aware)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Model(BaseModel):
    """Base for AOS models: unknown fields are errors, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_assignment=True)


class McpServerRef(Model):
    """An external MCP server an agent may call tools on: a URL (streamable HTTP) or a command
    (stdio)."""

    name: Slug
    url: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=2000)] | None = None
    command: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        None, min_length=1, max_length=50
    )
    env: dict[str, str] = Field(default_factory=dict, max_length=50)
    timeout_seconds: float = Field(30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerRef:
        if (self.url is None) == (self.command is None):
            raise ValueError("give exactly one of url (streamable HTTP) or command (stdio)")
        return self


class ToolCall(Model):
    """A tool an action calls on one of the agent's MCP servers."""

    server: Slug
    tool: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    arguments: dict[str, Any] = Field(default_factory=dict)


class AgentDefinition(Model):
    """What an agent is for. Registered once; changes are explicit updates."""

    model_config = ConfigDict(frozen=True)

    agent_id: Slug
    purpose: Text
    purpose_scope: Annotated[str, StringConstraints(max_length=MAX_TEXT_LENGTH)] = ""
    success_criteria: list[Item] = Field(default_factory=list, max_length=20)
    constraints: list[Item] = Field(
        default_factory=list,
        max_length=20,
        description="Things the agent must never do; an action matching one scores near zero.",
    )
    role: Slug | None = None
    adapter_name: Slug | None = Field(None, description="LoRA adapter serving this agent's role.")
    subscriptions: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=50, description="Event types that wake this agent."
    )
    policies: list[Slug] = Field(default_factory=list, max_length=20)
    alignment_threshold: Fraction = Field(
        0.5, description="Alignment score at or above which an action counts as aligned."
    )
    mcp_servers: list[McpServerRef] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _unique_servers(self) -> AgentDefinition:
        names = [server.name for server in self.mcp_servers]
        if len(names) != len(set(names)):
            raise ValueError("mcp_servers names must be unique")
        return self


class GoalStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    ABANDONED = "abandoned"


class Goal(Model):
    goal_id: Slug
    description: Item
    progress: Fraction = 0.0
    status: GoalStatus = GoalStatus.ACTIVE
    created_at: AwareDatetime
    updated_at: AwareDatetime


class EventEnvelope(Model):
    """A CloudEvents 1.0 event, plus `correlationid` and W3C `traceparent`.

    CloudEvents extension attributes (lowercase alphanumeric names, scalar values) are kept.
    """

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    source: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    type: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    subject: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    time: AwareDatetime | None = None
    datacontenttype: str | None = "application/json"
    data: Any = None
    correlationid: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    traceparent: str | None = None

    @field_validator("traceparent")
    @classmethod
    def _check_traceparent(cls, value: str | None) -> str | None:
        if value is not None and not _TRACEPARENT.match(value):
            raise ValueError(
                "must be a W3C trace context 'traceparent' such as "
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )
        return value

    @field_validator("data")
    @classmethod
    def _check_data_size(cls, value: Any) -> Any:
        try:
            size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON-serialisable ({exc})") from None
        if size > MAX_EVENT_DATA_BYTES:
            raise ValueError(
                f"is {size} bytes; events carry at most {MAX_EVENT_DATA_BYTES} bytes of data: "
                "store large bodies in blob storage and send a reference"
            )
        return value

    @model_validator(mode="after")
    def _check_extensions(self) -> EventEnvelope:
        for name, value in (self.model_extra or {}).items():
            if not _EXTENSION_NAME.match(name):
                raise ValueError(
                    f"unknown attribute '{name}': CloudEvents extension names are 1-20 "
                    "lowercase letters or digits"
                )
            if value is not None and not isinstance(value, str | int | bool):
                raise ValueError(f"extension attribute '{name}' must be a string, integer or bool")
        return self


class AlignmentFactor(Model):
    """One part of an alignment score: how much the action matched, and which terms."""

    score: Fraction
    weight: Fraction
    matched: list[str] = Field(default_factory=list)


class Alignment(Model):
    """How well an action serves the agent's purpose, with the reasons."""

    action: Item
    score: Fraction
    threshold: Fraction
    aligned: bool
    reasons: list[str]
    factors: dict[str, AlignmentFactor]
    violations: list[str] = Field(
        default_factory=list, description="Constraints the action would break."
    )
    method: Literal["deterministic", "model", "combined"] = "deterministic"


class OutgoingMessage(Model):
    """A message an action sends to another agent (published to the agent-messages topic)."""

    to: Slug
    type: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    data: Any = None


class Option(Model):
    """A candidate action: what it is, what it would cost, and the messages and tool calls
    taking it would make."""

    action: Item
    messages: list[OutgoingMessage] = Field(default_factory=list, max_length=10)
    tool_calls: list[ToolCall] = Field(default_factory=list, max_length=10)
    cost: float = Field(
        0.0, ge=0, description="What taking it would spend; policies limit and gate on it."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return {"action": value} if isinstance(value, str) else value


class DecisionContext(Model):
    """What an agent is asked to decide: the situation and the candidate actions.

    Options are text, or objects with `action` and the `messages` that taking it would send.
    """

    situation: Annotated[str, StringConstraints(max_length=4000)] = ""
    options: list[Option] = Field(min_length=1, max_length=MAX_OPTIONS)
    event_id: str | None = None


class ScoredOption(Model):
    action: Item
    alignment: Alignment
    goals_advanced: list[Slug] = Field(default_factory=list)
    rank_score: Fraction
    messages: list[OutgoingMessage] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    cost: float = Field(0.0, ge=0)


class Decision(Model):
    """The outcome of `make_purpose_driven_decision`: what the agent chose and why.

    `outcome` is "act" when an option was aligned enough to take, "decline" when none was.
    """

    decision_id: Slug
    agent_id: Slug
    situation: str
    outcome: Literal["act", "decline"]
    chosen: str | None
    options: list[ScoredOption]
    reasons: list[str]
    method: Literal["deterministic", "model", "combined"] = "deterministic"
    event_id: str | None = None
    decided_at: AwareDatetime

    @property
    def messages(self) -> list[OutgoingMessage]:
        """The messages the chosen option sends (none when the agent declined)."""
        chosen = self._chosen_option()
        return chosen.messages if chosen else []

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The MCP tool calls the chosen option makes (none when the agent declined)."""
        chosen = self._chosen_option()
        return chosen.tool_calls if chosen else []

    @property
    def cost(self) -> float:
        """What the chosen option would spend (nothing when the agent declined)."""
        chosen = self._chosen_option()
        return chosen.cost if chosen else 0.0

    def summary(self) -> dict[str, Any]:
        """What an audit record keeps of a decision."""
        return {
            "decision_id": self.decision_id,
            "outcome": self.outcome,
            "chosen": self.chosen,
            "method": self.method,
            "cost": self.cost,
        }

    def _chosen_option(self) -> ScoredOption | None:
        return next((o for o in self.options if o.action == self.chosen), None)
