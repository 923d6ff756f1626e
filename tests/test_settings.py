"""Settings and storage connections follow the Azure Functions conventions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aos.errors import ConfigurationError
from aos.settings import Settings, load_local_settings
from aos.storage.clients import AZURITE_ACCOUNT, StorageConnection

ROOT = Path(__file__).resolve().parents[1]


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.storage_connection, settings.storage_prefix, settings.task_hub) == (
        "AzureWebJobsStorage",
        "aos",
        "aoshub",
    )


def test_bad_prefix_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"AOS_STORAGE_PREFIX": "Bad-Prefix"})
    assert raised.value.field == "AOS_STORAGE_PREFIX"
    assert "AOS_STORAGE_PREFIX" in str(raised.value)


def test_development_storage_means_azurite() -> None:
    connection = StorageConnection.from_settings(
        Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    )
    assert connection.connection_string is not None
    assert f"TableEndpoint=http://127.0.0.1:10002/{AZURITE_ACCOUNT}" in connection.connection_string


def test_identity_based_connection_from_account_name() -> None:
    env = {
        "AOS_STORAGE_CONNECTION": "AosData",
        "AosData__accountName": "aosprod",
        "AosData__credential": "managedidentity",
        "AosData__clientId": "1111",
        "AosData__tableServiceUri": "https://custom.table.example",
    }
    connection = StorageConnection.from_settings(Settings.from_env(env))
    assert connection.connection_string is None
    assert connection.url("blob") == "https://aosprod.blob.core.windows.net"
    assert connection.url("table") == "https://custom.table.example"
    assert (connection.credential, connection.client_id) == ("managedidentity", "1111")


def test_missing_storage_names_both_ways_to_configure_it() -> None:
    with pytest.raises(ConfigurationError) as raised:
        StorageConnection.from_settings(Settings.from_env({}))
    assert "AzureWebJobsStorage" in str(raised.value)
    assert "AzureWebJobsStorage__accountName" in str(raised.value)


def test_unknown_credential_kind_is_named() -> None:
    env = {"AzureWebJobsStorage__accountName": "a", "AzureWebJobsStorage__credential": "secret"}
    with pytest.raises(ConfigurationError) as raised:
        StorageConnection.from_settings(Settings.from_env(env))
    assert raised.value.field == "AzureWebJobsStorage__credential"


def test_service_without_a_url_is_named() -> None:
    env = {"AzureWebJobsStorage__tableServiceUri": "https://t.example"}
    connection = StorageConnection.from_settings(Settings.from_env(env))
    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage__blobServiceUri"):
        connection.url("blob")


def test_local_settings_fill_the_environment_without_overriding(tmp_path: Path) -> None:
    file = tmp_path / "local.settings.json"
    file.write_text(json.dumps({"Values": {"A": "from-file", "B": "from-file"}}))
    environ = {"A": "from-env"}

    assert load_local_settings(file, environ) == ["B"]
    assert environ == {"A": "from-env", "B": "from-file"}


def test_entry_points_resolve_key_vault_references_from_local_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare_environment loads local.settings.json, then resolves Key Vault references in it
    (a malformed one is refused naming the setting, before any network call)."""
    from aos.settings import prepare_environment

    monkeypatch.setattr("aos.governance.secrets._process_resolved", False)
    monkeypatch.delenv("AOS_TEST_SECRET", raising=False)
    file = tmp_path / "local.settings.json"
    reference = "@Microsoft.KeyVault(SecretName=missing-vault-name)"
    file.write_text(json.dumps({"Values": {"AOS_TEST_SECRET": reference}}))
    with pytest.raises(ConfigurationError) as error:
        prepare_environment(file)
    assert error.value.field == "AOS_TEST_SECRET"
    assert os.environ["AOS_TEST_SECRET"] == reference  # loaded, and not replaced


def test_malformed_local_settings_is_reported(tmp_path: Path) -> None:
    file = tmp_path / "local.settings.json"
    file.write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"local\.settings\.json"):
        load_local_settings(file, {})


def test_sample_settings_name_every_setting_the_app_reads() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    from aos.settings import SETTING_NAMES

    assert set(SETTING_NAMES.values()) | {"AzureWebJobsStorage"} <= set(sample)
    assert "%AOS_TASK_HUB%" in (ROOT / "host.json").read_text()
