"""The CLI's handling of bad input: a message and a non-zero exit, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from workers import runtime
from workers.cli import cli


@pytest.fixture(autouse=True)
def _fresh() -> None:
    runtime.reset()


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("databases:\n  a: {kind: pg\n")
    code, out = _invoke(["--config", str(bad), "config", "check"])
    assert code == 2 and "malformed YAML" in out and "line" in out


def test_invalid_field_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("databases:\n  music: {kind: pg, host: h, port: lots}\n")
    code, out = _invoke(["--config", str(bad), "config", "check"])
    assert code == 2 and "databases.music.port" in out


def test_config_check_lists_databases_and_warns_on_missing_secret(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSIC_PW_NOT_SET", raising=False)
    good = tmp_path / "good.yaml"
    good.write_text("databases:\n  music: {kind: pg, host: db1, password_env: MUSIC_PW_NOT_SET}\n")
    code, out = _invoke(["--config", str(good), "config", "check"])
    assert code == 0 and "music" in out and "MUSIC_PW_NOT_SET" in out and "config OK" in out


def test_worker_refuses_unknown_queue(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("{}\n")
    code, out = _invoke(["--config", str(good), "worker", "--queues", "health,bakcups"])
    assert code == 2 and "bakcups" in out and "backups" in out


def test_flower_refuses_to_start_without_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBFLEET_FLOWER_PASSWORD", raising=False)
    good = tmp_path / "good.yaml"
    good.write_text("{}\n")
    code, out = _invoke(["--config", str(good), "flower"])
    assert code == 2 and "basic auth" in out


def test_missing_config_file(tmp_path: Path) -> None:
    code, out = _invoke(["--config", str(tmp_path / "nope.yaml"), "config", "check"])
    assert code == 2 and "cannot read" in out
