"""Secrets are resolved where used, scrubbed from any text, and refused as task options."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.config import parse_config
from engines.errors import ConfigError, SecretMissingError
from engines.secrets import (
    ensure_private_dir,
    password_location,
    redact_url,
    remember,
    scrub,
    touch_private,
    url_has_password,
    write_private,
)
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


@pytest.mark.parametrize("dsn", [
    "host=db password=x",
    "host=db dbname=app password='with space'",
    "postgresql://u@h/db?password=x",
    "postgresql://u@h/db?sslmode=require&password=x",
    "postgresql://u:pw@h/db",
    "mysql://u@h/db?password=x",
    "mongodb://u:pw@h:27017/admin",
    "postgresql://u:pw@[::1/db",  # unparsable: cannot be shown to be clean
    "host=db password='unterminated",
])
def test_a_dsn_carrying_a_password_is_detected(dsn: str) -> None:
    assert url_has_password(dsn), dsn
    assert password_location(dsn)


@pytest.mark.parametrize("dsn", ["host=db dbname=app user=u", "postgresql://u@h:5432/db?sslmode=require",
                                 "postgresql://h/db?passfile=/etc/pgpass", "mysql://u@h/db", "redis://h:6379/0"])
def test_a_dsn_without_password_passes(dsn: str) -> None:
    assert not url_has_password(dsn), dsn


@pytest.mark.parametrize("dsn,where", [("host=db password=x", "password keyword"),
                                       ("postgresql://u@h/db?password=x", "password parameter of the URL query"),
                                       ("postgresql://u:p@[::1/db", "unparsable")])
def test_config_refuses_a_dsn_with_a_password_naming_the_field(dsn: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"databases:\n  music: {{kind: pg, dsn: \"{dsn}\"}}\n")
    assert "databases.music.dsn" in str(err.value) and where in str(err.value)


def test_scrub_removes_url_passwords_containing_slashes_and_keyword_passwords() -> None:
    out = scrub('broker redis://:ab/cd+ef@cache:6379/0 failed; dsn "host=db password=s3cr/t9 user=u" and '
                "postgresql://u@h/db?sslmode=require&password=q/w/e")
    assert "ab/cd" not in out and "cd+ef" not in out and "s3cr/t9" not in out and "q/w/e" not in out
    assert "redis://:***@cache:6379/0" in out and "user=u" in out and "sslmode=require" in out


def test_scrub_keeps_json_around_a_url_parseable() -> None:
    import json

    text = json.dumps({"broker": "redis://:pw/x@h/0", "next": "a@b", "n": 1})
    assert json.loads(scrub(text)) == {"broker": "redis://:***@h/0", "next": "a@b", "n": 1}


def test_fleet_urls_are_registered_with_the_scrubber() -> None:
    parse_config("fleet:\n  broker_url: 'amqp://dbf:broker-Pw-91aa@mq//'\n"
                 "  result_backend: 'redis://:backend-Pw-72bb@r/1'\n  cache_url: 'redis://:cache%2FPw-53cc@r/2'\n"
                 "  history_url: 'postgresql://h@db/hist?password=history-Pw-34dd'\n")
    leaked = "errors: broker-Pw-91aa backend-Pw-72bb cache/Pw-53cc cache%2FPw-53cc history-Pw-34dd"
    assert scrub(leaked) == "errors: *** *** *** *** ***"


def test_private_dir_and_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0)
    try:
        state = ensure_private_dir(tmp_path / "a" / "state")
        token = write_private(state / "api.token", "t0ken\n")
        db = touch_private(state / "history.db")
        (tmp_path / "loose").mkdir(mode=0o777)
        os.chmod(tmp_path / "loose", 0o777)
        ensure_private_dir(tmp_path / "loose")
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "loose").stat().st_mode) == 0o700  # an existing state dir is tightened
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == "t0ken\n"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert sorted(p.name for p in state.iterdir()) == ["api.token", "history.db"]  # no temporary file left


def test_history_and_state_dir_are_private_whatever_the_umask(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    from workers import runtime

    (tmp_path / "dbfleet.yaml").write_text(f"fleet:\n  state_dir: {tmp_path / 'state'}\n")
    monkeypatch.setenv("DBFLEET_CONFIG", str(tmp_path / "dbfleet.yaml"))
    runtime.reset()
    old = os.umask(0)
    try:
        history = runtime.history()
        history.start("umask-run", "health_check", "db")
        history.finish("umask-run", "succeeded")
    finally:
        os.umask(old)
        runtime.reset()
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for f in state.iterdir():  # history.db and its -wal / -shm
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
    assert (state / "history.db").exists()
