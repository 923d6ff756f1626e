"""Structured decisions: the agent's model judges each option, the deterministic scorer guards.

The model (the agent's LoRA adapter on the shared base model) is asked for one JSON object::

    {"choice": <index of the option to take, or null>,
     "judgements": [{"option": <index>, "alignment": <0.0..1.0>, "reason": "<one sentence>"}]}

validated by `ModelJudgement`. A reply that does not parse or validate is asked for again ONCE,
with the validation error in the prompt; if that fails too, the deterministic scorer decides and
the decision says why. Likewise when the endpoint is unavailable or not configured.

Combining (method "combined"): each option's alignment is
``w * model + (1 - w) * deterministic`` (w = AOS_INFERENCE_MODEL_WEIGHT, 0.5 by default), with
both scores in its reasons and factors. An option that breaks a constraint (the deterministic
scorer's `violations`) keeps at most its deterministic score and is never chosen, whatever the
model says. The model's `choice` is taken when that option is aligned; otherwise the best-ranked
aligned option is, as in `aos.agents.agent.decide`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aos.agents.agent import GOAL_WEIGHT, decide, rank_options
from aos.agents.alignment import DeterministicAlignmentScorer
from aos.agents.models import (
    AgentDefinition,
    Alignment,
    AlignmentFactor,
    Decision,
    DecisionContext,
    Goal,
    Option,
    ScoredOption,
    utcnow,
)
from aos.inference.accounting import Usage
from aos.inference.adapters import AdapterSelection
from aos.inference.cache import ResponseCache
from aos.inference.client import ChatMessage, InferenceClient, shared_client
from aos.inference.config import InferenceConfig
from aos.inference.errors import InferenceError, InferenceUnavailableError
from aos.settings import Settings
from aos.storage.clients import StorageClients

logger = logging.getLogger(__name__)

MAX_REASON_CHARS = 500
MAX_ECHOED_REPLY_CHARS = 4000
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


# -- the reply's shape ----------------------------------------------------------------------


class OptionJudgement(BaseModel):
    model_config = ConfigDict(extra="ignore")

    option: int = Field(ge=0)
    alignment: float = Field(ge=0.0, le=1.0)
    reason: str = Field(min_length=1, max_length=2000)


class ModelJudgement(BaseModel):
    """The model's judgement of every option, and the option it would take (None: none)."""

    model_config = ConfigDict(extra="ignore")

    choice: int | None = None
    judgements: list[OptionJudgement] = Field(min_length=1)


JUDGEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "choice": {"type": ["integer", "null"], "minimum": 0},
        "judgements": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "option": {"type": "integer", "minimum": 0},
                    "alignment": {"type": "number", "minimum": 0, "maximum": 1},
                    "reason": {"type": "string"},
                },
                "required": ["option", "alignment", "reason"],
            },
        },
    },
    "required": ["choice", "judgements"],
}


class JudgementError(ValueError):
    """A reply that is not a valid judgement; the message says what is wrong, for the retry."""


