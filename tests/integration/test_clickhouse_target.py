"""The ClickHouse migration target against the real server (replaces the loopback stand-in that
tests/unit/test_document_targets.py used): DDL, JSONEachRow inserts, checkpoints, measure, rollback.
The class is found through the kinds registry, so it follows the migration package's refactor."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from engines.connectors.clickhouse import quote_ident
from engines.kinds import load
from engines.migration.model import Batch, Column, MigrationPlan, Table
from tests.servers import ClickHouseServer

pytestmark = pytest.mark.integration
DB = "h5_an`alytics"
PLAYS = Table("public.plays", "public", "plays", "public", "pla`ys", [
    Column("user_id", "integer", "integer", False), Column("track", "text", "text"),
    Column("price", "numeric(10,2)", "numeric(10,2)"), Column("tag", "character varying(20)", "character varying(20)"),
    Column("blob", "bytea", "bytea"), Column("we`ird", "boolean", "boolean")], ["user_id"])


def _plan(tables: list[Table]) -> MigrationPlan:
    return MigrationPlan("h5-mig-1", {"kind": "postgresql"}, {"kind": "clickhouse", "dbname": DB}, "full",
                         10, 1, True, tables, [Batch(0, tables[0].source, None, None)], "rows")


@pytest.fixture
def target(clickhouse: ClickHouseServer) -> Any:
    clickhouse.query(f"DROP DATABASE IF EXISTS {quote_ident(DB)}")
    clickhouse.query(f"CREATE DATABASE {quote_ident(DB)}")
    return load("clickhouse", "target")(clickhouse.url, "default", None)


def test_clickhouse_target_creates_writes_checkpoints_measures_and_rolls_back(clickhouse: ClickHouseServer,
                                                                            target: Any) -> None:
    plan = _plan([PLAYS])
    plan.created = target.prepare(plan)
    assert plan.created == ["chtable:pla`ys"]
    rows = [(7, "Zoë's song", Decimal("1.50"), None, None, False), (8, "tab\there", Decimal("2.25"), "x", None, True)]
    assert target.write(plan, PLAYS, 0, rows) == 2
    assert target.write(plan, PLAYS, 0, rows) == 2  # a redelivered batch: ReplacingMergeTree collapses it
    table = f"{quote_ident(DB)}.{quote_ident('pla`ys')}"
    got = clickhouse.query(f"SELECT * FROM {table} FINAL ORDER BY user_id FORMAT TSV")  # noqa: S608 - quoted
    assert got == "7\tZoë\\'s song\t1.50\t\\N\t\\N\t0\n8\ttab\\there\t2.25\tx\t\\N\t1\n"
    assert target.done(plan, 0) is not None and target.done(plan, 1) is None
    count, checksum = target.measure(plan, PLAYS)
    assert count == 2 and target.checkpoints(plan)[0]["checksum"] == checksum
    assert target.rollback(plan) == ["chtable:pla`ys"]
    assert clickhouse.query(f"EXISTS TABLE {quote_ident(DB)}.{quote_ident('pla`ys')}").strip() == "0"
    assert target.rollback(plan) == ["chtable:pla`ys"]  # idempotent: DROP TABLE IF EXISTS


@pytest.mark.xfail(strict=True, reason="not done yet (issue 20): timestamp columns map to DateTime64, which "
                                       "ClickHouse 18.16 (Debian's server) does not have (it came in 20.1); the "
                                       "error also reaches the user as a bare 'HTTP Error 404: Not Found'")
def test_clickhouse_target_takes_timestamp_columns_on_the_debian_server(target: Any) -> None:
    table = Table("public.ev", "public", "ev", "public", "ev", [
        Column("id", "integer", "integer", False), Column("at", "timestamptz", "timestamptz", False)], ["id"])
    plan = _plan([table])
    plan.created = target.prepare(plan)
    assert target.write(plan, table, 0, [(1, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))]) == 1
