"""The agent core: definitions, state, alignment, decisions and PurposeDrivenAgent.

Nothing here imports azure.functions: entities, orchestrations and activities in `functions/`
call into this package. `PurposeDrivenAgent` (which brings storage with it) loads on first use.
"""

from typing import Any

from aos.agents.alignment import DeterministicAlignmentScorer
from aos.agents.models import (
    AgentDefinition,
    Alignment,
    Decision,
    DecisionContext,
    EventEnvelope,
    Goal,
    GoalStatus,
)
from aos.agents.state import AgentState, Lifecycle, load_state

__all__ = [
    "AgentDefinition",
    "AgentState",
    "Alignment",
    "Decision",
    "DecisionContext",
    "DeterministicAlignmentScorer",
    "EventEnvelope",
    "Goal",
    "GoalStatus",
    "Lifecycle",
    "PurposeDrivenAgent",
    "PurposeStatus",
    "TurnResult",
    "load_state",
]

_LAZY = {"PurposeDrivenAgent", "PurposeStatus", "TurnResult"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from aos.agents import agent

        return getattr(agent, name)
    raise AttributeError(f"module 'aos.agents' has no attribute {name!r}")
