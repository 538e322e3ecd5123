"""The Source/Target contract (engines/migration/base.py), the same cases for every pair that runs here:
PostgreSQL -> PostgreSQL and MariaDB -> PostgreSQL, on the machine's servers. Hostile names, NULLs,
unicode, a keyless table, a batch killed before its commit then resumed, validation catching a tampered row.
(Document targets run against their named stand-ins in tests/integration/test_migration.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest

from engines.migration import engine
from engines.migration.postgres_target import PostgresTarget
from tests.conftest import db
from tests.integration.backup_cases import pg_admin
from tests.integration.test_migration import mongo_stand_in  # noqa: F401 - the fixture
from tests.servers import require

pytestmark = pytest.mark.integration

PG = ['CREATE TABLE "we;ird ""t" (id int PRIMARY KEY, "v a""l" text, n int)',
      """INSERT INTO "we;ird ""t" SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'ü☃ ' || g END,
         CASE WHEN g % 2 = 0 THEN g END FROM generate_series(1, 50) g""",
      "CREATE TABLE nokey (a int, b text)", "INSERT INTO nokey VALUES (1, 'x'), (1, 'x'), (NULL, NULL)"]
MARIA = ['CREATE TABLE `we;ird "t` (id INT PRIMARY KEY, `v a"l` TEXT, n INT)',
         "INSERT INTO `we;ird \"t` SELECT seq, IF(seq % 3 = 0, NULL, CONCAT('ü☃ ', seq)), IF(seq % 2 = 0, seq, NULL)"
         " FROM seq_1_to_50",
         "CREATE TABLE nokey (a INT, b TEXT)", "INSERT INTO nokey VALUES (1, 'x'), (1, 'x'), (NULL, NULL)"]


def _pg_db(name: str) -> Any:
    return db(name, kind="postgresql", host="127.0.0.1", dbname=name, user="postgres")


@pytest.fixture
def target() -> Iterator[Any]:
    require("postgresql15")
    name = f"h4_ct_{uuid.uuid4().hex[:8]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _pg_db(name)
    with pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgresql", "mariadb"])
def source(request: pytest.FixtureRequest) -> Iterator[Any]:
    name = f"h4_cs_{uuid.uuid4().hex[:8]}"
    if request.param == "postgresql":
        require("postgresql15")
        with pg_admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as c:
            for stmt in PG:
                c.execute(stmt)
        yield _pg_db(name)
        with pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    host, port = require("mariadb")
    conn = pymysql.connect(host=host, port=port, user="root", autocommit=True, charset="utf8mb4")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{name}`")
        for stmt in MARIA:
            cur.execute(stmt)
    yield db("h4_maria", kind="mariadb", host=host, port=port, dbname=name, user="root")
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{name}`")
    conn.close()


def _rows(target: Any, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=target.dbname, autocommit=True) as c:
        return c.execute(query).fetchall()


def test_every_pair_keeps_the_contract(source: Any, target: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = engine.prepare(engine.plan_migration(source, target, batch_size=20), source, target)
    first = plan.batches[0]
    record = PostgresTarget.record

    def killed(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker killed before the batch's commit")

    monkeypatch.setattr(PostgresTarget, "record", killed)
    with pytest.raises(RuntimeError, match="killed"):
        engine.copy_batch(plan, first.id, source, target)
    monkeypatch.setattr(PostgresTarget, "record", record)
    assert _rows(target, "SELECT count(*) FROM _dbfleet_migration.checkpoints") == [(0,)]  # nothing half-written
    for b in plan.batches:  # the resumed run: every batch, the killed one again
        engine.copy_batch(plan, b.id, source, target)
    assert engine.copy_batch(plan, first.id, source, target)["skipped"]  # redelivered: skipped
    engine.finalize(plan, source, target)
    report = engine.validate(plan, source, target)
    assert report["ok"], report
    assert _rows(target, 'SELECT count(*), count("v a""l"), count(n) FROM "we;ird ""t"') == [(50, 34, 25)]
    assert _rows(target, 'SELECT "v a""l" FROM "we;ird ""t" WHERE id = 1') == [("ü☃ 1",)]
    assert sorted(_rows(target, "SELECT a, b FROM nokey"), key=str) == sorted([(1, "x"), (1, "x"), (None, None)],
                                                                               key=str)
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=target.dbname, autocommit=True) as c:
        c.execute('UPDATE "we;ird ""t" SET "v a""l" = \'tampered\' WHERE id = 7')
    report = engine.validate(plan, source, target)
    bad = [t for t in report["tables"] if not t["ok"]]
    assert not report["ok"] and [t["table"].split(".")[-1] for t in bad] == ['we;ird "t']
    assert bad[0]["mismatched_ranges"]


def test_every_source_keeps_the_contract_into_a_document_target(source: Any, mongo_stand_in: Any) -> None:  # noqa: F811
    """Into MongoDB (its named stand-in, mongomock): documents by id, so a batch written but not
    checkpointed (killed in between) is rewritten, not doubled; validation counts documents and ids.
    Keyless tables cannot become documents (refused at plan time, see test_document_targets)."""
    target = db("h4_mongo", kind="mongodb", host="127.0.0.1", dbname=f"h4_ct_{uuid.uuid4().hex[:6]}")
    names = ['public.we;ird "t'] if source.kind == "postgresql" else ['we;ird "t']
    plan = engine.prepare(engine.plan_migration(source, target, tables=names, batch_size=20), source, target)
    for b in plan.batches:
        engine.copy_batch(plan, b.id, source, target)
    store = mongo_stand_in[target.dbname]
    killed = store["_dbfleet_checkpoints"].delete_one({"_id": f"{plan.id}:{plan.batches[0].id}"})  # the kill
    assert killed.deleted_count == 1  # the documents are there, the checkpoint is not
    resumed = [engine.copy_batch(plan, b.id, source, target) for b in plan.batches]
    assert [r["skipped"] for r in resumed] == [False] + [True] * (len(plan.batches) - 1)  # only it runs again
    engine.finalize(plan, source, target)
    assert engine.validate(plan, source, target)["ok"]
    docs = store['we;ird "t']
    assert docs.count_documents({}) == 50 and docs.count_documents({'v a"l': None}) == 16
    assert docs.find_one({"id": 1})['v a"l'] == "ü☃ 1"
    docs.delete_one({"id": 7})  # tampered
    report = engine.validate(plan, source, target)
    assert not report["ok"] and report["tables"][0]["target_rows"] == 49


# ------------------------------------------------------------------ into ClickHouse (the real server)
@pytest.fixture
def clickhouse_target(clickhouse: Any) -> Iterator[Any]:
    from engines.connectors.clickhouse import quote_ident

    name = f"h20a_ct_{uuid.uuid4().hex[:8]}"
    clickhouse.query(f"CREATE DATABASE {quote_ident(name)}")
    yield db("h20a_ch", kind="clickhouse", host=clickhouse.host, port=clickhouse.http_port, dbname=name)
    clickhouse.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}")


def test_every_source_keeps_the_contract_into_clickhouse(source: Any, clickhouse_target: Any, clickhouse: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL (formatted by the server, COPY) and MariaDB (the driver's values) into ClickHouse: a batch
    written but killed before its checkpoint is rewritten on resume (keys collapse), validation by row hashes on
    both sides catches a tampered row and names its range; a keyless table is refused."""
    from engines.connectors.clickhouse import quote_ident
    from engines.errors import ConfigError
    from engines.migration.clickhouse_target import ClickHouseTarget

    target = clickhouse_target
    with pytest.raises(ConfigError, match="no primary key"):
        engine.prepare(engine.plan_migration(source, target), source, target)
    names = ['public.we;ird "t'] if source.kind == "postgresql" else ['we;ird "t']
    plan = engine.prepare(engine.plan_migration(source, target, tables=names, batch_size=20), source, target)
    first = plan.batches[0]
    checkpoint = ClickHouseTarget._checkpoint

    def killed(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker killed before the checkpoint")

    monkeypatch.setattr(ClickHouseTarget, "_checkpoint", killed)
    with pytest.raises(RuntimeError, match="killed"):
        engine.copy_batch(plan, first.id, source, target)
    monkeypatch.setattr(ClickHouseTarget, "_checkpoint", checkpoint)
    for b in plan.batches:  # resumed: the killed batch runs again
        engine.copy_batch(plan, b.id, source, target)
    assert engine.copy_batch(plan, first.id, source, target)["skipped"]
    engine.finalize(plan, source, target)
    report = engine.validate(plan, source, target)
    assert report["ok"], report["tables"]
    weird = 'we;ird "t'
    table = f"{quote_ident(target.dbname)}.{quote_ident(weird)}"
    assert clickhouse.query(f"SELECT count(), count(`v a\"l`), count(n) FROM {table} FINAL") == "50\t34\t25\n"  # noqa: S608
    assert clickhouse.query(f"SELECT `v a\"l` FROM {table} FINAL WHERE id = 1") == "ü☃ 1\n"  # noqa: S608
    clickhouse.query(f"INSERT INTO {table} SELECT id, 'tampered', n FROM {table} FINAL WHERE id = 7")  # noqa: S608
    report = engine.validate(plan, source, target)
    bad = report["tables"][0]["mismatched_ranges"]
    assert not report["ok"] and len(bad) == 1 and bad[0]["batch"] is not None
    assert (bad[0]["from"] is None or bad[0]["from"][0] <= 7) and (bad[0]["to"] is None or 7 < bad[0]["to"][0])


INCREMENTAL = {
    "postgresql": ["CREATE TABLE inc (id int PRIMARY KEY, v text, deleted boolean NOT NULL DEFAULT false,"
                   " updated_at timestamp(6) NOT NULL)",
                   "INSERT INTO inc SELECT g, 'v' || g, false, timestamp '2026-01-01' + g * interval '1 s'"
                   " FROM generate_series(1, 30) g"],
    "mariadb": ["CREATE TABLE inc (id INT PRIMARY KEY, v TEXT, deleted BOOLEAN NOT NULL DEFAULT false,"
                " updated_at DATETIME(6) NOT NULL)",
                "INSERT INTO inc SELECT seq, CONCAT('v', seq), false, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq SECOND"
                " FROM seq_1_to_30"],
}
INCREMENTAL_CHANGES = [
    "UPDATE inc SET v = 'changed', updated_at = TIMESTAMP '2030-01-01 00:00:00' WHERE id <= 3",
    "UPDATE inc SET deleted = true, updated_at = TIMESTAMP '2030-01-02 00:00:00' WHERE id IN (10, 11)",
    "INSERT INTO inc VALUES (31, 'new', false, TIMESTAMP '2030-01-03 00:00:00')",
]


def _source_exec(source: Any, statements: list[str]) -> None:
    if source.kind == "postgresql":
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=source.dbname, autocommit=True) as c:
            for stmt in statements:
                c.execute(stmt)
        return
    conn = pymysql.connect(host=source.host, port=source.port, user="root", database=source.dbname, autocommit=True)
    with conn.cursor() as cur:
        for stmt in statements:
            cur.execute(stmt)
    conn.close()


