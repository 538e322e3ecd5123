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


def test_audit_checks_lists_every_check_of_a_kind(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("{}\n")
    code, out = _invoke(["--config", str(good), "audit-checks", "mariadb"])
    assert code == 0 and "my.anonymous_users" in out and "18 mysql checks" in out


def test_audit_of_an_unknown_database_exits_2(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"fleet: {{state_dir: {tmp_path}}}\ndatabases:\n  lite: {{kind: sqlite, path: {tmp_path}/l.db}}\n")
    code, out = _invoke(["--config", str(good), "audit", "nosuch", "--local"])
    assert code == 2 and "unknown database id 'nosuch'" in out
    code, out = _invoke(["--config", str(good), "audit", "lite", "--local"])
    assert code == 2 and "no security checks for 'sqlite'" in out


def test_audit_table_shows_evidence_literally_and_exit_codes_follow_fail_on() -> None:
    from workers.cli_audit import exit_code, print_audit
    from workers.render import console

    finding = {"check_id": "pg.log_line_prefix", "title": "t", "severity": "low", "status": "fail",
               "evidence": {"log_line_prefix": "%m [%p] [bold]"}, "remediation": "ALTER SYSTEM ...", "cis": "3.1.24",
               "reason": None}
    result = {"database_id": "d", "kind": "postgresql", "server_version": "18.6", "audited_at": "x",
              "duration_ms": 1.0, "findings": [finding], "excluded": [], "user": "u", "error": None,
              "diff": {"new": ["pg.log_line_prefix"], "fixed": [], "unchanged": [], "unknown": [],
                       "previous": "2026-11-18T03:00:00+00:00"},
              "schema_version": 1}
    with console.capture() as cap:
        print_audit(result)
    text = "".join(cap.get().split())
    assert "[%p][bold]" in text and "new1(pg.log_line_prefix)" in text and "2026-11-18T03" in text
    assert exit_code(result, "high") == 0 and exit_code(result, "low") == 1 and exit_code(result, "none") == 0
    assert exit_code({**result, "error": "down", "findings": []}, "none") == 2