def parse_judgement(text: str, option_count: int) -> ModelJudgement:
    """The judgement in a reply (a bare JSON object, or one in a ``` fence), checked against the
    number of options: every option judged exactly once, `choice` one of them or null."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1)
    if not candidate.startswith("{"):
        start, end = candidate.find("{"), candidate.rfind("}")
        if start == -1 or end <= start:
            raise JudgementError("the reply holds no JSON object")
        candidate = candidate[start : end + 1]
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise JudgementError(
            f"the reply is not valid JSON: {exc.msg} at column {exc.colno}"
        ) from None
    try:
        judgement = ModelJudgement.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'reply'}: {error['msg']}"
            for error in exc.errors()[:3]
        )
        raise JudgementError(f"the JSON does not have the required shape: {problems}") from None
    judged = [j.option for j in judgement.judgements]
    outside = sorted({i for i in judged if i >= option_count})
    if outside:
        raise JudgementError(
            f"options are numbered 0 to {option_count - 1}, but the reply judges {outside}"
        )
    twice = sorted({i for i in judged if judged.count(i) > 1})
    if twice:
        raise JudgementError(f"each option must be judged once; judged more than once: {twice}")
    missing = sorted(set(range(option_count)) - set(judged))
    if missing:
        raise JudgementError(f"every option must be judged; missing: {missing}")
    if judgement.choice is not None and judgement.choice >= option_count:
        raise JudgementError(
            f"choice must be null or an option number from 0 to {option_count - 1}, "
            f"not {judgement.choice}"
        )
    return judgement


def _is_valid(option_count: int) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            parse_judgement(text, option_count)
        except JudgementError:
            return False
        return True

    return check


# -- prompts --------------------------------------------------------------------------------

_SYSTEM = (
    "You judge how well candidate actions serve an agent's purpose. You answer with one JSON "
    "object and nothing else: no prose, no code fence."
)


def judgement_messages(
    definition: AgentDefinition, goals: Iterable[Goal], context: DecisionContext
) -> list[ChatMessage]:
    """The conversation that asks for a judgement of the context's options."""
    lines = [
        f"Agent: {definition.agent_id}" + (f" (role: {definition.role})" if definition.role else "")
    ]
    lines.append(f"Purpose: {definition.purpose}")
    if definition.purpose_scope:
        lines.append(f"Scope: {definition.purpose_scope}")
    if definition.success_criteria:
        lines.append("Success criteria:")
        lines.extend(f"- {c}" for c in definition.success_criteria)
    if definition.constraints:
        lines.append("Constraints (the agent must never do these):")
        lines.extend(f"- {c}" for c in definition.constraints)
    goals = list(goals)
    if goals:
        lines.append("Active goals:")
        lines.extend(f"- {g.description} (progress {g.progress:.0%})" for g in goals)
    if context.situation:
        lines.append(f"Situation: {context.situation}")
    last = len(context.options) - 1
    lines.append(f"Options (numbered 0 to {last}):")
    lines.extend(f"[{i}] {option.action}" for i, option in enumerate(context.options))
    lines.append(
        "Judge every option once: alignment 1.0 means it fully serves the purpose, 0.0 that it "
        "works against it or breaks a constraint. Set choice to the number of the option the "
        "agent should take, or null if it should take none. Reply with exactly this JSON shape:\n"
        '{"choice": <option number or null>, "judgements": [{"option": <option number>, '
        '"alignment": <0.0 to 1.0>, "reason": "<one sentence>"}]}'
    )
    return [
        ChatMessage(role="system", content=_SYSTEM),
        ChatMessage(role="user", content="\n".join(lines)),
    ]


def repair_messages(
    messages: Sequence[ChatMessage], reply: str, error: str, option_count: int
) -> list[ChatMessage]:
    """The conversation again, with the bad reply and what was wrong with it."""
    return [
        *messages,
        ChatMessage(role="assistant", content=reply[:MAX_ECHOED_REPLY_CHARS]),
        ChatMessage(
            role="user",
            content=(
                f"That reply could not be used: {error}. Reply again with only the JSON object "
                f"in the required shape, judging each option from 0 to {option_count - 1} "
                "exactly once."
            ),
        ),
    ]


# -- results ----------------------------------------------------------------------------------


class ModelDecision(BaseModel):
    """A decision and what it cost. `model_used` is False when the deterministic scorer decided
    alone; `fallback_reason` then says why."""

    decision: Decision
    usage: Usage = Field(default_factory=Usage)
    adapter: AdapterSelection | None = None
    model_used: bool = False
    fallback_reason: str | None = None
    endpoint_unavailable: bool = Field(
        False,
        description="The endpoint could not be reached or its circuit is open: a turn may "
        "keep its event for later instead of deciding without the model.",
    )


class ModelAlignment(BaseModel):
    """An alignment judgement and what it cost (see ModelDecision)."""

    alignment: Alignment
    usage: Usage = Field(default_factory=Usage)
    adapter: AdapterSelection | None = None
    model_used: bool = False
    fallback_reason: str | None = None


class _Judged(BaseModel):
    judgement: ModelJudgement | None
    usage: Usage
    adapter: AdapterSelection | None
    failure: str | None = None
    repaired: bool = False
    unavailable: bool = False  # the endpoint could not be used at all (circuit open, down)


