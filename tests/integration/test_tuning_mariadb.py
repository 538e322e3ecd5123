"""MariaDB index advice from EXPLAIN on the real server's workload, applied IGNORED first and kept only when
proven. This machine's MariaDB runs with performance_schema OFF (a restart-only setting on a shared server),
so the workload comes from the slow log written to a table: the fixture turns that on (long_query_time 0 for
the workload's session only) and restores the server's settings after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pymysql
import pytest

from engines.config import DatabaseConfig
from engines.migration.sources import my_ident
from engines.tuning import analyze, analyze_and_apply, revert
from engines.tuning.base import TuningSettings
from engines.tuning.my_workload import normalized, read_workload, shape
from engines.tuning.targets import Targets
from tests.servers import require

TABLE = "pl`ays"


def root(host: str, port: int, db: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=host, port=port, user="root", database=db, autocommit=True)


@pytest.fixture(scope="module")
def workload_db() -> Iterator[DatabaseConfig]:
    """A schema with 20,000 plays and the workload below recorded in mysql.slow_log (once per module: the
    apply tests revert what they keep, so every test starts from the same indexes)."""
    host, port = require("mariadb")
    name = f"h16_tuning_my_{uuid.uuid4().hex[:8]}"
    conn = root(host, port)
    with conn.cursor() as cur:
        cur.execute("SELECT @@global.log_output, @@global.slow_query_log")
        saved = cur.fetchone()
        cur.execute(f"CREATE DATABASE {my_ident(name)}")
        cur.execute(f"CREATE TABLE {my_ident(name, TABLE)} (id int AUTO_INCREMENT PRIMARY KEY, user_id int NOT NULL,"
                    " kind int NOT NULL, track_id int NOT NULL, flag tinyint NOT NULL, note varchar(40),"
                    " KEY track (track_id))")
        cur.execute("SET SESSION max_recursive_iterations = 30000")
        cur.execute(f"INSERT INTO {my_ident(name, TABLE)} (user_id, kind, track_id, flag, note) WITH RECURSIVE g(n) AS"  # noqa: S608
                    " (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000) SELECT n % 2000, n % 7, n % 3000,"
                    " n % 2, CONCAT('n', n) FROM g")
        cur.execute(f"ANALYZE TABLE {my_ident(name, TABLE)}")
        cur.fetchall()
        cur.execute("SET GLOBAL log_output = 'FILE,TABLE'")
        cur.execute("SET GLOBAL slow_query_log = ON")
    try:
        with root(host, port, name) as w, w.cursor() as cur:
            cur.execute("SET SESSION long_query_time = 0")
            t = my_ident(TABLE)  # values are sent as literals by PyMySQL: the slow log records runnable text
            for i in range(6):
                cur.execute(f"SELECT id, note FROM {t} WHERE user_id = %s AND kind = %s", (17 + i, i % 7))  # noqa: S608
                cur.execute(f"SELECT COUNT(*) FROM {t} WHERE user_id = %s", (40 + i,))  # noqa: S608 - quoted
                cur.execute(f"SELECT COUNT(*) FROM {t} WHERE track_id = %s", (i,))  # noqa: S608 - indexed: no advice
                cur.execute(f"SELECT * FROM {t} WHERE flag = %s", (i % 2,))  # noqa: S608 - half the rows: no help
                cur.fetchall()
        yield DatabaseConfig(id=name, kind="mysql", host=host, port=port, user="root", dbname=name)
    finally:
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL log_output = %s", (saved[0],))
            cur.execute("SET GLOBAL slow_query_log = %s", (saved[1],))
            cur.execute(f"DROP DATABASE IF EXISTS {my_ident(name)}")
        conn.close()


def index_state(db: DatabaseConfig) -> dict[str, str]:
    """Index name -> IGNORED (YES/NO) on the plays table."""
    with root(db.host or "", db.port or 3306) as c, c.cursor() as cur:
        cur.execute("SELECT DISTINCT index_name, ignored FROM information_schema.statistics WHERE table_schema = %s"
                    " AND table_name = %s", (db.dbname, TABLE))
        return {str(n): str(i) for n, i in cur.fetchall()}


def test_explain_on_the_slow_log_workload_advises_the_composite_and_nothing_for_indexed_queries(
        workload_db: DatabaseConfig) -> None:
    report = analyze(workload_db, TuningSettings(only=("indexes",)))
    assert any("performance_schema is OFF" in line and "mysql.slow_log" in line for line in report.limits)
    assert sorted((a.table, a.columns) for a in report.indexes) == [(TABLE, ["flag"]), (TABLE, ["user_id", "kind"])]
    [composite] = [a for a in report.indexes if a.columns == ["user_id", "kind"]]
    assert composite.statement == f"ALTER TABLE `{workload_db.dbname}`.`pl``ays` ADD INDEX `pl_ays_user_id_kind_idx` " \
                                  "(`user_id`, `kind`)"
    assert not composite.proven and "proven at apply" in (composite.note or "")
    assert {q.calls for q in composite.queries} == {6} and len(composite.queries) == 2
    assert report.workload["statements"] == 4


@pytest.mark.parametrize("verify", ["plan", "execute"])
def test_apply_builds_ignored_first_keeps_the_proven_index_visible_and_drops_the_useless_one(
        workload_db: DatabaseConfig, verify: str) -> None:
    report = analyze_and_apply(workload_db, TuningSettings(only=("indexes",), verify=verify))
    status = {c.target["index"]: c for c in report.changes}
    kept, dropped = status["pl_ays_user_id_kind_idx"], status["pl_ays_flag_idx"]
    assert kept.status == "kept" and kept.evidence["built"] == "IGNORED" and kept.statement.endswith(" IGNORED")
    assert kept.evidence["rows_after"] < kept.evidence["rows_before"] and kept.evidence["used_by"]
    assert dropped.status == "rolled_back" and dropped.evidence["used_by"] == []
    assert kept.evidence["decided_by"] == ("measured time" if verify == "execute" else "EXPLAIN rows")
    indexes = index_state(workload_db)
    assert indexes.get("pl_ays_user_id_kind_idx") == "NO" and "pl_ays_flag_idx" not in indexes  # visible; gone
    record = report.to_dict()["changes"]
    undone = revert(workload_db, TuningSettings(), next(c for c in record if c["status"] == "kept"))
    assert undone["result"] == "dropped" and "pl_ays_user_id_kind_idx" not in index_state(workload_db)


def test_without_performance_schema_or_a_slow_log_table_the_report_says_what_to_turn_on() -> None:
    limits: list[str] = []
    got = read_workload(lambda *a: [], "x", {"performance_schema": "OFF", "log_output": "FILE",
                                             "slow_query_log": "OFF"}, {}, limits, Targets())
    assert got == [] and "no workload: performance_schema is OFF" in limits[0]
    assert "SET GLOBAL log_output='FILE,TABLE'" in limits[0]


def test_the_mysql_parser_reads_columns_and_groups_statements_by_their_literal_free_form() -> None:
    cols = {("s", "orders"): ["id", "customer_id", "status", "created_at"], ("s", "c"): ["id", "email"]}
    got = shape("SELECT o.id FROM `orders` o JOIN c ON c.id = o.customer_id WHERE c.email = 'x%y' AND o.status IN"
                " (1, 2) AND o.created_at > '2026-01-01' ORDER BY o.id", "s", cols)
    assert got is not None
    assert (got.uses[("s", "orders")].eq, got.uses[("s", "orders")].range) == (["status"], ["created_at"])
    assert got.uses[("s", "c")].eq == ["email"] and got.uses[("s", "orders")].join == ["customer_id"]
    assert normalized("SELECT * FROM t WHERE a = 5") == normalized("select * from t where a = 7")
    assert normalized("CREATE TABLE t (x int)") is None


def test_a_timed_run_of_a_statement_that_writes_is_refused_and_changes_nothing(workload_db: DatabaseConfig) -> None:
    from engines.tuning.my_indexes import MyIndexApplier

    with root(workload_db.host or "", workload_db.port or 3306, workload_db.dbname) as conn:
        def q(statement: str, args: tuple[object, ...] | None = None) -> list[tuple[object, ...]]:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                return list(cur.fetchall())

        applier = MyIndexApplier(q, True, workload_db.id, TuningSettings(verify="execute"))
        got = applier.timed(f"DELETE FROM {my_ident(TABLE)} WHERE flag = 1")  # noqa: S608 - quoted
        assert isinstance(got, str) and got.startswith("not timed") and "READ ONLY" in got
        assert isinstance(applier.timed(f"SELECT COUNT(*) FROM {my_ident(TABLE)}"), float)  # noqa: S608
        assert q(f"SELECT COUNT(*), @@max_statement_time FROM {my_ident(TABLE)}") == [(20000, 0.0)]  # noqa: S608
