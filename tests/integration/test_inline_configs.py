"""Issue 14's attack, reproduced against a fake PostgreSQL server that records the password it is sent:
an inline database config naming the repository key's variable must never make a worker send that key.

Inline configs are off by default; when an operator allows them, their secret references stay inside
fleet.inline_secrets, and an inline config never falls back to the worker's PGPASSWORD / ~/.pgpass."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engines.errors import ConfigError, DbfleetError
from tests.integration.fake_pg import PasswordRecorder
from tests.servers import CANARY
from workers import runtime

pytestmark = pytest.mark.integration
TOKEN = "h1-inline-test-token-5d8e"


@pytest.fixture
def fake() -> Iterator[PasswordRecorder]:
    server = PasswordRecorder()
    yield server
    server.close()


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **fleet: Any) -> None:
    """Point this process (the 'worker' here) at a config; the registry has one database."""
    doc = {"fleet": {"broker_url": "memory://", "history_url": f"sqlite:///{tmp_path / 'h1_history.db'}",
                     "state_dir": str(tmp_path / "state"), **fleet},
           "databases": {"music": {"kind": "postgresql", "host": "127.0.0.1", "port": 1, "dbname": "music"}}}
    path = tmp_path / "dbfleet.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("DBFLEET_CONFIG", str(path))
    monkeypatch.setenv("DBFLEET_REPO_KEY", CANARY)  # the secret the attacker wants
    runtime.reset()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    runtime.reset()


def attack(port: int, **refs: Any) -> dict[str, Any]:
    return {"kind": "postgresql", "host": "127.0.0.1", "port": port, "dbname": "x", "user": "u",
            "connect_timeout": 3, **refs}


def plan_on_worker(source: Any) -> str:
    """Run the migrations.plan task body in this process, as a worker would for a message from the broker."""
    from workers.migrations import plan_task

    with pytest.raises(DbfleetError) as info:
        plan_task(source, "music", {})
    return str(info.value)


def test_by_default_the_worker_refuses_inline_configs_and_sends_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: PasswordRecorder) -> None:
    use_config(tmp_path, monkeypatch)
    message = plan_on_worker(attack(fake.port, password_env="DBFLEET_REPO_KEY"))
    assert CANARY not in fake.passwords and fake.connections == 0  # main sent the repository key here
    assert "inline database configs are off" in message and "(known: music)" in message


def test_allowed_inline_configs_may_only_name_the_allow_listed_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: PasswordRecorder) -> None:
    secrets_dir = tmp_path / "inline"
    secrets_dir.mkdir()
    (secrets_dir / "ok.pw").write_text("inline-file-pw\n")
    (tmp_path / "repo.key").write_text(CANARY)
    (secrets_dir / "escape.pw").symlink_to(tmp_path / "repo.key")
    use_config(tmp_path, monkeypatch, allow_inline_databases=True,
               inline_secrets={"env_prefix": "DBFLEET_INLINE_", "file_dir": str(secrets_dir)})
    monkeypatch.setenv("DBFLEET_INLINE_PW", "inline-env-pw")
    refused = {
        "password_env": ("DBFLEET_REPO_KEY", "only name variables starting with 'DBFLEET_INLINE_'"),
        "password_file": (str(tmp_path / "repo.key"), f"only name files inside {secrets_dir}"),
    }
    for key, (value, why) in refused.items():
        assert why in plan_on_worker(attack(fake.port, **{key: value}))
    for sneaky in (str(secrets_dir / "escape.pw"), str(secrets_dir / ".." / "repo.key")):
        assert "is not allowed" in plan_on_worker(attack(fake.port, password_file=sneaky))
    assert "is not allowed" in plan_on_worker(attack(fake.port, passfile=str(tmp_path / "repo.key")))
    assert "is not allowed" in plan_on_worker(attack(fake.port, options={"sslkey_file": "/etc/shadow"}))
    assert "dsn" in plan_on_worker({"kind": "postgresql", "dsn": f"host=127.0.0.1 port={fake.port} passfile=/x"})
    assert fake.connections == 0
    # the allow-listed references do reach the server: the recorder sees what a worker sends
    plan_on_worker(attack(fake.port, password_env="DBFLEET_INLINE_PW"))
    plan_on_worker(attack(fake.port, password_file=str(secrets_dir / "ok.pw")))
    assert fake.passwords == ["inline-env-pw", "inline-file-pw"]


def test_an_inline_config_never_sends_the_workers_ambient_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: PasswordRecorder) -> None:
    from engines.connectors import open_connector
    from tests.conftest import db

    use_config(tmp_path, monkeypatch, allow_inline_databases=True)
    monkeypatch.setenv("PGPASSWORD", CANARY)  # e.g. set for the history database on the worker
    home = tmp_path / "home"
    home.mkdir()
    pgpass = home / ".pgpass"
    pgpass.write_text(f"*:*:*:*:{CANARY}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    assert "no password supplied" in plan_on_worker(attack(fake.port))
    assert fake.connections >= 1 and CANARY not in fake.passwords
    # control: a registry entry without a password does use the ambient one (the recorder can catch it)
    with pytest.raises(DbfleetError):
        open_connector(db("reg", kind="postgresql", host="127.0.0.1", port=fake.port, user="u",
                          connect_timeout=3)).ping()
    assert fake.passwords[-1] == CANARY


def test_rest_and_client_refuse_inline_configs_before_anything_is_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: PasswordRecorder) -> None:
    from fastapi.testclient import TestClient

    from workers import migrations
    from workers.api import create_api

    use_config(tmp_path, monkeypatch)
    sent: list[Any] = []
    monkeypatch.setattr(migrations, "celery_app", lambda: sent.append(1))
    client = TestClient(create_api(runtime.config(), cache=object(), store=object(), token=TOKEN),
                        headers={"Authorization": f"Bearer {TOKEN}"})
    body = {"source": attack(fake.port, password_env="DBFLEET_REPO_KEY"), "target": "music"}
    answer = client.post("/api/migration/plan", json=body)
    assert answer.status_code == 422 and "inline database configs are off" in answer.json()["error"]
    with pytest.raises(ConfigError, match="inline database configs are off"):
        migrations.plan("music", attack(fake.port))
    assert sent == [] and fake.connections == 0 and CANARY not in answer.text


def test_scripts_take_registry_ids_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.manager import DatabaseScriptManager

    use_config(tmp_path, monkeypatch, allow_inline_databases=True)
    sent: list[Any] = []

    class Recorder:
        def send_task(self, *a: Any, **kw: Any) -> None:
            sent.append(a)

    manager = DatabaseScriptManager(Recorder())  # type: ignore[arg-type]
    inline = {"kind": "postgresql", "host": "evil", "password_env": "DBFLEET_REPO_KEY"}
    with pytest.raises(ConfigError, match="expected a registry id"):
        manager.execute_script("health_check", inline)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="options.target: an inline database config cannot travel"):
        manager.execute_script("restore", "music", {"target": inline})
    with pytest.raises(ConfigError, match="options.target.password_env: secrets cannot travel"):
        manager.execute_script("restore", "music", {"target": {"password_env": "X"}})
    assert sent == []
    rows = runtime.history().query(None, None, None, None, 10)
    assert rows and all("DBFLEET_REPO_KEY" not in str(r) and "evil" not in str(r) for r in rows)
    assert os.environ["DBFLEET_REPO_KEY"] == CANARY