async def request_judgement(
    definition: AgentDefinition,
    goals: Iterable[Goal],
    context: DecisionContext,
    client: InferenceClient,
    *,
    cache: ResponseCache | None = None,
) -> _Judged:
    """Ask the agent's adapter for a judgement; one repair round; never raises InferenceError."""
    count = len(context.options)
    messages = judgement_messages(definition, goals, context)
    adapter = client.select_adapter(definition)
    usage = Usage()
    valid = _is_valid(count)
    try:
        first = await client.generate(
            messages,
            adapter=adapter,
            response_schema=JUDGEMENT_SCHEMA,
            cache=cache,
            cache_if=valid,
        )
    except InferenceError as exc:
        return _Judged(
            judgement=None,
            usage=usage + (exc.usage or Usage()),
            adapter=adapter,
            failure=f"inference failed: {exc.message}",
            unavailable=isinstance(exc, InferenceUnavailableError),
        )
    usage += first.usage
    adapter = first.adapter
    try:
        return _Judged(judgement=parse_judgement(first.text, count), usage=usage, adapter=adapter)
    except JudgementError as exc:
        first_error = str(exc)
    logger.info(
        "inference: reply for %s was not a valid judgement (%s); asking again",
        definition.agent_id,
        first_error,
    )
    try:
        second = await client.generate(
            repair_messages(messages, first.text, first_error, count),
            adapter=adapter,
            response_schema=JUDGEMENT_SCHEMA,
            cache=cache,
            cache_if=valid,
        )
    except InferenceError as exc:
        return _Judged(
            judgement=None,
            usage=usage + (exc.usage or Usage()),
            adapter=adapter,
            failure=f"the model's reply was not a valid judgement ({first_error}) and the retry "
            f"failed: {exc.message}",
        )
    usage += second.usage
    adapter = second.adapter
    try:
        judgement = parse_judgement(second.text, count)
    except JudgementError as exc:
        failure = (
            f"the model's reply was not a valid judgement twice: first {first_error}; then {exc}"
        )
        logger.warning("inference: %s: %s", definition.agent_id, failure)
        return _Judged(judgement=None, usage=usage, adapter=adapter, failure=failure)
    return _Judged(judgement=judgement, usage=usage, adapter=adapter, repaired=True)


# -- combining --------------------------------------------------------------------------------


def combine_alignment(
    deterministic: Alignment, model_score: float, model_reason: str, model_weight: float
) -> Alignment:
    """One combined alignment from the model's score and the deterministic one, both reported.

    A constraint violation caps the result at the deterministic score and makes it unaligned.
    """
    weight = model_weight
    score = weight * model_score + (1 - weight) * deterministic.score
    if deterministic.violations:
        score = min(score, deterministic.score)
    score = round(min(1.0, max(0.0, score)), 4)
    reasons = [
        f"combined alignment {score:.2f} = {weight:.2f} x model {model_score:.2f} + "
        f"{1 - weight:.2f} x deterministic {deterministic.score:.2f}"
    ]
    if deterministic.violations:
        reasons.append(
            "breaks a constraint, so the model's judgement cannot raise it and it is never taken"
        )
    reasons.append(f"model: {model_reason.strip()[:MAX_REASON_CHARS]}")
    reasons.extend(f"deterministic: {reason}" for reason in deterministic.reasons)
    factors = {
        "model": AlignmentFactor(score=model_score, weight=weight),
        "deterministic": AlignmentFactor(score=deterministic.score, weight=1 - weight),
        **deterministic.factors,
    }
    return Alignment(
        action=deterministic.action,
        score=score,
        threshold=deterministic.threshold,
        aligned=score >= deterministic.threshold and not deterministic.violations,
        reasons=reasons,
        factors=factors,
        violations=deterministic.violations,
        method="combined",
    )


def _scored_in_order(
    definition: AgentDefinition,
    goals: list[Goal],
    context: DecisionContext,
    scorer: DeterministicAlignmentScorer,
) -> list[ScoredOption]:
    """The deterministic scoring of each option, in the context's order (rank_options sorts)."""
    return [
        rank_options(definition, goals, context.model_copy(update={"options": [option]}), scorer)[0]
        for option in context.options
    ]


