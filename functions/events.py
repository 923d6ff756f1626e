"""Service Bus wake-up: external events and agent-to-agent messages arrive on two topics.

A malformed message raises with the reason (logged), so Service Bus retries it up to the
subscription's max delivery count and then dead-letters it; it is never retried forever.
"""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()


@bp.service_bus_topic_trigger(
    arg_name="message",
    topic_name="%AOS_EVENTS_TOPIC%",
    subscription_name="%AOS_SUBSCRIPTION%",
    connection="ServiceBusConnection",
)
@bp.durable_client_input(client_name="client")
async def on_event(message: func.ServiceBusMessage, client) -> None:
    from aos.wakeup import on_message

    await on_message(message, client, "event")


@bp.service_bus_topic_trigger(
    arg_name="message",
    topic_name="%AOS_MESSAGES_TOPIC%",
    subscription_name="%AOS_SUBSCRIPTION%",
    connection="ServiceBusConnection",
)
@bp.durable_client_input(client_name="client")
async def on_agent_message(message: func.ServiceBusMessage, client) -> None:
    from aos.wakeup import on_message

    await on_message(message, client, "agent message")
