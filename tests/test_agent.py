"""PurposeDrivenAgent's public API, persisting to a real Azurite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from aos.agents import EventEnvelope, Lifecycle, PurposeDrivenAgent
from aos.errors import AOSError, InvalidTransitionError
from aos.settings import Settings
from aos.storage.store import AgentStore


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[AgentStore]:
    async with AgentStore.from_settings(settings) as agent_store:
        yield agent_store


def ceo(store: AgentStore, **changes: object) -> PurposeDrivenAgent:
    kwargs = {
        "agent_id": "ceo",
        "purpose": "Strategic oversight and company growth",
        "purpose_scope": "Strategic planning, major decisions",
        "success_criteria": ["Revenue growth", "Team expansion"],
        "adapter_name": "ceo",
        "constraints": ["Never disclose customer data"],
        **changes,
    }
    return PurposeDrivenAgent(**kwargs, store=store)


def decision_event(event_id: str, *options: str) -> EventEnvelope:
    return EventEnvelope(
        id=event_id,
        source="/board",
        type="board.request",
        data={"situation": "The board asks for a plan", "options": list(options)},
    )


async def started(store: AgentStore) -> PurposeDrivenAgent:
    agent = ceo(store)
    await agent.initialize()
    await agent.start()
    return agent


async def test_seed_usage_persists_across_a_restart(store: AgentStore, settings: Settings) -> None:
    agent = ceo(store)
    await agent.initialize()
    await agent.start()
    goal_id = await agent.add_goal("Increase revenue by 50%")
    await agent.update_goal_progress(goal_id, 0.25)

    async with AgentStore.from_settings(settings) as fresh_store:
        again = ceo(fresh_store)
        await again.initialize()
        status = await again.get_purpose_status()

    assert status.lifecycle is Lifecycle.SLEEPING
    assert [(g.goal_id, g.progress) for g in status.goals] == [(goal_id, 0.25)]
    assert status.overall_progress == 0.25


async def test_initialize_twice_registers_once(store: AgentStore) -> None:
    await ceo(store).initialize()
    await ceo(store).initialize()
    page = await store.registry.list()
    assert [r.agent_id for r in page.items] == ["ceo"]


async def test_changed_definition_replaces_the_stored_one(store: AgentStore) -> None:
    await started(store)
    refined = ceo(store, purpose="Strategic oversight, growth and culture")
    await refined.initialize()

    record = await store.registry.get("ceo")
    assert record.definition.purpose == "Strategic oversight, growth and culture"
    assert record.state.lifecycle is Lifecycle.SLEEPING


async def test_start_and_stop_follow_the_lifecycle(store: AgentStore) -> None:
    agent = await started(store)
    await agent.start()  # already live: no-op
    await agent.stop()
    assert (await store.registry.get("ceo")).state.lifecycle is Lifecycle.PAUSED
    await agent.start()
    await agent.retire()
    with pytest.raises(InvalidTransitionError, match="'retired' to 'sleeping'"):
        await agent.start()


async def test_evaluate_purpose_alignment_accepts_text_or_mapping(store: AgentStore) -> None:
    agent = await started(store)
    from_text = await agent.evaluate_purpose_alignment("Draft a strategic growth plan")
    from_mapping = await agent.evaluate_purpose_alignment(
        {"action": "Draft a strategic growth plan"}
    )
    assert from_text == from_mapping
    assert from_text.aligned
    with pytest.raises(AOSError) as raised:
        await agent.evaluate_purpose_alignment({"cost": 3})
    assert raised.value.field == "action"


async def test_decision_picks_the_aligned_option_and_credits_goals(store: AgentStore) -> None:
    agent = await started(store)
    await agent.add_goal("Expand the engineering team", goal_id="team")

    decision = await agent.make_purpose_driven_decision(
        {
            "situation": "Q3 budget is approved",
            "options": [
                "Order pizza for the office",
                "Share customer data with a partner for revenue growth",
                "Recruit engineers to expand the team",
            ],
        }
    )

    assert decision.outcome == "act"
    assert decision.chosen == "Recruit engineers to expand the team"
    assert decision.options[0].goals_advanced == ["team"]
    assert decision.options[-1].alignment.violations or decision.options[-1].rank_score < 0.2
    assert agent.state.counters.decisions == 1


async def test_decision_declines_when_nothing_is_aligned(store: AgentStore) -> None:
    agent = await started(store)
    decision = await agent.make_purpose_driven_decision(
        {"options": ["Order pizza", "Repaint the parking lot"]}
    )
    assert decision.outcome == "decline"
    assert decision.chosen is None
    assert "no option reached the alignment threshold" in decision.reasons[0]


async def test_decision_context_is_validated(store: AgentStore) -> None:
    agent = await started(store)
    with pytest.raises(ValidationError, match="options"):
        await agent.make_purpose_driven_decision({"situation": "no options"})


async def test_event_turn_records_history_and_outcome(store: AgentStore) -> None:
    agent = await started(store)
    result = await agent.handle_event(
        decision_event("e-1", "Order pizza", "Draft a strategic plan to grow revenue")
    )

    assert result.decision is not None
    assert result.decision.chosen == "Draft a strategic plan to grow revenue"
    stored = await store.context.get_event("ceo", "e-1")
    assert stored.outcome is not None
    assert stored.outcome["chosen"] == "Draft a strategic plan to grow revenue"
    state = (await store.registry.get("ceo")).state
    assert state.lifecycle is Lifecycle.SLEEPING
    assert state.counters.events_received == 1
    assert state.counters.actions_taken == 1


async def test_duplicate_event_has_one_effect(store: AgentStore) -> None:
    agent = await started(store)
    event = decision_event("e-1", "Draft a strategic plan")
    await agent.handle_event(event)
    again = await agent.handle_event(event)

    assert again.duplicate is True
    state = (await store.registry.get("ceo")).state
    assert state.counters.events_received == 1
    assert state.counters.decisions == 1
    assert state.counters.duplicates_dropped == 1
    assert len((await store.context.list_events("ceo")).items) == 1


async def test_informational_event_is_observed_without_a_decision(store: AgentStore) -> None:
    agent = await started(store)
    result = await agent.handle_event(
        EventEnvelope(id="e-2", source="/crm", type="deal.closed", data={"amount": 10})
    )
    assert result.decision is None
    assert result.outcome["status"] == "observed"


async def test_paused_agent_refuses_events_and_writes_nothing(store: AgentStore) -> None:
    agent = await started(store)
    await agent.stop()
    with pytest.raises(InvalidTransitionError, match="'paused' to 'awake'"):
        await agent.handle_event(decision_event("e-3", "Plan growth"))
    assert (await store.context.list_events("ceo")).items == []


async def test_malformed_decision_event_writes_nothing(store: AgentStore) -> None:
    agent = await started(store)
    bad = EventEnvelope(id="e-4", source="/s", type="t", data={"options": []})
    with pytest.raises(AOSError) as raised:
        await agent.handle_event(bad)
    assert raised.value.field == "data"
    assert (await store.context.list_events("ceo")).items == []


async def test_concurrent_writers_do_not_lose_updates(store: AgentStore) -> None:
    first = await started(store)
    second = ceo(store)
    await second.initialize()  # both now hold the same etag

    await first.add_goal("Grow revenue", goal_id="revenue")
    await second.add_goal("Expand the team", goal_id="team")  # stale etag: reloads, reapplies

    goals = (await store.registry.get("ceo")).state.goals
    assert {g.goal_id for g in goals} == {"revenue", "team"}


async def test_using_an_agent_before_initialize_is_a_clear_error(store: AgentStore) -> None:
    with pytest.raises(AOSError, match="await initialize"):
        await ceo(store).add_goal("x")


async def test_turn_broken_off_after_history_write_completes_on_redelivery(
    store: AgentStore,
) -> None:
    agent = await started(store)
    event = decision_event("e-5", "Draft a strategic plan")
    await store.context.append_event("ceo", event)  # an earlier attempt died right after this

    result = await agent.handle_event(event)

    assert result.duplicate is False
    assert (await store.context.get_event("ceo", "e-5")).outcome is not None
    assert (await store.registry.get("ceo")).state.counters.events_received == 1


async def test_turn_broken_off_before_outcome_is_counted_once(
    store: AgentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await started(store)
    event = decision_event("e-6", "Draft a strategic plan")
    real_record_outcome = store.context.record_outcome

    async def crash(*args: object) -> None:
        raise ConnectionError("storage went away")

    monkeypatch.setattr(store.context, "record_outcome", crash)
    with pytest.raises(ConnectionError):
        await agent.handle_event(event)
    monkeypatch.setattr(store.context, "record_outcome", real_record_outcome)

    result = await agent.handle_event(event)
    await agent.handle_event(event)

    assert result.duplicate is False
    state = (await store.registry.get("ceo")).state
    assert (state.counters.events_received, state.counters.decisions) == (1, 1)
    assert state.counters.duplicates_dropped == 1
    assert (await store.context.get_event("ceo", "e-6")).outcome is not None
