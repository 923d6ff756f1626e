"""Adapter registry: which LoRA adapter serves an agent, from its definition's `adapter_name`.

One base model, one adapter per agent role. `AOS_INFERENCE_ADAPTERS` maps adapter names to the
adapter ids the endpoint knows. When an agent's adapter cannot be used — its name is not in the
mapping, or the endpoint cannot load it — the call goes to the base model instead, and that is
never silent: the selection says `fell_back=True` with the reason, and a warning is logged.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict

from aos.agents.models import AgentDefinition
from aos.inference.config import ADAPTERS, InferenceConfig

logger = logging.getLogger(__name__)


class AdapterSelection(BaseModel):
    """The adapter a call uses. `adapter_id` None means the base model."""

    model_config = ConfigDict(frozen=True)

    adapter_name: str | None
    adapter_id: str | None
    source: str | None = None
    fell_back: bool = False
    reason: str | None = None

    @property
    def uses_base_model(self) -> bool:
        return self.adapter_id is None

    def fall_back(self, reason: str) -> AdapterSelection:
        """This selection redirected to the base model, with the reason (logged)."""
        logger.warning(
            "inference: adapter '%s' falls back to the base model: %s", self.adapter_name, reason
        )
        return AdapterSelection(
            adapter_name=self.adapter_name,
            adapter_id=None,
            source=None,
            fell_back=True,
            reason=reason,
        )


BASE_MODEL = AdapterSelection(adapter_name=None, adapter_id=None)


class AdapterRegistry:
    """Maps adapter names to adapter ids, from `AOS_INFERENCE_ADAPTERS`."""

    def __init__(self, config: InferenceConfig) -> None:
        self._adapters = dict(config.adapters)
        self._default_source = config.adapter_source

    @property
    def names(self) -> list[str]:
        return sorted(self._adapters)

    def select(self, target: AgentDefinition | str | None) -> AdapterSelection:
        """The adapter for an agent (or an adapter name); the base model when it has none."""
        name = target.adapter_name if isinstance(target, AgentDefinition) else target
        if name is None:
            return AdapterSelection(
                adapter_name=None,
                adapter_id=None,
                reason="the agent names no adapter; the base model serves it",
            )
        spec = self._adapters.get(name)
        if spec is None:
            known = ", ".join(f"'{n}'" for n in self.names) or "none"
            return AdapterSelection(adapter_name=name, adapter_id=None).fall_back(
                f"adapter '{name}' is not mapped in {ADAPTERS} (mapped: {known})"
            )
        return AdapterSelection(
            adapter_name=name, adapter_id=spec.id, source=spec.source or self._default_source
        )