def _incremental_run(source: Any, target: Any, base: Any = None) -> tuple[Any, int, dict[str, Any]]:
    from engines.migration.model import MigrationType

    name = "public.inc" if source.kind == "postgresql" else "inc"
    plan = engine.prepare(engine.plan_migration(source, target, type=MigrationType.INCREMENTAL, tables=[name],
                                                watermark="updated_at", soft_delete="deleted", batch_size=10,
                                                base=base), source, target)
    copied = sum(engine.copy_batch(plan, b.id, source, target)["rows"] for b in plan.batches)
    engine.finalize(plan, source, target)
    return plan, copied, engine.validate(plan, source, target)


def test_every_source_runs_incrementally_into_clickhouse(source: Any, clickhouse_target: Any, clickhouse: Any) -> None:
    """Watermark runs: the delta only, soft-deleted rows kept as tombstones with their flag, checksums match."""
    from engines.connectors.clickhouse import quote_ident

    _source_exec(source, INCREMENTAL["postgresql" if source.kind == "postgresql" else "mariadb"])
    first, copied, report = _incremental_run(source, clickhouse_target)
    assert copied == 30 and report["ok"], report["tables"]
    _source_exec(source, INCREMENTAL_CHANGES)
    _, copied, report = _incremental_run(source, clickhouse_target, base=first)
    assert copied == 6 and report["ok"], report["tables"]
    table = f"{quote_ident(clickhouse_target.dbname)}.inc"
    assert clickhouse.query(f"SELECT count(), sum(NOT deleted), countIf(v = 'changed') FROM {table} FINAL") \
        == "31\t29\t3\n"  # noqa: S608


