"""The one settings object. It reads the process environment, which is where the Functions host
(and our local tooling) puts the values of `local.settings.json` and of the app's settings in Azure.

Every setting AOS reads is declared here, with its default; README.md lists them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aos.errors import ConfigurationError

_STORAGE_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,19}$")

# Environment variable for each field. The Functions host hands settings to the worker as
# environment variables with exactly these names.
SETTING_NAMES = {
    "storage_connection": "AOS_STORAGE_CONNECTION",
    "storage_prefix": "AOS_STORAGE_PREFIX",
    "task_hub": "AOS_TASK_HUB",
    "service_bus_connection": "AOS_SERVICE_BUS_CONNECTION",
    "events_topic": "AOS_EVENTS_TOPIC",
    "messages_topic": "AOS_MESSAGES_TOPIC",
    "subscription": "AOS_SUBSCRIPTION",
}


class Settings(BaseModel):
    """AOS settings. Build with `Settings.from_env()`; pass explicitly in tests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_connection: str = Field(
        "AzureWebJobsStorage",
        description="Name of the connection setting (or identity-based setting prefix) that "
        "points at the storage account holding AOS data.",
    )
    storage_prefix: str = Field(
        "aos",
        description="Prefix of every table and container AOS creates, so several AOS "
        "installations (or test runs) can share one account.",
    )
    task_hub: str = Field("aoshub", description="Durable Functions task hub name.")
    service_bus_connection: str = Field(
        "ServiceBusConnection",
        description="Name of the Service Bus connection setting (or identity-based prefix). "
        "When it is not set, messages go to the local broker on storage queues.",
    )
    events_topic: str = Field("aos-events", description="Topic of external events.")
    messages_topic: str = Field("aos-agent-messages", description="Topic of agent messages.")
    subscription: str = Field("aos", description="AOS's subscription on both topics.")
    environ: Mapping[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @field_validator("storage_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _STORAGE_PREFIX.match(value):
            raise ValueError(
                "must start with a lowercase letter and hold only lowercase letters and digits "
                "(at most 20), because it begins table and container names"
            )
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        values = {field: env[name] for field, name in SETTING_NAMES.items() if env.get(name)}
        try:
            return cls(**values, environ=env)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0])
            name = SETTING_NAMES.get(field, field)
            raise ConfigurationError(
                f"setting {name} is invalid: {error['msg']}", field=name
            ) from None

    def get(self, name: str) -> str | None:
        """A raw setting by its exact name (connection strings and identity-based prefixes)."""
        value = self.environ.get(name)
        return value if value else None


def load_local_settings(
    path: str | os.PathLike[str] = "local.settings.json",
    environ: MutableMapping[str, str] | None = None,
) -> list[str]:
    """Copy the `Values` of a local.settings.json into the environment, as Core Tools does.

    Variables already set in the environment win. Returns the names that were set. A missing
    file is not an error (settings may come from the environment alone).
    """
    environ = os.environ if environ is None else environ
    file = Path(path)
    if not file.is_file():
        return []
    try:
        values = json.loads(file.read_text(encoding="utf-8")).get("Values", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ConfigurationError(f"{file} is not a local.settings.json document: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigurationError(f"{file}: 'Values' must be an object of setting names to strings")
    applied = []
    for name, value in values.items():
        if name not in environ and value is not None:
            environ[name] = str(value)
            applied.append(name)
    return applied


def prepare_environment(local_settings: str | os.PathLike[str] = "local.settings.json") -> None:
    """What every entry point does before reading settings: fill unset variables from a
    local.settings.json (as Core Tools does), then put Key Vault secrets in place of references
    (as App Service does; see aos.governance.secrets)."""
    from aos.governance.secrets import resolve_process_secrets

    load_local_settings(local_settings)
    resolve_process_secrets()
