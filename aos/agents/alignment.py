"""Deterministic purpose alignment: an explainable score for "does this action serve the agent?".

The scorer compares the content words of an action with the agent's purpose, scope, success
criteria and constraints. Words are stemmed (Snowball) and related words are matched through a
small table of synonyms, so "grow revenue" meets "revenue growth" and "share customer data" meets
"never disclose customer data". Every part of the score is reported with the words that matched,
so a person can see why an action scored as it did. When an inference endpoint is configured the
model's judgement is combined with this score; without one, this score decides alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

from aos.agents.models import AgentDefinition, Alignment, AlignmentFactor

# Weights of the factors when every field is present; absent fields hand their weight on.
WEIGHTS = {"purpose": 0.35, "scope": 0.2, "criteria": 0.25, "focus": 0.2}
# A constraint is broken when the action covers this share of its content words.
CONSTRAINT_COVERAGE = 0.6
# An action that breaks a constraint keeps at most this share of its score.
VIOLATION_FACTOR = 0.1
_MIN_SHARED_PREFIX = 5

_WORD = re.compile(r"[a-z][a-z0-9]*")
_STOPWORDS = frozenset(
    (
        "a about above after again all also am an and any are as at be because been before "
        "being below between both but by can could did do does doing done down during each "
        "etc few for from further had has have having he her here hers him his how i if in "
        "into is it its itself just me more most my no nor not of off on once only or other "
        "our ours out over own per same she should so some such than that the their them then "
        "there these they this those through to too under until up us very via was we were "
        "what when where which while who whom why will with within without would you your "
        "yours never must shall always avoid ensure make get any anything thing things new "
        "major minor one two three four five now today please"
    ).split()
)

# Words that mean the same thing for the purpose of matching, written as Snowball stems.
_SYNONYM_GROUPS = (
    "share disclos disclosur leak publish expos reveal divulg",
    "delet remov eras destroy wipe purg",
    "grow growth increas expand expans scale boost rais",
    "revenu sale incom earn profit turnov",
    "hire recruit onboard headcount",
    "cut reduc reduct lower decreas minim trim",
    "cost spend expens budget",
    "custom client",
    "buy purchas acquir acquisit procur",
    "fire dismiss layoff",
    "plan strategi strateg roadmap",
    "team staff employe workforc",
    "decid decis",
    "secur protect safeguard",
)


@lru_cache(maxsize=1)
def _stemmer() -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=1)
def _synonyms() -> dict[str, int]:
    return {stem: group for group, line in enumerate(_SYNONYM_GROUPS) for stem in line.split()}


def _concept(stem: str) -> str:
    """Synonyms share one concept key ('~<group>'); any other word is its own stem."""
    group = _synonyms().get(stem)
    return stem if group is None else f"~{group}"


@dataclass(frozen=True)
class Terms:
    """The concepts of a text: concept key -> the first word that expressed it (for reasons).

    Synonyms collapse to one concept, so "costs within budget" counts once, not twice.
    """

    words: dict[str, str]

    @classmethod
    def of(cls, text: str) -> Terms:
        return _terms_of(text)

    @classmethod
    def _parse(cls, text: str) -> Terms:
        stemmer = _stemmer()
        words: dict[str, str] = {}
        for word in _WORD.findall(text.lower()):
            if len(word) > 1 and word not in _STOPWORDS:
                words.setdefault(_concept(stemmer.stemWord(word)), word)
        return cls(words)

    def __bool__(self) -> bool:
        return bool(self.words)

    def matched_by(self, other: Terms) -> list[str]:
        """Our words (as written) whose concept some concept of `other` matches."""
        return [
            word for key, word in self.words.items() if any(_related(key, o) for o in other.words)
        ]


@lru_cache(maxsize=4096)
def _terms_of(text: str) -> Terms:
    """Purpose, scope and criteria texts recur on every call: parse each once."""
    return Terms._parse(text)


def _related(a: str, b: str) -> bool:
    """Same concept, or (for plain stems) a long shared prefix: 'strateg' ~ 'strategi'."""
    if a == b:
        return True
    if a.startswith("~") or b.startswith("~"):
        return False
    shared = len(_common_prefix(a, b))
    return shared >= _MIN_SHARED_PREFIX and shared >= 0.8 * min(len(a), len(b))


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _saturating(hits: int) -> float:
    """1 hit -> 0.5, 2 -> 0.75, 3 -> 0.875: each further match adds less."""
    return 1.0 - 0.5**hits


def _quote(words: Iterable[str]) -> str:
    return ", ".join(f"'{w}'" for w in words)


class DeterministicAlignmentScorer:
    """Scores an action against an agent definition. Pure and repeatable: same input, same score."""

    def score(self, action: str, definition: AgentDefinition) -> Alignment:
        action_terms = Terms.of(action)
        threshold = definition.alignment_threshold
        if not action_terms:
            return Alignment(
                action=action,
                score=0.0,
                threshold=threshold,
                aligned=False,
                reasons=["the action has no content words to assess"],
                factors={},
            )

        factors: dict[str, AlignmentFactor] = {}
        reasons: list[str] = []
        relevant: set[str] = set()

        purpose = Terms.of(definition.purpose)
        matched = purpose.matched_by(action_terms)
        factors["purpose"] = AlignmentFactor(
            score=_saturating(len(matched)), weight=WEIGHTS["purpose"], matched=matched
        )
        reasons.append(
            f"serves the purpose through {_quote(matched)}"
            if matched
            else "shares nothing with the purpose"
        )
        relevant.update(action_terms.matched_by(purpose))

        scope = Terms.of(definition.purpose_scope)
        if scope:
            matched = scope.matched_by(action_terms)
            factors["scope"] = AlignmentFactor(
                score=_saturating(len(matched)), weight=WEIGHTS["scope"], matched=matched
            )
            reasons.append(
                f"within scope through {_quote(matched)}" if matched else "outside the stated scope"
            )
            relevant.update(action_terms.matched_by(scope))

        best_criterion, best_cover, best_matched = None, 0.0, []
        for criterion in definition.success_criteria:
            terms = Terms.of(criterion)
            if not terms:
                continue
            matched = terms.matched_by(action_terms)
            relevant.update(action_terms.matched_by(terms))
            cover = len(matched) / len(terms.words)
            if cover > best_cover:
                best_criterion, best_cover, best_matched = criterion, cover, matched
        if definition.success_criteria:
            factors["criteria"] = AlignmentFactor(
                score=best_cover, weight=WEIGHTS["criteria"], matched=best_matched
            )
            reasons.append(
                f"advances success criterion '{best_criterion}' ({best_cover:.0%} of its terms)"
                if best_criterion
                else "advances none of the success criteria"
            )

        focus = len(relevant) / len(action_terms.words)
        factors["focus"] = AlignmentFactor(
            score=focus, weight=WEIGHTS["focus"], matched=sorted(relevant)
        )
        if focus < 1.0:
            off = [w for w in action_terms.words.values() if w not in relevant]
            reasons.append(f"{focus:.0%} of the action is on purpose; off purpose: {_quote(off)}")

        total_weight = sum(f.weight for f in factors.values())
        score = sum(f.score * f.weight for f in factors.values()) / total_weight

        violations = self._violations(action_terms, definition.constraints)
        for constraint in violations:
            reasons.insert(0, f"breaks constraint '{constraint}'")
        if violations:
            score *= VIOLATION_FACTOR

        score = round(min(1.0, max(0.0, score)), 4)
        return Alignment(
            action=action,
            score=score,
            threshold=threshold,
            aligned=score >= threshold and not violations,
            reasons=reasons,
            factors=factors,
            violations=violations,
        )

    @staticmethod
    def _violations(action_terms: Terms, constraints: Iterable[str]) -> list[str]:
        broken = []
        for constraint in constraints:
            terms = Terms.of(constraint)
            if not terms:
                continue
            matched = terms.matched_by(action_terms)
            needed = 1 if len(terms.words) == 1 else 2
            if len(matched) >= needed and len(matched) / len(terms.words) >= CONSTRAINT_COVERAGE:
                broken.append(constraint)
        return broken
