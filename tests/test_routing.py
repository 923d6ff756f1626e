from aos.agents.models import AgentDefinition, EventEnvelope
from aos.agents.routing import route_event

AGENTS = [
    AgentDefinition(agent_id="cfo", purpose="p", subscriptions=["finance.*"]),
    AgentDefinition(agent_id="ceo", purpose="p", subscriptions=["board.request", "finance.q*"]),
    AgentDefinition(agent_id="cto", purpose="p"),
]


def event(type_: str, subject: str | None = None) -> EventEnvelope:
    return EventEnvelope(id="e", source="/s", type=type_, subject=subject)


def test_subject_names_the_one_agent() -> None:
    assert route_event(event("board.request", subject="cto"), AGENTS) == ["cto"]


def test_subject_naming_no_registered_agent_routes_nowhere() -> None:
    assert route_event(event("board.request", subject="ghost"), AGENTS) == []


def test_type_reaches_every_subscriber_by_exact_or_prefix_match() -> None:
    assert route_event(event("finance.quarter.closed"), AGENTS) == ["ceo", "cfo"]
    assert route_event(event("finance.invoice"), AGENTS) == ["cfo"]
    assert route_event(event("board.request"), AGENTS) == ["ceo"]
    assert route_event(event("hr.hire"), AGENTS) == []
