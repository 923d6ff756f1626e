"""`python -m aos` register / send / show against Azurite: the local main job's steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aos.cli import SAMPLES, main
from aos.settings import Settings


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name, value in settings.environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no local.settings.json here: the environment decides
    return tmp_path


def test_register_send_show_round_trip(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register", str(SAMPLES / "agents.json")]) == 0
    assert main(["send", str(SAMPLES / "events.json")]) == 0
    sent = capsys.readouterr().out
    assert "ceo        <- board.request (sample-001): act 'Draft a strategic plan" in sent
    assert "sample-001): duplicate, nothing changed" in sent

    assert main(["show", "ceo"]) == 0
    shown = capsys.readouterr().out
    assert "ceo [sleeping]" in shown
    assert "events 2, duplicates dropped 1, decisions 1" in shown
    assert "goal revenue: Increase revenue by 50% [active, 0%]" in shown


def test_registering_the_samples_again_changes_nothing(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["register", str(SAMPLES / "agents.json")]) == 0
    assert main(["register", str(SAMPLES / "agents.json")]) == 0
    capsys.readouterr()
    assert main(["show", "cfo"]) == 0
    assert capsys.readouterr().out.count("goal cut-costs") == 1


def test_bad_event_file_is_a_clear_error(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = cli_env / "events.json"
    bad.write_text(json.dumps([{"id": "", "source": "/s", "type": "t"}]))
    assert main(["send", str(bad)]) == 2
    assert "id" in capsys.readouterr().err


def test_unknown_agent_is_reported(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "ghost"]) == 2
    assert "agent 'ghost' does not exist" in capsys.readouterr().err
