"""Structured decisions: combined judgements, the JSON repair path, fallbacks, the turn entry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from aos.agents.agent import decide
from aos.agents.alignment import DeterministicAlignmentScorer
from aos.agents.models import AgentDefinition, DecisionContext, Goal
from aos.inference import (
    decide_for_turn,
    decide_with_model,
    evaluate_alignment,
)
from aos.inference.decisions import JudgementError, combine_alignment, parse_judgement
from aos.settings import Settings
from aos.storage.clients import StorageClients
from tests.inference.conftest import FakeTime, inference_settings, make_client
from tests.inference.fakeserver import FakeLorax, Reply

DEFINITION = AgentDefinition(
    agent_id="ceo",
    purpose="Grow revenue through customer growth",
    purpose_scope="sales and marketing",
    success_criteria=["Increase revenue by 10 percent"],
    constraints=["Never share customer data"],
    adapter_name="ceo",
)
CAMPAIGN = "Grow revenue with a new customer campaign"  # deterministic 0.72, aligned
SHARE = "Share customer data with partners to grow revenue"  # breaks the constraint
REPAINT = "Repaint the office"  # deterministic 0.0
EXPAND = "Expand sales marketing to new customers"  # deterministic 0.82, aligned
CONTEXT = DecisionContext(
    situation="Q3 planning", options=[CAMPAIGN, SHARE, REPAINT, EXPAND], event_id="e-1"
)
ADAPTERS = json.dumps({"ceo": "acme/ceo-lora"})
SCORER = DeterministicAlignmentScorer()


def judgement(choice: int | None, *scores: float) -> str:
    return json.dumps(
        {
            "choice": choice,
            "judgements": [
                {"option": i, "alignment": s, "reason": f"reason {i}"} for i, s in enumerate(scores)
            ],
        }
    )


def det(action: str) -> float:
    return SCORER.score(action, DEFINITION).score


async def test_combined_decision_reports_both_scores(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts(judgement(0, 0.9, 1.0, 0.1, 0.6))
    async with make_client(lorax.url, fake_time, adapters=ADAPTERS) as client:
        result = await decide_with_model(DEFINITION, [], CONTEXT, client, SCORER, "d-1")

    decision = result.decision
    assert decision.method == "combined" and result.model_used
    assert result.fallback_reason is None
    assert decision.outcome == "act" and decision.chosen == CAMPAIGN  # the model's choice
    assert decision.event_id == "e-1" and decision.decision_id == "d-1"
    by_action = {o.action: o for o in decision.options}
    campaign = by_action[CAMPAIGN].alignment
    assert campaign.method == "combined"
    assert campaign.score == pytest.approx(round(0.5 * 0.9 + 0.5 * det(CAMPAIGN), 4))
    assert campaign.factors["model"].score == 0.9
    assert campaign.factors["deterministic"].score == det(CAMPAIGN)
    assert "purpose" in campaign.factors  # the deterministic breakdown is kept
    assert any(
        "model 0.90" in r and f"deterministic {det(CAMPAIGN):.2f}" in r for r in campaign.reasons
    )
    assert "model: reason 0" in campaign.reasons
    assert decision.reasons[0].startswith(f"chose '{CAMPAIGN}' (combined alignment")
    assert "model judgement by adapter 'acme/ceo-lora'" in decision.reasons
    assert [o.rank_score for o in decision.options] == sorted(
        (o.rank_score for o in decision.options), reverse=True
    )
    assert result.usage.calls == 1 and result.usage.prompt_tokens == 11
    [request] = lorax.requests
    assert request.body["parameters"]["adapter_id"] == "acme/ceo-lora"
    prompt = request.body["inputs"]
    for text in (DEFINITION.purpose, "Never share customer data", "Q3 planning", f"[3] {EXPAND}"):
        assert text in prompt


async def test_a_forbidden_action_is_never_chosen(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts(judgement(1, 0.2, 1.0, 0.0, 0.3))
    async with make_client(lorax.url, fake_time, adapters=ADAPTERS) as client:
        result = await decide_with_model(DEFINITION, [], CONTEXT, client, SCORER, "d-2")
    decision = result.decision
    assert decision.method == "combined"
    assert decision.chosen != SHARE
    share = next(o for o in decision.options if o.action == SHARE).alignment
    assert not share.aligned and share.violations == ["Never share customer data"]
    assert share.score <= det(SHARE)  # the model's 1.0 cannot lift it
    assert any("breaks constraint 'Never share customer data'" in r for r in decision.reasons)
    # The model's choice refused, the best-ranked aligned option is taken (the campaign's
    # combined 0.5*0.2 + 0.5*0.72 is under the threshold; expansion's 0.5*0.3 + 0.5*0.82 is not).
    assert decision.chosen == decision.options[0].action == EXPAND


async def test_model_choice_below_threshold_is_not_taken(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts(judgement(2, 0.1, 0.0, 0.9, 0.9))  # REPAINT: 0.5*0.9 + 0.5*0 = 0.45 < 0.5
    async with make_client(lorax.url, fake_time) as client:
        result = await decide_with_model(DEFINITION, [], CONTEXT, client, SCORER, "d-3")
    decision = result.decision
    assert decision.chosen == EXPAND
    assert any("below the threshold" in r for r in decision.reasons)


async def test_model_can_make_the_agent_decline(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts(judgement(None, 0.0, 0.0, 0.0, 0.0))
    async with make_client(lorax.url, fake_time) as client:
        result = await decide_with_model(DEFINITION, [], CONTEXT, client, SCORER, "d-4")
    assert result.decision.outcome == "decline" and result.decision.chosen is None
    assert result.decision.method == "combined"
    assert "the model advised taking none of the options" in result.decision.reasons


async def test_goals_still_count_in_the_ranking(lorax: FakeLorax, fake_time: FakeTime):
    now = datetime.now(UTC)
    goal = Goal(goal_id="g-campaign", description="new campaign", created_at=now, updated_at=now)
    lorax.texts(judgement(None, 0.8, 0.0, 0.0, 0.8))
    async with make_client(lorax.url, fake_time) as client:
        result = await decide_with_model(DEFINITION, [goal], CONTEXT, client, SCORER, "d-5")
    campaign = next(o for o in result.decision.options if o.action == CAMPAIGN)
    assert campaign.goals_advanced == ["g-campaign"]
    assert "Active goals:\n- new campaign" in lorax.requests[0].body["inputs"]


async def test_bad_reply_then_good_reply(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts("I think option 0 is best.", judgement(3, 0.5, 0.0, 0.0, 0.9))
    async with make_client(lorax.url, fake_time, api="openai", adapters=ADAPTERS) as client:
        result = await decide_with_model(DEFINITION, [], CONTEXT, client, SCORER, "d-6")
    assert result.decision.method == "combined"
    assert result.decision.chosen == EXPAND
    assert "the model's first reply was invalid; its corrected reply was used" in (
        result.decision.reasons
    )
    assert result.usage.calls == 2
    first, second = lorax.requests
    messages = second.body["messages"]
    assert messages[: len(first.body["messages"])] == first.body["messages"]
    assert messages[-2] == {"role": "assistant", "content": "I think option 0 is best."}
    assert "the reply holds no JSON object" in messages[-1]["content"]
    assert second.body["model"] == "acme/ceo-lora"


async def test_bad_reply_twice_falls_back_to_the_scorer(lorax: FakeLorax, fake_time: FakeTime):
    incomplete = json.dumps({"choice": 0, "judgements": [{"option": 0, "alignment": 0.9}]})
    lorax.texts("Sure: {choice: 0}", incomplete)
    async with make_client(lorax.url, fake_time) as client:
        result = await decide_with_model(DEFINITION, [], CONTEXT, client, SCORER, "d-7")
    decision = result.decision
    assert decision.method == "deterministic" and not result.model_used
    expected = decide(DEFINITION, [], CONTEXT, SCORER, "d-7")
    assert decision.chosen == expected.chosen and decision.options == expected.options
    assert result.fallback_reason is not None
    assert "not a valid judgement twice" in result.fallback_reason
    assert "judgements.0.reason: Field required" in result.fallback_reason
    assert f"decided by the deterministic scorer alone: {result.fallback_reason}" in (
        decision.reasons
    )
    assert result.usage.calls == 2 and len(lorax.requests) == 2
    assert "not valid JSON" in lorax.requests[1].body["inputs"]


async def test_unavailable_endpoint_falls_back_to_the_scorer(lorax: FakeLorax, fake_time: FakeTime):
    lorax.default = Reply(status=503)
    async with make_client(lorax.url, fake_time, max_attempts="2") as client:
        result = await decide_with_model(DEFINITION, [], CONTEXT, client, SCORER, "d-8")
    assert result.decision.method == "deterministic"
    assert (result.fallback_reason or "").startswith("inference failed:")
    assert "HTTP 503" in (result.fallback_reason or "")
    assert result.usage.attempts == 2 and result.usage.calls == 0


async def test_adapter_fallback_is_recorded_in_the_decision(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts(judgement(0, 0.9, 0.0, 0.0, 0.5))
    async with make_client(lorax.url, fake_time) as client:  # no adapters mapped
        result = await decide_with_model(DEFINITION, [], CONTEXT, client, SCORER, "d-9")
    assert result.adapter is not None and result.adapter.fell_back
    assert any(
        r.startswith("adapter 'ceo' fell back to the base model: adapter 'ceo' is not mapped")
        for r in result.decision.reasons
    )


async def test_no_client_means_deterministic_with_the_reason():
    result = await decide_with_model(DEFINITION, [], CONTEXT, None, SCORER, "d-10")
    assert result.decision.method == "deterministic"
    assert "AOS_INFERENCE_ENDPOINT is unset" in (result.fallback_reason or "")
    assert result.usage.calls == 0


async def test_evaluate_alignment_combines_and_falls_back(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts(judgement(0, 0.4), "nope", "still nope")
    async with make_client(lorax.url, fake_time, adapters=ADAPTERS) as client:
        combined = await evaluate_alignment(CAMPAIGN, DEFINITION, client, SCORER)
        fallback = await evaluate_alignment(CAMPAIGN, DEFINITION, client, SCORER)
    alignment = combined.alignment
    assert alignment.method == "combined" and combined.model_used
    assert alignment.score == pytest.approx(round(0.5 * 0.4 + 0.5 * det(CAMPAIGN), 4))
    assert alignment.factors["model"].score == 0.4
    assert alignment.factors["deterministic"].score == det(CAMPAIGN)
    assert combined.usage.calls == 1
    assert fallback.alignment.method == "deterministic"
    assert fallback.alignment.score == det(CAMPAIGN)
    assert "not a valid judgement twice" in fallback.alignment.reasons[-2]
    assert fallback.usage.calls == 2
    none = await evaluate_alignment(CAMPAIGN, DEFINITION, None, SCORER)
    assert none.alignment.method == "deterministic" and none.fallback_reason


async def test_model_weight_setting(lorax: FakeLorax, fake_time: FakeTime):
    lorax.texts(judgement(0, 1.0))
    async with make_client(lorax.url, fake_time, model_weight="0.25") as client:
        result = await evaluate_alignment(REPAINT, DEFINITION, client, SCORER)
    assert result.alignment.score == 0.25
    assert result.alignment.factors["deterministic"].weight == 0.75


def test_combine_caps_a_violation_at_the_deterministic_score():
    deterministic = SCORER.score(SHARE, DEFINITION)
    combined = combine_alignment(deterministic, 1.0, "fine by me", 0.9)
    assert combined.score == deterministic.score and not combined.aligned
    assert combined.violations == deterministic.violations


@pytest.mark.parametrize(
    "text,count,message",
    [
        ("", 1, "holds no JSON object"),
        ("{oops}", 1, "not valid JSON"),
        ('{"judgements": []}', 1, "judgements: List should have at least 1 item"),
        (judgement(None, 0.5), 2, "missing: [1]"),
        (judgement(None, 0.5, 0.5, 0.5), 2, "judges [2]"),
        (judgement(5, 0.5), 1, "choice must be null or an option number from 0 to 0"),
        (judgement(None, 1.5), 1, "less than or equal to 1"),
        (
            json.dumps(
                {
                    "choice": 0,
                    "judgements": [
                        {"option": 0, "alignment": 0.1, "reason": "a"},
                        {"option": 0, "alignment": 0.2, "reason": "b"},
                    ],
                }
            ),
            1,
            "judged more than once: [0]",
        ),
    ],
)
def test_parse_judgement_errors(text: str, count: int, message: str):
    with pytest.raises(JudgementError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_judgement(text, count)


def test_parse_judgement_accepts_fences_and_surrounding_prose():
    body = judgement(0, 0.7)
    assert parse_judgement(f"```json\n{body}\n```", 1).choice == 0
    assert (
        parse_judgement(f"Here you go: {body} Hope that helps.", 1).judgements[0].alignment == 0.7
    )


# -- the turn entry point ------------------------------------------------------------------


async def test_decide_for_turn_without_endpoint(settings: Settings, clients: StorageClients):
    result = await decide_for_turn(settings, clients, DEFINITION, [], CONTEXT, "d-11")
    assert result.decision.method == "deterministic" and not result.model_used
    assert "AOS_INFERENCE_ENDPOINT" in (result.fallback_reason or "")


async def test_decide_for_turn_uses_the_settings_and_the_cache(
    lorax: FakeLorax, settings: Settings, clients: StorageClients
):
    lorax.default = Reply(text=judgement(3, 0.5, 0.0, 0.0, 0.9))
    turn_settings = inference_settings(lorax.url, settings, adapters=ADAPTERS)
    first = await decide_for_turn(turn_settings, clients, DEFINITION, [], CONTEXT, "d-12")
    second = await decide_for_turn(turn_settings, clients, DEFINITION, [], CONTEXT, "d-12")

    assert first.decision.method == second.decision.method == "combined"
    assert first.decision.chosen == second.decision.chosen == EXPAND
    assert first.usage.calls == 1 and first.usage.cache_hits == 0
    assert second.usage.calls == 0 and second.usage.cache_hits == 1
    assert len(lorax.requests) == 1
    assert lorax.requests[0].body["parameters"]["adapter_id"] == "acme/ceo-lora"


async def test_decide_for_turn_does_not_cache_invalid_replies(
    lorax: FakeLorax, settings: Settings, clients: StorageClients
):
    lorax.texts("garbage", "garbage again", judgement(0, 0.9, 0.0, 0.0, 0.1))
    turn_settings = inference_settings(lorax.url, settings)
    first = await decide_for_turn(turn_settings, clients, DEFINITION, [], CONTEXT, "d-13")
    second = await decide_for_turn(turn_settings, clients, DEFINITION, [], CONTEXT, "d-13")
    assert first.decision.method == "deterministic"
    assert second.decision.method == "combined"  # asked again, not replayed from the cache
    assert len(lorax.requests) == 3
