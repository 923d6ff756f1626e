"""Alignment is a real computation: matching actions score high, unrelated and forbidden low."""

from __future__ import annotations

import pytest

from aos.agents.alignment import DeterministicAlignmentScorer
from aos.agents.models import AgentDefinition

CEO = AgentDefinition(
    agent_id="ceo",
    purpose="Strategic oversight and company growth",
    purpose_scope="Strategic planning, major decisions",
    success_criteria=["Revenue growth", "Team expansion"],
    constraints=["Never disclose customer data"],
)
scorer = DeterministicAlignmentScorer()


@pytest.mark.parametrize(
    "action",
    [
        "Draft a strategic plan to grow revenue in Europe",
        "Plan company growth strategy for next year",
        "Decide on the strategic growth plan",
    ],
)
def test_matching_actions_are_aligned(action: str) -> None:
    alignment = scorer.score(action, CEO)
    assert alignment.aligned
    assert alignment.score >= 0.6
    assert alignment.factors["purpose"].matched


@pytest.mark.parametrize(
    "action",
    ["Order pizza for the office party", "Repaint the parking lot", "Update the printer drivers"],
)
def test_unrelated_actions_score_low(action: str) -> None:
    alignment = scorer.score(action, CEO)
    assert not alignment.aligned
    assert alignment.score <= 0.2
    assert "shares nothing with the purpose" in alignment.reasons


def test_forbidden_action_scores_near_zero_whatever_else_it_matches() -> None:
    alignment = scorer.score("Share customer data with a partner to grow revenue", CEO)
    assert alignment.violations == ["Never disclose customer data"]
    assert not alignment.aligned
    assert alignment.score < 0.1
    assert alignment.reasons[0] == "breaks constraint 'Never disclose customer data'"


def test_related_words_match_through_stems_and_synonyms() -> None:
    alignment = scorer.score("Recruit engineers to expand the team", CEO)
    criteria = alignment.factors["criteria"]
    assert criteria.score == 1.0
    assert set(criteria.matched) == {"team", "expansion"}


def test_more_on_purpose_scores_higher() -> None:
    partly = scorer.score("Draft a growth memo and order office chairs", CEO).score
    fully = scorer.score("Draft a strategic growth plan", CEO).score
    assert fully > partly > 0


def test_scores_are_repeatable_and_bounded() -> None:
    first = scorer.score("Strategic revenue growth plan", CEO)
    assert first == scorer.score("Strategic revenue growth plan", CEO)
    assert 0.0 <= first.score <= 1.0
    assert first.method == "deterministic"


def test_action_without_content_words_scores_zero() -> None:
    alignment = scorer.score("do it now", CEO)
    assert alignment.score == 0.0
    assert alignment.reasons == ["the action has no content words to assess"]


def test_threshold_comes_from_the_definition() -> None:
    strict = CEO.model_copy(update={"alignment_threshold": 0.95})
    assert not scorer.score("Draft a strategic plan to grow revenue", strict).aligned


def test_agent_without_scope_or_criteria_is_scored_on_purpose() -> None:
    bare = AgentDefinition(agent_id="support", purpose="Resolve customer support tickets quickly")
    alignment = scorer.score("Resolve the open support tickets", bare)
    assert set(alignment.factors) == {"purpose", "focus"}
    assert alignment.aligned