def combined_decision(
    definition: AgentDefinition,
    goals: Iterable[Goal],
    context: DecisionContext,
    scorer: DeterministicAlignmentScorer,
    decision_id: str,
    judgement: ModelJudgement,
    model_weight: float = 0.5,
    notes: Sequence[str] = (),
) -> Decision:
    """The decision from a valid model judgement combined with the deterministic scores."""
    goals = list(goals)
    deterministic = _scored_in_order(definition, goals, context, scorer)
    by_option = {j.option: j for j in judgement.judgements}
    scored: list[ScoredOption] = []
    for index, det in enumerate(deterministic):
        judged = by_option[index]
        alignment = combine_alignment(det.alignment, judged.alignment, judged.reason, model_weight)
        if det.alignment.violations:
            rank = alignment.score
        else:
            goal_part = det.rank_score - (1 - GOAL_WEIGHT) * det.alignment.score
            rank = (1 - GOAL_WEIGHT) * alignment.score + max(0.0, goal_part)
        scored.append(
            det.model_copy(
                update={"alignment": alignment, "rank_score": round(min(1.0, max(0.0, rank)), 4)}
            )
        )
    ranked = sorted(scored, key=lambda s: s.rank_score, reverse=True)

    advice: list[str] = []
    chosen: ScoredOption | None = None
    if judgement.choice is not None:
        pick = scored[judgement.choice]
        if pick.alignment.aligned:
            chosen = pick
            advice.append(f"the model advised '{pick.action}' and it is aligned")
        elif pick.alignment.violations:
            advice.append(
                f"the model advised '{pick.action}', but it breaks constraint "
                f"'{pick.alignment.violations[0]}', so it is not taken"
            )
        else:
            advice.append(
                f"the model advised '{pick.action}', but its combined alignment "
                f"{pick.alignment.score:.2f} is below the threshold "
                f"{definition.alignment_threshold:.2f}"
            )
    else:
        advice.append("the model advised taking none of the options")
    if chosen is None:
        chosen = next((s for s in ranked if s.alignment.aligned), None)

    if chosen is None:
        best = ranked[0]
        reasons = [
            f"no option reached the alignment threshold {definition.alignment_threshold:.2f}; "
            f"the best was '{best.action}' at {best.alignment.score:.2f} (combined)",
            *advice,
            *best.alignment.reasons,
        ]
        outcome, action = "decline", None
    else:
        factors = chosen.alignment.factors
        reasons = [
            f"chose '{chosen.action}' (combined alignment {chosen.alignment.score:.2f}: model "
            f"{factors['model'].score:.2f}, deterministic {factors['deterministic'].score:.2f})",
            *advice,
            *chosen.alignment.reasons,
        ]
        if chosen.goals_advanced:
            reasons.append(f"advances goal(s) {', '.join(chosen.goals_advanced)}")
        outcome, action = "act", chosen.action
    return Decision(
        decision_id=decision_id,
        agent_id=definition.agent_id,
        situation=context.situation,
        outcome=outcome,
        chosen=action,
        options=ranked,
        reasons=[*reasons, *notes],
        method="combined",
        event_id=context.event_id,
        decided_at=utcnow(),
    )


def deterministic_decision(
    definition: AgentDefinition,
    goals: Iterable[Goal],
    context: DecisionContext,
    scorer: DeterministicAlignmentScorer,
    decision_id: str,
    why: str,
    notes: Sequence[str] = (),
) -> Decision:
    """`decide` by the deterministic scorer alone, recording why the model did not take part."""
    decision = decide(definition, goals, context, scorer, decision_id)
    reasons = [*decision.reasons, f"decided by the deterministic scorer alone: {why}", *notes]
    return decision.model_copy(update={"reasons": reasons, "method": "deterministic"})


def _adapter_notes(adapter: AdapterSelection | None) -> list[str]:
    if adapter is None:
        return []
    if adapter.fell_back:
        return [f"adapter '{adapter.adapter_name}' fell back to the base model: {adapter.reason}"]
    if adapter.adapter_id is not None:
        return [f"model judgement by adapter '{adapter.adapter_id}'"]
    return ["model judgement by the base model (the agent names no adapter)"]


# -- the entry points -------------------------------------------------------------------------