def test_every_source_runs_incrementally_into_a_document_target(source: Any, mongo_stand_in: Any) -> None:  # noqa: F811
    """Into MongoDB (its named stand-in, mongomock): `_id` upserts of the delta, soft-deleted rows' documents
    removed, validation against the source's live rows; a rerun copies nothing."""
    target = db("h20a_mongo", kind="mongodb", host="127.0.0.1", dbname=f"h20a_inc_{uuid.uuid4().hex[:6]}")
    _source_exec(source, INCREMENTAL["postgresql" if source.kind == "postgresql" else "mariadb"])
    first, copied, report = _incremental_run(source, target)
    assert copied == 30 and report["ok"], report["tables"]
    _source_exec(source, INCREMENTAL_CHANGES)
    second, copied, report = _incremental_run(source, target, base=first)
    assert copied == 4 and report["ok"], report["tables"]  # 3 updated + 1 new upserted; 2 deleted
    docs = mongo_stand_in[target.dbname]["inc"]
    assert docs.count_documents({}) == 29 and docs.find_one({"_id": "10"}) is None
    assert docs.find_one({"_id": "1"})["v"] == "changed" and docs.find_one({"_id": "31"})["v"] == "new"
    assert any("documents of rows with deleted set are deleted" in n for n in second.notes)
    _, copied, report = _incremental_run(source, target, base=first)
    assert copied == 0 and report["ok"]
    docs.delete_one({"_id": "5"})  # a lost document: validation against the source catches it
    report = engine.validate(second, source, target)
    assert not report["ok"] and report["tables"][0]["target_rows"] == 28


