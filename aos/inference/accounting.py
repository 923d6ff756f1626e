"""Per-call accounting: what a call cost, returned with its result so the caller can add it to the
agent's counters. Usage values add up (`a + b`), so a decision's usage is the sum of its calls."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Usage(BaseModel):
    """Calls and tokens spent. A cache hit costs no call and no tokens; it counts in `cache_hits`.

    - `calls`: answers obtained from the endpoint (one per successful request).
    - `attempts`: HTTP requests sent, retries and failed requests included.
    - `prompt_tokens` / `completion_tokens`: as the endpoint reported them (0 when it did not).
    - `cache_hits`: answers served from the response cache instead of the endpoint.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls: int = Field(0, ge=0)
    attempts: int = Field(0, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    cache_hits: int = Field(0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            calls=self.calls + other.calls,
            attempts=self.attempts + other.attempts,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cache_hits=self.cache_hits + other.cache_hits,
        )


NO_USAGE = Usage()