async def decide_with_model(
    definition: AgentDefinition,
    goals: Iterable[Goal],
    context: DecisionContext,
    client: InferenceClient | None,
    scorer: DeterministicAlignmentScorer,
    decision_id: str,
    *,
    cache: ResponseCache | None = None,
) -> ModelDecision:
    """Decide with the agent's model and the deterministic scorer ("combined"), or with the scorer
    alone ("deterministic") when there is no client or the model gave no valid judgement."""
    goals = list(goals)
    if client is None:
        why = "inference is not configured (AOS_INFERENCE_ENDPOINT is unset)"
        return ModelDecision(
            decision=deterministic_decision(definition, goals, context, scorer, decision_id, why),
            fallback_reason=why,
        )
    judged = await request_judgement(definition, goals, context, client, cache=cache)
    notes = _adapter_notes(judged.adapter)
    if judged.judgement is None:
        why = judged.failure or "the model gave no judgement"
        decision = deterministic_decision(
            definition, goals, context, scorer, decision_id, why, notes
        )
        return ModelDecision(
            decision=decision,
            usage=judged.usage,
            adapter=judged.adapter,
            fallback_reason=why,
            endpoint_unavailable=judged.unavailable,
        )
    if judged.repaired:
        notes.append("the model's first reply was invalid; its corrected reply was used")
    decision = combined_decision(
        definition,
        goals,
        context,
        scorer,
        decision_id,
        judged.judgement,
        client.config.model_weight,
        notes,
    )
    return ModelDecision(
        decision=decision, usage=judged.usage, adapter=judged.adapter, model_used=True
    )


async def evaluate_alignment(
    action: str,
    definition: AgentDefinition,
    client: InferenceClient | None,
    scorer: DeterministicAlignmentScorer,
    *,
    cache: ResponseCache | None = None,
) -> ModelAlignment:
    """How well one action serves the agent: model and deterministic scores combined (both in
    the reasons and factors), or the deterministic score alone with the reason why."""
    deterministic = scorer.score(action, definition)
    if client is None:
        why = "inference is not configured (AOS_INFERENCE_ENDPOINT is unset)"
        return ModelAlignment(
            alignment=_with_reason(deterministic, f"deterministic scorer alone: {why}"),
            fallback_reason=why,
        )
    context = DecisionContext(options=[Option(action=action)])
    judged = await request_judgement(definition, [], context, client, cache=cache)
    if judged.judgement is None:
        why = judged.failure or "the model gave no judgement"
        alignment = _with_reason(deterministic, f"deterministic scorer alone: {why}")
        for note in _adapter_notes(judged.adapter):
            alignment = _with_reason(alignment, note)
        return ModelAlignment(
            alignment=alignment, usage=judged.usage, adapter=judged.adapter, fallback_reason=why
        )
    judgement = judged.judgement.judgements[0]
    alignment = combine_alignment(
        deterministic, judgement.alignment, judgement.reason, client.config.model_weight
    )
    for note in _adapter_notes(judged.adapter):
        alignment = _with_reason(alignment, note)
    return ModelAlignment(
        alignment=alignment, usage=judged.usage, adapter=judged.adapter, model_used=True
    )


def _with_reason(alignment: Alignment, reason: str) -> Alignment:
    return alignment.model_copy(update={"reasons": [*alignment.reasons, reason]})


async def align_for_agent(
    settings: Settings,
    clients: StorageClients | None,
    action: str,
    definition: AgentDefinition,
    *,
    scorer: DeterministicAlignmentScorer | None = None,
) -> ModelAlignment:
    """`evaluate_alignment` with the endpoint, adapter and cache the settings name (no cache
    without storage clients)."""
    scorer = scorer or DeterministicAlignmentScorer()
    config = InferenceConfig.from_settings(settings)
    if not config.enabled:
        return await evaluate_alignment(action, definition, None, scorer)
    cache = ResponseCache.from_settings(settings, clients, config) if clients else None
    return await evaluate_alignment(action, definition, shared_client(config), scorer, cache=cache)


async def decide_for_turn(
    settings: Settings,
    clients: StorageClients | None,
    definition: AgentDefinition,
    goals: Iterable[Goal],
    context: DecisionContext,
    decision_id: str,
    *,
    scorer: DeterministicAlignmentScorer | None = None,
) -> ModelDecision:
    """What an agent turn calls: the settings pick the endpoint, adapter and cache.

    Without AOS_INFERENCE_ENDPOINT the deterministic scorer decides (and the decision says so).
    A malformed AOS_INFERENCE_* setting raises ConfigurationError naming it; an endpoint that
    fails never does — the decision falls back and records why. Add `usage` to the agent's
    counters.
    """
    scorer = scorer or DeterministicAlignmentScorer()
    config = InferenceConfig.from_settings(settings)
    if not config.enabled:
        return await decide_with_model(definition, goals, context, None, scorer, decision_id)
    client = shared_client(config)
    cache = ResponseCache.from_settings(settings, clients, config) if clients else None
    return await decide_with_model(
        definition, goals, context, client, scorer, decision_id, cache=cache
    )
