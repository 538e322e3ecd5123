"""The ClickHouse migration target against the real server (Debian's 18.16, started per session): types mapped
for the server's version, TabSeparated inserts, checkpoints, validation by row hashes on both sides naming
the tampered range, rollback. The class is found through the kinds registry."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from engines.connectors.clickhouse import quote_ident
from engines.kinds import load
from engines.migration import engine
from engines.migration.model import Batch, Column, MigrationPlan, Table
from tests.conftest import db
from tests.integration.backup_cases import pg_admin
from tests.servers import ClickHouseServer, require

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
    rows = [(7, "Zoë's song", Decimal("1.50"), None, None, False), (8, "tab\there", Decimal("2.25"), "x", b"\x00\xff", True)]
    assert target.write(plan, PLAYS, 0, rows) == 2
    assert target.write(plan, PLAYS, 0, rows) == 2  # a redelivered batch: ReplacingMergeTree collapses it
    table = f"{quote_ident(DB)}.{quote_ident('pla`ys')}"
    got = clickhouse.query(f"SELECT * FROM {table} FINAL ORDER BY user_id FORMAT TSV")  # noqa: S608 - quoted
    assert got == "7\tZoë\\'s song\t1.50\t\\N\t\\N\t0\n8\ttab\\there\t2.25\tx\t00ff\t1\n"
    assert target.done(plan, 0) is not None and target.done(plan, 1) is None
    assert target.measure(plan, PLAYS) == (2, target.checkpoints(plan)[0]["checksum"])  # the lines sent, read back
    assert target.checkpoints(plan)[0]["rows"] == 2
    assert target.rollback(plan) == ["chtable:pla`ys"]
    assert clickhouse.query(f"EXISTS TABLE {quote_ident(DB)}.{quote_ident('pla`ys')}").strip() == "0"
    assert target.checkpoints(plan) == {}  # rolled back: a new run starts over
    assert target.rollback(plan) == ["chtable:pla`ys"]  # idempotent: DROP TABLE IF EXISTS


def test_clickhouse_target_takes_timestamp_columns_on_the_debian_server(clickhouse: ClickHouseServer,
                                                                       target: Any) -> None:
    """18.16 has no DateTime64: a timestamp with a fraction becomes Int64 microseconds since the epoch (exact),
    timestamp(0) a DateTime('UTC'); the version is read from the server."""
    assert target.version()[:2] == (18, 16)
    table = Table("public.ev", "public", "ev", "public", "ev", [
        Column("id", "integer", "integer", False), Column("at", "timestamp with time zone", "timestamptz", False),
        Column("naive", "timestamp without time zone", "timestamp without time zone"),
        Column("whole", "timestamp(0) with time zone", "timestamp(0) with time zone")], ["id"])
    plan = _plan([table])
    plan.created = target.prepare(plan)
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)
    old = dt.datetime(1901, 12, 14, 0, 0, 0, 1)  # before the epoch: negative microseconds, still exact
    assert target.write(plan, table, 0, [(1, at, old, at.replace(microsecond=0))]) == 1
    types = clickhouse.query(f"SELECT name, type FROM system.columns WHERE database = '{DB}'"  # noqa: S608
                             " AND table = 'ev' FORMAT TSV")
    assert types == "id\tInt32\nat\tInt64\nnaive\tNullable(Int64)\nwhole\tNullable(DateTime(\\'UTC\\'))\n"
    got = clickhouse.query(f"SELECT at, naive, toString(whole), toDateTime(intDiv(at, 1000000), 'UTC')"  # noqa: S608
                           f" FROM {quote_ident(DB)}.ev FORMAT TSV")
    micros = (at - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    naive = (old - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    assert got == f"{micros}\t{naive}\t2026-01-02 03:04:05\t2026-01-02 03:04:05\n"
    assert any("microseconds since 1970-01-01 UTC" in n for n in target.plan_notes(plan))


# ------------------------------------------------------------------ PostgreSQL -> ClickHouse end to end
SOURCE_SQL = [
    """CREATE TABLE "ty;pes" (id bigint PRIMARY KEY, at timestamptz NOT NULL, at0 timestamp(0), d date,
       price numeric(12,3), big numeric, f4 real, f8 double precision, ok boolean, u uuid, j jsonb, b bytea,
       t text, tags text[], nums int[], "we`ird ""col" varchar(10))""",
    r"""INSERT INTO "ty;pes" SELECT g, timestamptz '2026-03-01 00:00:00.000001+00' + g * interval '1.5 second',
       CASE WHEN g % 5 <> 0 THEN timestamp '2025-12-31 23:59:59' + g * interval '1 hour' END,
       date '2000-02-29' + g, g * 1.125, 10 ^ 30 + g, g / 3.0, CASE WHEN g % 7 = 0 THEN NULL ELSE g / 7.0 END,
       g % 2 = 0, md5(g::text)::uuid, jsonb_build_object('g', g, 'ü', 'x'), decode(lpad(to_hex(g), 4, '0'), 'hex'),
       CASE WHEN g % 4 = 0 THEN NULL ELSE E'tab\there\nnew ''q'' \\ ü☃ ' || g END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE ARRAY['a''b', E'back\\slash', NULL, 'tab' || chr(9) || g] END,
       ARRAY[g, NULL, -g], 'w' || g FROM generate_series(1, 120) g""",
]


def _pg(name: str) -> Any:
    return db(name, kind="postgresql", host="127.0.0.1", dbname=name, user="postgres")


@pytest.fixture
def pg_source() -> Iterator[Any]:
    require("postgresql15")
    name = f"h20a_chs_{uuid.uuid4().hex[:8]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as c:
        for stmt in SOURCE_SQL:
            c.execute(stmt)
    yield _pg(name)
    with pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def ch_target(clickhouse: ClickHouseServer) -> Iterator[Any]:
    name = f"h20a_cht_{uuid.uuid4().hex[:8]}"
    clickhouse.query(f"CREATE DATABASE {quote_ident(name)}")
    yield db("h20a_ch", kind="clickhouse", host=clickhouse.host, port=clickhouse.http_port, dbname=name)
    clickhouse.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}")


def _migrate(source: Any, target: Any, **options: Any) -> tuple[MigrationPlan, dict[str, Any]]:
    plan = engine.prepare(engine.plan_migration(source, target, **options), source, target)
    for b in plan.batches:
        engine.copy_batch(plan, b.id, source, target)
    engine.finalize(plan, source, target)
    return plan, engine.validate(plan, source, target)


def test_postgresql_into_clickhouse_keeps_every_type_and_validation_names_a_tampered_range(
        pg_source: Any, ch_target: Any, clickhouse: ClickHouseServer) -> None:
    plan, report = _migrate(pg_source, ch_target, batch_size=25)
    assert report["ok"], str(report["tables"])
    entry = report["tables"][0]
    assert entry["source_rows"] == entry["target_rows"] == 120 and entry["batches"] == 5
    name = f"{quote_ident(ch_target.dbname)}.{quote_ident('ty;pes')}"
    types = dict(line.split("\t") for line in clickhouse.query(
        f"SELECT name, type FROM system.columns WHERE database = '{ch_target.dbname}' AND table = 'ty;pes'"  # noqa: S608
        " FORMAT TSVRaw").splitlines())
    assert types == {"id": "Int64", "at": "Int64", "at0": "Nullable(DateTime('UTC'))", "d": "Nullable(Date)",
                     "price": "Nullable(Decimal(12, 3))", "big": "Nullable(String)", "f4": "Nullable(Float32)",
                     "f8": "Nullable(Float64)", "__dbfleet_bits_f4": "Nullable(Int32)",
                     "__dbfleet_bits_f8": "Nullable(Int64)", "ok": "Nullable(UInt8)", "u": "Nullable(UUID)",
                     "j": "Nullable(String)", "b": "Nullable(String)", "t": "Nullable(String)",
                     "tags": "Array(Nullable(String))",
                     "nums": "Array(Nullable(Int32))", 'we`ird "col': "Nullable(String)"}
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=pg_source.dbname) as c:
        want = c.execute("""SELECT (extract(epoch FROM at) * 1000000)::bigint, at0::text, d::text, price::text, big::text,
                            f8, u::text, j::text, encode(b, 'hex'), t, tags, nums FROM "ty;pes" WHERE id = 3""").fetchone()
    got = clickhouse.query(f"SELECT at, toString(at0), toString(d), toString(price), big, f8, toString(u), j, b, t,"  # noqa: S608
                           f" tags, nums FROM {name} FINAL WHERE id = 3 FORMAT JSONEachRow")
    row = json.loads(got)
    assert [int(row["at"]), row["toString(at0)"], row["toString(d)"], row["toString(price)"], row["big"], row["f8"],
            row["toString(u)"], row["j"], row["b"], row["t"], row["tags"], row["nums"]] == list(want)
    assert clickhouse.query(f"SELECT count() FROM {name} FINAL WHERE empty(tags)").strip() == "20"  # noqa: S608 - NULL arrays: []
    assert any("tags: a NULL array arrives as []" in n for n in plan.notes)
    batch = next(b for b in plan.batches if b.lo is not None and b.lo[0] <= 60 and (b.hi is None or 60 < b.hi[0]))
    named = [{"batch": batch.id, "from": batch.lo, "to": batch.hi, "source_rows": 25, "target_rows": 25}]
    # tamper one row in place (a mutation: as many rows as written, read without FINAL): its range is named
    clickhouse.query(f"ALTER TABLE {name} UPDATE t = 'tampered' WHERE id = 60")
    for _ in range(600):  # mutations run in the background on 18.16: wait until this one is done
        if clickhouse.query(f"SELECT min(is_done) FROM system.mutations WHERE database = '{ch_target.dbname}'"  # noqa: S608
                            ).strip() == "1":
            break
        time.sleep(0.05)
    report = engine.validate(plan, pg_source, ch_target)
    assert not report["ok"] and report["tables"][0]["mismatched_ranges"] == named
    # and as a new version of the row (a second row with its key: read with FINAL)
    cols = ", ".join("'tampered again'" if c == "t" else quote_ident(c) for c in types)
    clickhouse.query(f"INSERT INTO {name} SELECT {cols} FROM {name} FINAL WHERE id = 60")  # noqa: S608 - quoted
    report = engine.validate(plan, pg_source, ch_target)
    assert not report["ok"] and report["tables"][0]["mismatched_ranges"] == named
    engine.rollback(plan, pg_source, ch_target)
    assert clickhouse.query(f"EXISTS TABLE {name}").strip() == "0"
