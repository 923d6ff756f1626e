"""Topic and subscription names, from settings (`Settings.events_topic`, `.messages_topic`,
`.subscription`):

- ``AOS_EVENTS_TOPIC`` (default ``aos-events``): events agents react to;
- ``AOS_MESSAGES_TOPIC`` (default ``aos-agent-messages``): agent-to-agent messages;
- ``AOS_SUBSCRIPTION`` (default ``aos``): the subscription AOS receives through on each topic
  (a comma-separated list gives several).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aos.errors import ConfigurationError
from aos.settings import Settings

DEFAULT_EVENTS_TOPIC = "aos-events"
DEFAULT_MESSAGES_TOPIC = "aos-agent-messages"
DEFAULT_SUBSCRIPTION = "aos"

Topology = Mapping[str, tuple[str, ...]]
"""Topic name -> the names of its subscriptions."""


@dataclass(frozen=True)
class Topics:
    events: str = DEFAULT_EVENTS_TOPIC
    messages: str = DEFAULT_MESSAGES_TOPIC
    subscriptions: tuple[str, ...] = (DEFAULT_SUBSCRIPTION,)

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        names = settings.subscription
        subscriptions = tuple(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
        if not subscriptions:
            raise ConfigurationError(
                "setting AOS_SUBSCRIPTION must name at least one subscription",
                field="AOS_SUBSCRIPTION",
            )
        topics = cls(
            events=settings.events_topic.strip() or DEFAULT_EVENTS_TOPIC,
            messages=settings.messages_topic.strip() or DEFAULT_MESSAGES_TOPIC,
            subscriptions=subscriptions,
        )
        if topics.events == topics.messages:
            raise ConfigurationError(
                f"settings AOS_EVENTS_TOPIC and AOS_MESSAGES_TOPIC both name '{topics.events}'; "
                "events and agent messages need topics of their own",
                field="AOS_MESSAGES_TOPIC",
            )
        return topics

    def topology(self) -> dict[str, tuple[str, ...]]:
        return {self.events: self.subscriptions, self.messages: self.subscriptions}
