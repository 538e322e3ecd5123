"""Secrets are resolved where used, scrubbed from any text, and refused as task options."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.config import parse_config
from engines.errors import ConfigError, SecretMissingError
from engines.secrets import redact_url, remember, scrub
from workers.manager import check_options


def test_redact_url_hides_password_only() -> None:
    assert redact_url("redis://:s3cr3t@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("amqp://guest:guest@h:5672//") == "amqp://guest:***@h:5672//"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_scrub_removes_remembered_secrets_and_url_passwords() -> None:
    remember("very-secret-value-1")
    text = "failed for very-secret-value-1 at postgresql://bob:pw123@db/x"
    out = scrub(text)
    assert "very-secret-value-1" not in out and "pw123" not in out
    assert "postgresql://bob:***@db/x" in out


def test_missing_password_env_is_actionable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTIFY_DB_PASSWORD", raising=False)
    cfg = parse_config("databases:\n  spotify_prod: {kind: pg, host: h, password_env: SPOTIFY_DB_PASSWORD}\n")
    with pytest.raises(SecretMissingError) as err:
        cfg.database("spotify_prod").password()
    assert "spotify_prod" in str(err.value) and "SPOTIFY_DB_PASSWORD" in str(err.value)


def test_password_file_read_and_missing(tmp_path: Path) -> None:
    good = tmp_path / "pw"
    good.write_text("from-a-file\n")
    cfg = parse_config(f"databases:\n  a: {{kind: pg, host: h, password_file: '{good}'}}\n"
                       f"  b: {{kind: pg, host: h, password_file: '{tmp_path / 'nope'}'}}\n")
    assert cfg.database("a").password() == "from-a-file"
    with pytest.raises(SecretMissingError, match="cannot read password_file"):
        cfg.database("b").password()


@pytest.mark.parametrize("key", ["password", "db_pass", "api_key", "secret", "TOKEN"])
def test_secret_looking_options_never_become_task_arguments(key: str) -> None:
    with pytest.raises(ConfigError, match="secrets cannot travel"):
        check_options({key: "x"})


def test_plain_options_pass() -> None:
    assert check_options({"tables": ["users"], "timeout": 5}) == {"tables": ["users"], "timeout": 5}
