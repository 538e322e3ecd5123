"""MySQL/MariaDB and Redis tuning advice on the machine's real servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from engines.config import DatabaseConfig
from engines.migration.sources import my_ident
from engines.tuning import analyze
from engines.tuning.base import TuningSettings
from tests.servers import require

DBNAME = "h7_tuning_my"


@pytest.fixture
def mariadb() -> Iterator[DatabaseConfig]:
    host, port = require("mariadb")
    conn = pymysql.connect(host=host, port=port, user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS " + my_ident(DBNAME))
        cur.execute("CREATE DATABASE " + my_ident(DBNAME))
        cur.execute("CREATE TABLE " + my_ident(DBNAME, "we`ird") + " (id int PRIMARY KEY, a int, b int,"
                    " KEY ka (a), KEY kab (a, b), KEY kb (b))")
    yield DatabaseConfig(id=DBNAME, kind="mysql", host=host, port=port, user="root", dbname=DBNAME)
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS " + my_ident(DBNAME))
    conn.close()


def test_mariadb_advice_names_the_redundant_index_and_reads_the_server(mariadb: DatabaseConfig) -> None:
    report = analyze(mariadb, TuningSettings(host={"memory_bytes": 64 * 1024**3}))
    dupes = [(f.object, f.statement) for f in report.hygiene if f.check == "duplicate_indexes"]
    assert dupes == [(f"{DBNAME}.we`ird.ka", f"ALTER TABLE `{DBNAME}`.`we``ird` DROP INDEX `ka`")]
    with pymysql.connect(host=mariadb.host, port=mariadb.port, user="root") as conn, conn.cursor() as cur:
        cur.execute("SELECT @@slow_query_log, @@performance_schema")
        slow_log, perf_schema = cur.fetchone()
    names = {s.name for s in report.settings}
    assert ("slow_query_log" in names) == (not slow_log)
    assert any("performance_schema is OFF" in line for line in report.limits) == (not perf_schema)
    assert report.server_version
    assert any(line.startswith("indexes: ") and "performance_schema is OFF" in line for line in report.limits) == (
        not perf_schema)  # the workload source (or its absence) is named


def test_redis_advice_on_a_real_server_finds_the_big_key_and_the_memory_limit(embedded_redis: Any) -> None:
    import redis

    client = redis.Redis.from_url(f"{embedded_redis.url}/9")
    client.flushdb()
    client.set("h7_tuning:big", b"x" * (2 * 1024 * 1024))
    client.set("h7_tuning:small", b"y")
    original = client.config_get("maxmemory")["maxmemory"]
    client.config_set("maxmemory", 0)
    try:
        db = DatabaseConfig(id="h7_tuning_redis", kind="redis", host="127.0.0.1", port=int(embedded_redis.port),
                            dbname="9")
        report = analyze(db, TuningSettings(host={"memory_bytes": 4 * 1024**3}))
    finally:
        client.config_set("maxmemory", original)
    assert [(f.check, f.object) for f in report.hygiene if f.check == "big_keys"] == [("big_keys", "h7_tuning:big")]
    advice = {s.name: s for s in report.settings}
    assert advice["maxmemory"].current == "0 (unbounded)" and advice["maxmemory"].advised == "3072mb"
    assert report.workload["keys_sampled"] == 2
    client.flushdb()
