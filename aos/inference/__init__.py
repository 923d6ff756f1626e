"""LoRAX inference: one base model, one LoRA adapter per agent role.

- `config`: the AOS_INFERENCE_* settings (no endpoint: inference disabled, scorer decides alone).
- `client`: async client for LoRAX ``/generate`` and OpenAI-style ``/chat/completions``.
- `adapters`: agent adapter name -> adapter id, with a visible fallback to the base model.
- `decisions`: structured model judgements combined with the deterministic scorer.
- `cache`: Table-storage cache of deterministic answers, with a TTL.
- `resilience`: retries with backoff and Retry-After, and a circuit breaker.
- `accounting`: calls, tokens and cache hits of each result.

The agent turn calls `decide_for_turn(settings, clients, definition, goals, context,
decision_id)` and adds the returned `usage` to the agent's counters.
"""

from aos.inference.accounting import Usage
from aos.inference.adapters import AdapterRegistry, AdapterSelection
from aos.inference.cache import ResponseCache
from aos.inference.client import (
    ChatMessage,
    InferenceClient,
    InferenceResult,
    close_shared_clients,
    shared_client,
)
from aos.inference.config import GenerationParameters, InferenceConfig
from aos.inference.decisions import (
    ModelAlignment,
    ModelDecision,
    ModelJudgement,
    decide_for_turn,
    decide_with_model,
    evaluate_alignment,
)
from aos.inference.errors import (
    AdapterUnavailableError,
    InferenceError,
    InferenceNotConfigured,
    InferenceRequestError,
    InferenceResponseError,
    InferenceTimeoutError,
    InferenceUnavailableError,
)
from aos.inference.resilience import BreakerState, CircuitBreaker, RetryPolicy

__all__ = [
    "AdapterRegistry",
    "AdapterSelection",
    "AdapterUnavailableError",
    "BreakerState",
    "ChatMessage",
    "CircuitBreaker",
    "GenerationParameters",
    "InferenceClient",
    "InferenceConfig",
    "InferenceError",
    "InferenceNotConfigured",
    "InferenceRequestError",
    "InferenceResponseError",
    "InferenceResult",
    "InferenceTimeoutError",
    "InferenceUnavailableError",
    "ModelAlignment",
    "ModelDecision",
    "ModelJudgement",
    "ResponseCache",
    "RetryPolicy",
    "Usage",
    "close_shared_clients",
    "decide_for_turn",
    "decide_with_model",
    "evaluate_alignment",
    "shared_client",
]
