"""Config loading: the seed's YAML, interpolation, env overrides, and errors with field paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.config import load_config, parse_config
from engines.errors import ConfigError, UnknownDatabaseError

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "dbfleet.yaml"


def test_seed_example_loads_with_every_section() -> None:
    cfg = load_config(EXAMPLE)
    assert set(cfg.databases) == {"spotify_prod", "spotify_cache", "billing", "events_search", "local_analytics"}
    assert cfg.databases["billing"].kind == "mysql"  # mariadb is an alias
    assert cfg.databases["spotify_prod"].port == 5432
    assert cfg.databases["spotify_cache"].port == 6379  # default port per kind
    assert cfg.database_scripts.backup.schedule == "0 2 * * *"
    assert cfg.database_scripts.monitoring.interval_seconds == 30
    assert cfg.database_scripts.disaster_recovery["rpo_minutes"] == 15
    assert cfg.schedules["nightly-health"].database == "spotify_prod"


def test_interpolation_with_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST_X", "db9.internal")
    cfg = parse_config("databases:\n  a: {kind: pg, host: '${PGHOST_X}', dbname: '${DB:-music}'}\n", environ={})
    assert cfg.databases["a"].host == "db9.internal"
    assert cfg.databases["a"].dbname == "music"


def test_missing_interpolated_variable_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError) as err:
        parse_config("databases:\n  a: {kind: pg, host: '${NOPE_NOT_SET}'}\n")
    assert "databases.a.host" in str(err.value)
    assert "NOPE_NOT_SET" in str(err.value)


def test_env_overrides_nested_and_shortcuts() -> None:
    env = {"DBFLEET_BROKER_URL": "amqp://guest@127.0.0.1:5672//",
           "DBFLEET_DATABASES__A__PORT": "6543", "DBFLEET_FLEET__FLOWER__PORT": "5999"}
    cfg = parse_config("databases:\n  a: {kind: pg, host: h}\n", environ=env)
    assert cfg.fleet.broker_url.startswith("amqp://")
    assert cfg.databases["a"].port == 6543
    assert cfg.fleet.flower.port == 5999


def test_malformed_yaml_reports_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("databases:\n  a: {kind: pg\n  b: [\n")
    assert "malformed YAML" in str(err.value)
    assert "line" in str(err.value)


@pytest.mark.parametrize(("text", "path", "words"), [
    ("databases:\n  a: {kind: oracle, host: h}\n", "databases.a.kind", "unknown kind"),
    ("databases:\n  a: {kind: pg}\n", "databases.a", "host"),
    ("databases:\n  a: {kind: sqlite}\n", "databases.a", "path"),
    ("databases:\n  a: {kind: pg, host: h, port: many}\n", "databases.a.port", "integer"),
    ("databases:\n  a: {kind: pg, host: h, passwd: x}\n", "databases.a.passwd", "Extra inputs"),
    ("database_scripts:\n  backup: {schedule: 'every night'}\n", "database_scripts.backup.schedule", "cron"),
    ("databases:\n  a: {kind: pg, host: h}\nschedules:\n  s: {script: health_check, database: b, cron: '* * * * *'}\n",
     "", "unknown database id 'b'"),
    ("databases:\n  a: {kind: pg, host: h, password_env: X, password_file: /f}\n", "databases.a", "only one"),
])
def test_invalid_configs_name_the_field(text: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, environ={})
    message = str(err.value)
    assert path in message and words in message


def test_dsn_with_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("databases:\n  a: {kind: pg, dsn: 'postgresql://u:hunter2-secret@h/db'}\n")
    assert "must not contain a password" in str(err.value)
    assert "hunter2-secret" not in str(err.value)


def test_unknown_database_lists_known_ids() -> None:
    cfg = parse_config("databases:\n  a: {kind: pg, host: h}\n  b: {kind: redis, host: h}\n")
    with pytest.raises(UnknownDatabaseError) as err:
        cfg.database("c")
    assert "'c'" in str(err.value) and "a, b" in str(err.value)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read" in str(err.value)


def test_no_file_means_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DBFLEET_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.source == "defaults" and cfg.databases == {}
    assert cfg.fleet.broker_url.startswith("redis://")
