"""The MongoDB, Elasticsearch and ClickHouse migration writers without their servers: document ids, value
conversion, the index mapping and table DDL derived from column types. The ClickHouse HTTP protocol runs
against the real server in tests/integration/test_clickhouse_target.py."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from engines.errors import ConfigError
from engines.migration.clickhouse_target import ClickHouseTarget, clickhouse_ddl
from engines.migration.clickhouse_types import ch_columns
from engines.migration.document_targets import MongoTarget, doc_id, es_mapping, id_checksum
from engines.migration.model import Batch, Column, MigrationPlan, Table

TABLE = Table("public.plays", "public", "plays", "public", "plays", [
    Column("user_id", "integer", "integer", False), Column("at", "timestamptz", "timestamptz", False),
    Column("track", "text", "text"), Column("price", "numeric(10,2)", "numeric(10,2)"),
    Column("tag", "character varying(20)", "character varying(20)"), Column("blob", "bytea", "bytea"),
    Column("we`ird", "boolean", "boolean")], ["user_id", "at"])


def _plan(tables: list[Table] | None = None) -> MigrationPlan:
    return MigrationPlan("mig-1", {"kind": "postgresql"}, {"kind": "clickhouse", "dbname": "an`alytics"}, "full",
                         10, 1, True, tables or [TABLE], [Batch(0, "public.plays", None, None)], "rows")


def test_ids_and_mongo_values() -> None:
    row = (7, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "song", Decimal("1.50"), "x", b"\x00\x01", True)
    assert doc_id(TABLE, row) == "7|2026-01-02 03:04:05+00:00"
    from bson import Binary, Decimal128

    (_id, doc), = MongoTarget(None).documents(TABLE, [row])
    assert doc["price"] == Decimal128("1.50") and doc["blob"] == Binary(b"\x00\x01") and doc["at"] == row[1]
    assert id_checksum(["a", "b"]) == id_checksum(["b", "a"]) != id_checksum(["a"])


def test_elasticsearch_mapping_from_column_types() -> None:
    props = es_mapping(TABLE)["properties"]
    assert props["user_id"] == {"type": "integer"} and props["at"] == {"type": "date"}
    assert props["price"] == {"type": "double"} and props["tag"] == {"type": "keyword"}
    assert props["track"]["type"] == "text" and props["blob"] == {"type": "binary"}


def test_clickhouse_ddl_quotes_names_and_orders_by_the_key() -> None:
    ddl = clickhouse_ddl(TABLE, "an`alytics", ch_columns(TABLE, (20, 1)))  # a server with DateTime64
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS `an\\`alytics`.`plays` (")
    assert "`user_id` Int32" in ddl and "`at` DateTime64(6, 'UTC')" in ddl and "`price` Nullable(Decimal(10, 2))" in ddl
    assert "`at` Int64" in clickhouse_ddl(TABLE, "a", ch_columns(TABLE, (18, 16)))  # Debian's 18.16: microseconds
    assert "`we\\`ird` Nullable(UInt8)" in ddl and ddl.endswith("ENGINE = ReplacingMergeTree ORDER BY (`user_id`, `at`)")


def test_document_targets_need_a_primary_key() -> None:
    keyless = Table("public.log", "public", "log", "public", "log", [Column("x", "text", "text")], [])
    with pytest.raises(ConfigError, match="no primary key"):
        ClickHouseTarget("http://127.0.0.1:9", None, None).prepare(_plan([keyless]))
