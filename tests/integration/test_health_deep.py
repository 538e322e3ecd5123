"""Deep health checks against a real PostgreSQL 18: each condition is provoked for real (a long query,
an idle transaction, a blocked lock, too many connections, a query slower than its baseline), goes
warning or critical, and goes back to ok when it ends. Redis without noeviction as a broker is flagged."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engines.health import run_health
from tests.conftest import db
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration


def _connect(pg: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", password=CANARY, dbname="postgres",
                           autocommit=True)


def _target(pg: Any, **thresholds: float) -> Any:
    return db("pg18_health", kind="postgresql", host="127.0.0.1", port=pg.port, dbname="postgres", user="postgres",
              password_env="DBFLEET_TEST_CANARY", thresholds=thresholds)


def _check(pg: Any, name: str, memory: dict[str, Any] | None = None, **thresholds: float) -> Any:
    report = run_health(_target(pg, **thresholds), memory=memory if memory is not None else {})
    assert report.error is None
    return report.check(name)


def _wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.fixture
def background(embedded_pg: Any) -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for t in threads:
        t.join(timeout=30)


def _active(pg: Any, like: str) -> bool:
    with _connect(pg) as c:
        return bool(c.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'"
                              " AND pid <> pg_backend_pid()", (like,)).fetchone()[0])


def test_long_running_query_warns_then_clears(embedded_pg: Any, background: list[threading.Thread]) -> None:
    def sleeper() -> None:
        with _connect(embedded_pg) as c:
            c.execute("SELECT pg_sleep(2.5) /* dbfleet-long */")

    background.append(threading.Thread(target=sleeper))
    background[-1].start()
    _wait_until(lambda: _active(embedded_pg, "%dbfleet-long%"))
    time.sleep(0.8)
    long = _check(embedded_pg, "long_running_queries", long_running_query_seconds=0.5)
    assert long.status == "warning" and long.value >= 1 and "pg_cancel_backend" in long.hint
    crit = _check(embedded_pg, "long_running_queries", long_running_query_seconds=0.05)
    assert crit.status == "critical"  # running more than 10x the threshold
    background[-1].join()
    assert _check(embedded_pg, "long_running_queries", long_running_query_seconds=0.5).status == "ok"


def test_idle_in_transaction_warns_then_clears(embedded_pg: Any) -> None:
    with _connect(embedded_pg) as idle:
        idle.execute("BEGIN")
        idle.execute("SELECT 1")
        time.sleep(0.7)
        found = _check(embedded_pg, "idle_in_transaction", idle_in_transaction_seconds=0.5)
        assert found.status == "warning" and found.value >= 0.5
        idle.execute("ROLLBACK")
    assert _check(embedded_pg, "idle_in_transaction", idle_in_transaction_seconds=0.5).status == "ok"


def test_blocked_query_warns_then_clears(embedded_pg: Any, background: list[threading.Thread]) -> None:
    with _connect(embedded_pg) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS health_lock_target (id int)")
    holder = _connect(embedded_pg)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE health_lock_target IN ACCESS EXCLUSIVE MODE")

    def waiter() -> None:
        with _connect(embedded_pg) as c:
            c.execute("SELECT count(*) FROM health_lock_target /* dbfleet-blocked */")

    background.append(threading.Thread(target=waiter))
    background[-1].start()
    _wait_until(lambda: _active(embedded_pg, "%dbfleet-blocked%"))
    time.sleep(0.4)
    blocked = _check(embedded_pg, "blocked_queries", lock_wait_seconds=0.1)
    assert blocked.status in ("warning", "critical") and blocked.value >= 1 and "pg_blocking_pids" in blocked.hint
    holder.execute("ROLLBACK")
    holder.close()
    background[-1].join()
    assert _check(embedded_pg, "blocked_queries", lock_wait_seconds=0.1).status == "ok"


def test_connections_over_a_low_threshold_then_back(embedded_pg: Any) -> None:
    baseline = _check(embedded_pg, "connections", connections_percent=90)
    extra = [_connect(embedded_pg) for _ in range(8)]
    try:
        busy = _check(embedded_pg, "connections", connections_percent=baseline.value + 4)
        assert busy.status in ("warning", "critical") and busy.value >= baseline.value + 8
    finally:
        for c in extra:
            c.close()
    assert _check(embedded_pg, "connections", connections_percent=baseline.value + 4).status == "ok"


def test_query_slower_than_its_baseline_is_flagged_then_recovers(embedded_pg: Any) -> None:
    with _connect(embedded_pg) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    memory: dict[str, Any] = {}

    def run(seconds: float, times: int = 6) -> None:
        with _connect(embedded_pg) as c:
            for _ in range(times):
                c.execute("SELECT pg_sleep(%s) /* dbfleet-baseline */", (seconds,))

    assert _check(embedded_pg, "query_performance", memory).status == "ok"      # first snapshot
    run(0.005)
    assert _check(embedded_pg, "query_performance", memory).status == "ok"      # baseline set: ~5 ms
    run(0.006)
    assert _check(embedded_pg, "query_performance", memory).status == "ok"      # within +50 %
    run(0.05)
    slow = _check(embedded_pg, "query_performance", memory)
    assert slow.status == "warning" and slow.value > 300 and "queryid" in slow.hint
    run(0.005)
    assert _check(embedded_pg, "query_performance", memory).status == "ok"      # the regression never became the baseline


def test_query_performance_without_the_extension_is_unknown_with_the_fix() -> None:
    require("postgresql15")
    report = run_health(db("pg15", kind="postgresql", host="127.0.0.1", dbname="test", user="postgres"))
    perf = report.check("query_performance")
    assert perf.status == "unknown" and "CREATE EXTENSION pg_stat_statements" in perf.hint
    # an unknown check does not degrade the database: only warnings and criticals do
    degrading = [c.check for c in report.checks if c.status in ("warning", "critical")]
    assert report.status == ("degraded" if degrading else "up"), degrading


def test_every_postgres_check_reports(embedded_pg: Any) -> None:
    report = run_health(_target(embedded_pg))
    names = {c.check for c in report.checks}
    assert {"connections", "long_running_queries", "idle_in_transaction", "blocked_queries", "cache_hit_ratio",
            "replication_lag", "inactive_replication_slots", "transaction_id_age", "sequences", "dead_tuples",
            "largest_table", "invalid_indexes", "query_performance", "database_size"} <= names
    assert report.check("transaction_id_age").unit == "%" and report.check("replication_lag").status == "ok"


def test_redis_broker_without_noeviction_is_critical(embedded_redis: Any) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=embedded_redis.port)
    saved = client.config_get("maxmemory-policy")["maxmemory-policy"]
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        broker = run_health(db("broker", kind="redis", host="127.0.0.1", port=embedded_redis.port, tags=["broker"]))
        cache = run_health(db("cache", kind="redis", host="127.0.0.1", port=embedded_redis.port))
    finally:
        client.config_set("maxmemory-policy", saved)
    assert broker.check("maxmemory_policy").status == "critical" and "noeviction" in broker.check("maxmemory_policy").hint
    assert broker.status == "degraded"
    assert cache.check("maxmemory_policy").status == "ok"  # a plain cache may evict


def test_mariadb_checks_report(mariadb_canary_user: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARIA_PW", CANARY)
    memory: dict[str, Any] = {}
    target = db("maria", kind="mysql", host="127.0.0.1", user=mariadb_canary_user, password_env="MARIA_PW")
    run_health(target, memory=memory)
    report = run_health(target, memory=memory)
    for name in ("connections", "aborted_connections", "slow_queries", "replication_lag",
                 "innodb_buffer_pool_hit_ratio"):
        assert report.check(name) is not None and report.check(name).status in ("ok", "warning", "unknown"), name
    assert report.check("slow_queries").value is not None  # the second run has a delta


@pytest.mark.skipif(not __import__("os").environ.get("DBFLEET_TEST_MONGODB_URL"),
                    reason="no MongoDB server here: set DBFLEET_TEST_MONGODB_URL to run the MongoDB health checks")
def test_mongodb_health_on_a_real_server() -> None:
    import os

    report = run_health(db("mongo", kind="mongodb", dsn=os.environ["DBFLEET_TEST_MONGODB_URL"]))
    assert report.status in ("up", "degraded") and report.check("connections").unit == "%"
    assert report.check("replication_lag") is not None


@pytest.mark.skipif(not __import__("os").environ.get("DBFLEET_TEST_ELASTICSEARCH_URL"),
                    reason="no Elasticsearch here: set DBFLEET_TEST_ELASTICSEARCH_URL to run the ES health checks")
def test_elasticsearch_health_on_a_real_server() -> None:
    import os

    report = run_health(db("es", kind="elasticsearch", dsn=os.environ["DBFLEET_TEST_ELASTICSEARCH_URL"]))
    assert report.check("cluster_status").value in ("green", "yellow", "red")
    assert report.check("heap").unit == "%" and report.check("disk").unit == "%"