@pytest.fixture
def elasticsearch_stand_in(monkeypatch: pytest.MonkeyPatch) -> Any:
    """tests/integration/es_stand_in.py, an in-process stand-in for an Elasticsearch server (none runs here),
    behind the Elasticsearch connector."""
    from engines.connectors.elasticsearch import ElasticsearchConnector
    from tests.integration.es_stand_in import ElasticsearchStandIn

    client = ElasticsearchStandIn()
    monkeypatch.setattr(ElasticsearchConnector, "_connect", lambda self: client)
    monkeypatch.setattr(ElasticsearchConnector, "_close", lambda self: None)
    return client


def test_every_source_runs_incrementally_into_elasticsearch(source: Any, elasticsearch_stand_in: Any) -> None:
    """Into Elasticsearch (its named stand-in): `_id` index of the delta, soft-deleted rows' documents deleted,
    watermarks kept between runs, validation against the source's live rows."""
    target = db("h20a_es", kind="elasticsearch", host="127.0.0.1", dbname=f"h20a_{uuid.uuid4().hex[:6]}")
    _source_exec(source, INCREMENTAL["postgresql" if source.kind == "postgresql" else "mariadb"])
    first, copied, report = _incremental_run(source, target)
    assert copied == 30 and report["ok"], report["tables"]
    _source_exec(source, INCREMENTAL_CHANGES)
    _, copied, report = _incremental_run(source, target, base=first)
    assert copied == 4 and report["ok"], report["tables"]
    docs = elasticsearch_stand_in.store[f"{target.dbname}inc"]
    assert len(docs) == 29 and "10" not in docs and docs["1"]["v"] == "changed" and docs["31"]["v"] == "new"
    _, copied, report = _incremental_run(source, target, base=first)
    assert copied == 0 and report["ok"]
    del docs["5"]  # a lost document
    assert not engine.validate(first, source, target)["ok"]
