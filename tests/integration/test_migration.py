"""The migration engine against real servers, without Celery: MariaDB -> PostgreSQL 15 and PostgreSQL 18 ->
PostgreSQL 15 with tricky data, rejects, validation that catches a tampered row, idempotent batches,
rollback to the exact previous state, and incremental runs."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg import sql

from engines.errors import ConfigError
from engines.migration import engine, postgres_validate, relay
from engines.migration.checksum import pg_hash_items
from engines.migration.engine import MigrationFailed
from engines.migration.model import Batch, MigrationType, Table
from engines.migration.mysql_source import MySQLSource
from engines.migration.postgres_source import PostgresSource
from engines.migration.postgres_validate import text_spec
from tests.conftest import db
from tests.integration.backup_cases import pg_admin
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration


def _pg15(name: str) -> Any:
    return db(name, kind="postgresql", host="127.0.0.1", dbname=name, user="postgres")


@pytest.fixture
def pg15_target() -> Iterator[Any]:
    require("postgresql15")
    name = f"mig_t_{uuid.uuid4().hex[:8]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _pg15(name)
    with pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(target: Any, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=target.dbname) as c:
        return c.execute(query, params).fetchall()


def _exec(target: Any, statement: str) -> None:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=target.dbname, autocommit=True) as c:
        c.execute(statement)


def _run(plan: Any, source: Any, target: Any) -> dict[str, Any]:
    plan = engine.prepare(plan, source, target)
    for b in plan.batches:
        engine.copy_batch(plan, b.id, source, target)
    engine.finalize(plan, source, target)
    return engine.validate(plan, source, target)


MARIA_SETUP = [
    "SET SESSION sql_mode = ''",
    "CREATE TABLE items (id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, flag TINYINT(1), small TINYINT UNSIGNED,"
    " big BIGINT UNSIGNED, price DECIMAL(10,2), d DATE NOT NULL, dt DATETIME, t TIME, kind ENUM('a','b''c','x;y'),"
    " tags SET('red','green','blue'), body LONGTEXT, blobby LONGBLOB, name VARCHAR(40))",
    "INSERT INTO items (flag, small, big, price, d, dt, t, kind, tags, body, blobby, name) VALUES"
    " (1, 255, 18446744073709551615, 12.34, '0000-00-00', '0000-00-00 00:00:00', '12:34:56', 'b''c', 'red,blue',"
    "  REPEAT('ü', 70000), REPEAT(UNHEX('00FF'), 300000), 'naïve ☃'),"
    " (0, 0, 0, -1.00, '2024-02-29', '2024-02-29 23:59:59', '838:59:59', 'x;y', '', NULL, NULL, NULL),"
    " (NULL, NULL, NULL, NULL, '2020-01-01', NULL, NULL, NULL, NULL, 'bad\\0nul', NULL, 'ok')",
    "INSERT INTO items (d, name) SELECT '2021-01-01', CONCAT('n', seq) FROM seq_1_to_40",
    "CREATE TABLE `odd``; name` (`k 1` INT, `k;2` VARCHAR(10), `v\"q` TEXT, PRIMARY KEY (`k 1`, `k;2`))",
    "INSERT INTO `odd``; name` VALUES (1,'a','x'),(1,'b',NULL),(2,'a','z'),(3,'ä','☃')",
    "CREATE TABLE nokey (a INT, b TEXT)",
    "INSERT INTO nokey VALUES (1,'x'),(1,'x'),(NULL,NULL)",
    # bytes the COPY text format must escape, and text that looks like its NULL marker
    "CREATE TABLE texts (id INT PRIMARY KEY, s VARCHAR(50), t TEXT, st SET('a b','NULL','x\"y','c'))",
    "INSERT INTO texts VALUES (1, 'tab\there', 'line\nbreak\r\nand \\\\ backslash', 'a b,x\"y'),"
    " (2, '\\\\N', 'ends with \\\\', 'NULL,c'), (3, 'bs\bff\fvt\v', NULL, NULL)",
    "INSERT INTO texts SELECT 10 + seq, CONCAT('s', seq), REPEAT('t', seq), 'c' FROM seq_1_to_30",
    # secondary indexes (a prefix one, a FULLTEXT one PostgreSQL has no equal of) and a foreign key
    "CREATE INDEX by_name ON items (name)", "CREATE INDEX by_body ON items (body(10))",
    "CREATE FULLTEXT INDEX words ON items (body)", "CREATE UNIQUE INDEX by_s ON texts (s)",
    "CREATE TABLE links (id INT PRIMARY KEY, item_id INT UNSIGNED, CONSTRAINT link_item FOREIGN KEY (item_id)"
    " REFERENCES items (id) ON DELETE CASCADE)",
    "INSERT INTO links VALUES (1, 1), (2, 5), (3, NULL)",
    # types whose text differs between the servers: the typed path (Python values, read back per batch)
    "CREATE TABLE measures (id INT PRIMARY KEY, f FLOAT, d DOUBLE, at DATETIME(6))",
    "INSERT INTO measures SELECT seq, seq / 3, seq / 7, TIMESTAMP('2026-01-01 00:00:00.123456') + INTERVAL seq SECOND"
    " FROM seq_1_to_30",
]


@pytest.fixture
def maria_source() -> Iterator[Any]:
    host, port = require("mariadb")
    name = f"mig_s_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host=host, port=port, user="root", autocommit=True, charset="utf8mb4")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{name}`")
        for stmt in MARIA_SETUP:
            cur.execute(stmt)
    yield db("maria_src", kind="mariadb", host=host, dbname=name, user="root")
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{name}`")
    conn.close()


@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_mariadb_to_postgresql_with_pgloader_casts_rejects_and_validation(maria_source: Any, pg15_target: Any,
                                                                          driver: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if driver == "mysqlclient" and importlib.util.find_spec("MySQLdb") is None:
        pytest.skip("mysqlclient is not installed (it builds against libmariadb-dev): the PyMySQL run covers the path")
    monkeypatch.setenv("DBFLEET_MYSQL_DRIVER", driver)
    plan = engine.plan_migration(maria_source, pg15_target, batch_size=7, max_rejects=5)
    types = {c.name: c.target_type for c in plan.table("items").columns}
    assert types["flag"] == "boolean" and types["big"] == "numeric(20)" and types["small"] == "smallint"
    assert types["dt"] == "timestamp" and types["tags"] == "text[]" and types["blobby"] == "bytea"
    assert plan.table("items").columns[0].identity and plan.table("nokey").key == []
    report = _run(plan, maria_source, pg15_target)
    assert report["ok"], json.dumps(report["tables"], default=str)
    by_table = {t["table"]: t for t in report["tables"]}
    items = by_table["items"]  # 43 read from the source, 41 copied, 2 refused
    assert (items["source_rows"], items["copied_rows"], items["target_rows"], items["rejects"]) == (43, 41, 41, 2)
    assert by_table["odd`; name"]["target_rows"] == 4 and by_table["nokey"]["target_rows"] == 3
    assert _rows(pg15_target, "SELECT id, s, t, st FROM texts WHERE id < 10 ORDER BY id") == [
        (1, "tab\there", "line\nbreak\r\nand \\ backslash", ["a b", 'x"y']), (2, "\\N", "ends with \\", ["NULL", "c"]),
        (3, "bs\bff\fvt\v", None, None)]
    assert by_table["texts"]["target_rows"] == 33 and by_table["texts"]["batches"] == 5
    reasons = {str(json.loads(r["key"])[0]): (r["column"], r["reason"]) for r in report["rejects"]}
    # an out-of-range TIME, a NUL byte: the column and why, never the value (it stays in the reject table's row)
    assert reasons["2"][0] == "t" and "838:59:59" not in reasons["2"][1] and "time" in reasons["2"][1]
    assert reasons["3"][1] == 'invalid byte sequence for encoding "UTF8"'  # the server names no column for it
    first = _rows(pg15_target, "SELECT flag, small, big, price, d, dt, t, kind::text, tags, length(body),"
                               " length(blobby), name FROM items WHERE id = 1")[0]
    assert first == (True, 255, Decimal("18446744073709551615"), Decimal("12.34"), None, None, dt.time(12, 34, 56),
                     "b'c", ["red", "blue"], 70000, 600000, "naïve ☃")
    assert _rows(pg15_target, 'SELECT "k 1", "k;2", "v""q" FROM "odd`; name" ORDER BY 1, 2') == [
        (1, "a", "x"), (1, "b", None), (2, "a", "z"), (3, "ä", "☃")]
    assert _rows(pg15_target, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('items', 'texts')"
                              " AND indexname NOT LIKE '%pkey' ORDER BY 1") == [
        ("items_by_body", "CREATE INDEX items_by_body ON public.items USING btree (\"left\"(body, 10))"),
        ("items_by_name", "CREATE INDEX items_by_name ON public.items USING btree (name)"),
        ("texts_by_s", "CREATE UNIQUE INDEX texts_by_s ON public.texts USING btree (s)")]
    assert _rows(pg15_target, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'link_item'") == [
        ("FOREIGN KEY (item_id) REFERENCES items(id) ON UPDATE RESTRICT ON DELETE CASCADE",)]
    _exec(pg15_target, "UPDATE items SET price = 99.99 WHERE id = 20")  # tampered after the copy
    tampered = next(t for t in engine.validate(plan, maria_source, pg15_target)["tables"] if t["table"] == "items")
    assert [(m["from"], m["to"]) for m in tampered["mismatched_ranges"]] == [
        (b.lo, b.hi) for b in plan.batches if b.table == "items" and (b.lo or [0])[0] <= 20 < (b.hi or [99])[0]]
    assert text_spec(plan, plan.table("measures")) is None and by_table["measures"]["target_rows"] == 30
    assert _rows(pg15_target, "SELECT f, d, at FROM measures WHERE id = 3") == [
        (1.0, 0.428571428, dt.datetime(2026, 1, 1, 0, 0, 3, 123456))]  # MariaDB divides to 9 decimals
    _exec(pg15_target, "UPDATE measures SET d = 0.5 WHERE id = 12")
    moved = next(t for t in engine.validate(plan, maria_source, pg15_target)["tables"] if t["table"] == "measures")
    assert [(m["from"][0] or 0) <= 12 < (m["to"] or [99])[0] for m in moved["mismatched_ranges"]] == [True]
    # batches whose lines held no escaped byte are rebuilt unescaped; a tab planted in one is still caught
    texts = [b.id for b in plan.batches if b.table == "texts"]
    flags = dict(_rows(pg15_target, "SELECT batch_id, escaped FROM _dbfleet_migration.checkpoints WHERE batch_id"
                                    " = ANY(%s)", (texts,)))
    assert flags[texts[0]] and not flags[texts[-1]]
    _exec(pg15_target, "UPDATE texts SET s = E's40\\tx' WHERE id = 40")
    tabbed = next(t for t in engine.validate(plan, maria_source, pg15_target)["tables"] if t["table"] == "texts")
    assert [m["batch"] for m in tabbed["mismatched_ranges"]] == [texts[-1]]
    # identity continues after the copied keys
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=pg15_target.dbname, autocommit=True) as c:
        assert c.execute("INSERT INTO items (d) VALUES ('2022-02-02') RETURNING id").fetchone()[0] == 44
    strict = engine.plan_migration(maria_source, pg15_target, batch_size=100, max_rejects=0,
                                   tables=["items"], migration_id="strict-" + uuid.uuid4().hex[:6], if_exists="truncate")
    with pytest.raises(MigrationFailed, match='cannot empty the target tables .*Table "links" references "items"'):
        engine.prepare(strict, maria_source, pg15_target)  # links, not migrated this time, refers to items
    _exec(pg15_target, "DROP TABLE links")
    strict = engine.prepare(strict, maria_source, pg15_target)
    assert _rows(pg15_target, "SELECT count(*) FROM items") == [(0,)]
    for b in strict.batches:
        engine.copy_batch(strict, b.id, maria_source, pg15_target)
    with pytest.raises(MigrationFailed, match="2 rows rejected, more than max_rejects 0"):
        engine.finalize(strict, maria_source, pg15_target)


def test_batches_reuse_connections_until_one_fails(maria_source: Any, pg15_target: Any) -> None:
    plan = engine.plan_migration(maria_source, pg15_target, batch_size=10, tables=["texts"])
    plan = engine.prepare(plan, maria_source, pg15_target)
    pids = []
    for b in plan.batches[:2]:
        engine.copy_batch(plan, b.id, maria_source, pg15_target)
        with engine.batch_connections(maria_source, pg15_target, plan.lock_timeout) as (_, tgt):
            pids.append(tgt.conn.info.backend_pid)
    assert pids[0] == pids[1]  # the same target session served both batches
    with pytest.raises(RuntimeError), engine.batch_connections(maria_source, pg15_target, plan.lock_timeout):
        raise RuntimeError("a batch failed half-way")
    with engine.batch_connections(maria_source, pg15_target, plan.lock_timeout) as (_, tgt):
        fresh = tgt.conn.info.backend_pid
    assert fresh != pids[0]
    _exec(pg15_target, f"SELECT pg_terminate_backend({fresh})")  # a server-side disconnect, found on reuse
    engine.copy_batch(plan, plan.batches[2].id, maria_source, pg15_target)
    assert _rows(pg15_target, "SELECT count(*) FROM _dbfleet_migration.checkpoints")[0][0] == 3


PG18_SETUP = [
    "CREATE TABLE users (id bigserial PRIMARY KEY, email text UNIQUE, name text NOT NULL, born date,"
    " seen timestamptz, score numeric(12,3), tags text[], meta jsonb, avatar bytea)",
    "INSERT INTO users (email, name, born, seen, score, tags, meta, avatar) SELECT 'u' || g || '@example.com',"
    " 'Nàme ☃ ' || g, date '1980-01-01' + g, timestamptz '2026-01-01 00:00+02' + g * interval '1 minute',"
    " g / 7.0, ARRAY['a', 'b' || g], jsonb_build_object('g', g), decode(md5(g::text), 'hex')"
    " FROM generate_series(1, 3000) g",
    "UPDATE users SET born = NULL, seen = NULL, tags = NULL WHERE id % 10 = 0",
    'CREATE TABLE "we;ird ""t" ("a b" int, "c""d" text, "big" text, PRIMARY KEY ("a b", "c""d"))',
    'INSERT INTO "we;ird ""t" SELECT g % 13, \'v\' || g, repeat(\'ß\', 20000) FROM generate_series(1, 400) g',
    "CREATE TABLE events (at timestamptz, what text)",
    "INSERT INTO events SELECT now() - g * interval '1 s', md5(g::text) FROM generate_series(1, 5000) g",
    # every byte COPY text escapes, and types whose ::text differs from their output (bool, char(n), inet)
    "CREATE TABLE odd_text (id int PRIMARY KEY, t text, ok boolean, c char(5), ip inet, arr text[])",
    "INSERT INTO odd_text VALUES (1, E'tab\\there\\nnew\\\\back\\bbs\\fff\\vvt\\rcr \\\\N', true, 'ab',"
    " '10.0.0.1', ARRAY[E'q\"t', 'a b', NULL]), (2, E'\\\\N', false, NULL, '::1', '{}'), (3, NULL, NULL, 'x', NULL, NULL)",
    # types the servers hash as text (enum: its OID differs per database; json, point: no hash function),
    # a domain, floats, a column in another collation
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN cents AS numeric(12,2) CHECK (VALUE >= 0)",
    'CREATE TABLE hashed (id int PRIMARY KEY, m mood, j json, p point, c cents, f float8, r real,'
    ' s text COLLATE "C", ts timestamp(3), tt timetz)',
    # built after the load: an expression index, a check, a foreign key with its action
    "CREATE INDEX users_lower_name ON users (lower(name))",
    'CREATE TABLE "q""uote;d" (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)',
    'INSERT INTO "q""uote;d" (v) SELECT \'v\' || g FROM generate_series(1, 5) g',
    "CREATE TABLE follows (id int PRIMARY KEY CHECK (id > 0), user_id bigint REFERENCES users ON DELETE CASCADE)",
    "INSERT INTO follows SELECT g, g * 2 FROM generate_series(1, 50) g",
    "INSERT INTO hashed SELECT g, (ARRAY['sad','ok','happy'])[g % 3 + 1]::mood, json_build_object('g', g, 'z', NULL),"
    " point(g, -g), g * 1.25, g / 3.0, g / 7.0, 'ß' || g, timestamp '2026-01-01 00:00:00.123' + g * interval '1 s',"
    " timetz '12:00+02' FROM generate_series(1, 2500) g",
]


@pytest.fixture
def pg18_source(embedded_pg: Any) -> Iterator[Any]:
    name = f"mig_s_{uuid.uuid4().hex[:8]}"
    with pg_admin(embedded_pg.port, CANARY) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY, dbname=name,
                         autocommit=True) as c:
        for stmt in PG18_SETUP:
            c.execute(stmt)
    yield db("pg18_src", kind="postgresql", host="127.0.0.1", port=embedded_pg.port, dbname=name, user="postgres",
             password_env="DBFLEET_TEST_CANARY")
    with pg_admin(embedded_pg.port, CANARY) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fingerprint(database: Any, port: int = 5432, password: str | None = None) -> dict[str, str]:
    queries = {"users": "SELECT md5(string_agg(u::text, '|' ORDER BY id)) FROM users u",
               "weird": 'SELECT md5(string_agg(w::text, \'|\' ORDER BY "a b", "c""d")) FROM "we;ird ""t" w',
               "events": "SELECT md5(string_agg(e::text, '|' ORDER BY at, what)) FROM events e"}
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname=database.dbname) as c:
        c.execute("SET TimeZone = 'UTC'")
        return {k: c.execute(q).fetchone()[0] for k, q in queries.items()}


@pytest.mark.parametrize("loop", ["c-relay", "python"])
def test_postgresql_18_to_15_binary_copy_exact_rows_tamper_and_idempotence(pg18_source: Any, pg15_target: Any,
                                                                          embedded_pg: Any, loop: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if loop == "python":  # as on a machine where the C relay was not compiled
        monkeypatch.setattr(relay, "_c_relay", None)
    elif relay._c_relay is None:
        pytest.skip("the C COPY relay was not compiled here (no C compiler at install): the python run covers this")
    plan = engine.plan_migration(pg18_source, pg15_target, batch_size=700)
    assert plan.path == "pg-pg" and {b.by for b in plan.batches} == {"key", "ctid"}
    report = _run(plan, pg18_source, pg15_target)
    assert report["ok"], json.dumps(report["tables"], default=str)
    assert _rows(pg15_target, "SELECT t, ok, c, ip::text, arr FROM odd_text ORDER BY id") == [
        ("tab\there\nnew\\back\bbs\fff\vvt\rcr \\N", True, "ab   ", "10.0.0.1/32", ['q"t', "a b", None]),
        ("\\N", False, None, "::1/128", []), (None, None, "x    ", None, None)]
    assert _fingerprint(pg15_target) == _fingerprint(pg18_source, embedded_pg.port, CANARY)
    assert _rows(pg15_target, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid IN"
                              " ('users'::regclass, 'follows'::regclass) AND contype <> 'n' ORDER BY 1") == [
        ("follows_id_check", "CHECK ((id > 0))"), ("follows_pkey", "PRIMARY KEY (id)"),
        ("follows_user_id_fkey", "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"),
        ("users_email_key", "UNIQUE (email)"), ("users_pkey", "PRIMARY KEY (id)")]
    assert _rows(pg15_target, 'INSERT INTO "q""uote;d" (v) VALUES (\'new\') RETURNING id') == [(6,)]  # identity moved on
    assert _rows(pg15_target, "SELECT indexdef FROM pg_indexes WHERE indexname = 'users_lower_name'") == [
        ("CREATE INDEX users_lower_name ON public.users USING btree (lower(name))",)]
    again = engine.copy_batch(plan, 0, pg18_source, pg15_target)
    assert again["skipped"] and _rows(pg15_target, "SELECT count(*) FROM users")[0][0] == 3000
    assert _rows(pg15_target, "SELECT m, j::text, p::text, c, ts FROM hashed WHERE id = 2") == [
        ("happy", '{"g" : 2, "z" : null}', "(2,-2)", Decimal("2.50"), dt.datetime(2026, 1, 1, 0, 0, 2, 123000))]
    _exec(pg15_target, "UPDATE hashed SET p = point(0, 0) WHERE id = 2100")  # a column hashed as text
    hashed = next(t for t in engine.validate(plan, pg18_source, pg15_target)["tables"]
                  if t["table"] == "public.hashed")
    assert [r["from"][0] <= 2100 < r["to"][0] for r in hashed["mismatched_ranges"]] == [True]
    _exec(pg15_target, "UPDATE users SET name = 'tampered' WHERE id = 1500")
    bad = engine.validate(plan, pg18_source, pg15_target)
    users = next(t for t in bad["tables"] if t["table"] == "public.users")
    assert not bad["ok"] and len(users["mismatched_ranges"]) == 1
    rng = users["mismatched_ranges"][0]
    assert rng["from"][0] <= 1500 < rng["to"][0]
    _exec(pg15_target, "DELETE FROM events WHERE ctid IN (SELECT ctid FROM events LIMIT 1)")
    keyless = next(t for t in engine.validate(plan, pg18_source, pg15_target)["tables"] if t["table"] == "public.events")
    assert not keyless["ok"] and keyless["target_rows"] == 4999


def test_the_c_relay_copies_each_row_once_and_hashes_it_in_the_same_scan(pg18_source: Any, pg15_target: Any,
                                                                        embedded_pg: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY,
                         dbname=pg18_source.dbname, autocommit=True) as c:  # a row larger than the relay's pieces
        c.execute("UPDATE users SET avatar = decode(repeat('ab', 300000), 'hex') WHERE id = 5")
        by_sql = c.execute(sql.SQL("SELECT {} FROM users WHERE id < 1001").format(
            pg_hash_items(PostgresSource(c).discover(["users"])[0].columns, source=True))).fetchone()
    plan = engine.prepare(engine.plan_migration(pg18_source, pg15_target, tables=["users", 'we;ird "t'],
                                                batch_size=1000), pg18_source, pg15_target)
    if relay._c_relay is None:
        pytest.skip("the C COPY relay was not compiled here (no C compiler at install): nothing to test")
    calls: list[bool] = []
    c_relay = relay._c_relay
    monkeypatch.setattr(relay, "_c_relay", lambda *args: calls.append(args[3]) or c_relay(*args))
    monkeypatch.setattr(PostgresSource, "copy_chunks", lambda *_, **__: pytest.fail("the Python loop ran"))
    for b in plan.batches:
        engine.copy_batch(plan, b.id, pg18_source, pg15_target)
    engine.finalize(plan, pg18_source, pg15_target)
    assert calls == [True] * len(plan.batches)  # every batch relayed in C, hashes taken out of the stream
    first = min(b.id for b in plan.batches if b.table == "public.users")
    recorded = _rows(pg15_target, "SELECT rows, checksum FROM _dbfleet_migration.checkpoints WHERE batch_id = %s",
                     (first,))
    assert [(int(n), int(h)) for n, h in recorded] == [(int(by_sql[0]), int(by_sql[1]))] and by_sql[1] != 0
    scans: list[bool] = []
    measure_part = postgres_validate.measure_part
    monkeypatch.setattr(postgres_validate, "measure_part", lambda *a, grouped=True: scans.append(grouped) or measure_part(
        *a, grouped=grouped))
    assert engine.validate(plan, pg18_source, pg15_target)["ok"]
    assert scans and not any(scans)  # totals agreed: no table read again batch by batch
    assert _rows(pg15_target, "SELECT length(avatar) FROM users WHERE id = 5") == [(300000,)]
    users = ("SELECT md5(string_agg(ROW(id, email, name, born, seen AT TIME ZONE 'UTC', score, tags, meta, avatar)"
             "::text, '|' ORDER BY id)) FROM users")
    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY,
                         dbname=pg18_source.dbname) as c:
        assert _rows(pg15_target, users) == c.execute(users).fetchall()
    _exec(pg15_target, "UPDATE users SET name = 'x' WHERE id = 1500")  # now the total differs: ranges named
    tampered = next(t for t in engine.validate(plan, pg18_source, pg15_target)["tables"] if t["table"] == "public.users")
    assert any(scans) and [r["from"][0] <= 1500 < r["to"][0] for r in tampered["mismatched_ranges"]] == [True]


def test_the_relay_refuses_a_stream_it_does_not_understand(pg18_source: Any, pg15_target: Any) -> None:
    from engines.connectors import open_connector

    _exec(pg15_target, "CREATE TABLE odd_text (id int, t text, ok boolean, c char(5), ip inet, arr text[])")
    with open_connector(pg18_source) as connector, psycopg.connect(
            host="127.0.0.1", user="postgres", dbname=pg15_target.dbname, autocommit=True) as target:
        src = PostgresSource(connector.conn)
        if not relay.available(src.conn.pgconn):
            pytest.skip("the C COPY relay was not compiled here (no C compiler at install): nothing to test")
        odd = src.discover(["odd_text"])[0]
        with pytest.raises(psycopg.OperationalError, match="COPY out of public.odd_text: unexpected binary layout"):
            with target.cursor().copy("COPY odd_text FROM STDIN (FORMAT binary)") as copy:
                copy.write(b"")
                # a last column that is not an 8-byte hash
                src.relay_into(odd, Batch(0, odd.source, None, None), target.pgconn, sql.SQL("'x'::text"))
        assert src.conn.execute("SELECT count(*) FROM odd_text").fetchone() == (3,)  # the source COPY was cancelled
        assert target.execute("SELECT count(*) FROM odd_text").fetchone() == (0,)  # and the target's abandoned


@pytest.mark.parametrize("validation", [True, False])
def test_keys_and_constraints_come_after_the_load_and_what_fails_is_named(pg18_source: Any, pg15_target: Any,
                                                                         validation: bool) -> None:
    plan = engine.prepare(engine.plan_migration(pg18_source, pg15_target, tables=["users", "events", "follows"],
                                                batch_size=1000, validation=validation), pg18_source, pg15_target)
    key = "SELECT count(*) FROM pg_index WHERE indrelid = 'users'::regclass AND indisprimary"
    for b in plan.batches:
        engine.copy_batch(plan, b.id, pg18_source, pg15_target)
    assert _rows(pg15_target, key) == [(0,)]  # loaded without the key's index
    _exec(pg15_target, "INSERT INTO users (id, name) VALUES (7, 'a second 7')")  # planted after the copy
    _exec(pg15_target, "INSERT INTO follows VALUES (999, 99999)")  # and a follower of nobody
    with pytest.raises(MigrationFailed, match=r"public.users: the copied rows cannot take the primary key \(id\)"
                                              r".*\(id\)=\(7\)"):
        engine.finalize(plan, pg18_source, pg15_target)
    _exec(pg15_target, "DELETE FROM users WHERE name = 'a second 7'")
    _exec(pg15_target, "UPDATE users SET email = 'u1@example.com' WHERE id = 2")  # breaks the unique email
    unique = r"public.users constraint users_email_key: could not create unique index "
    orphan = r"public.follows fk follows_user_id_fkey: .*violates foreign key"
    fk = "SELECT convalidated FROM pg_constraint WHERE conname = 'follows_user_id_fkey'"
    if validation:  # foreign keys are validated by validate, beside the checksum scans
        with pytest.raises(MigrationFailed, match=rf"rows are copied, but 1 index\(es\) or constraint\(s\) could not"
                                                  rf" be built on the target: {unique}.*resume it, or plan with"
                                                  rf" --no-indexes"):
            engine.finalize(plan, pg18_source, pg15_target)
        with pytest.raises(MigrationFailed, match=rf"could not be built on the target: {orphan}"):
            engine.validate(plan, pg18_source, pg15_target)
    else:  # no validate step: finalize validates them and names everything at once
        with pytest.raises(MigrationFailed, match=rf"rows are copied, but 2 index\(es\) or constraint\(s\) could not"
                                                  rf" be built on the target: {unique}.*{orphan}.*resume it, or plan"
                                                  rf" with --no-indexes"):
            engine.finalize(plan, pg18_source, pg15_target)
    assert _rows(pg15_target, fk) == [(False,)]  # added NOT VALID, left so: the next run validates it
    _exec(pg15_target, "UPDATE users SET email = 'u2@example.com' WHERE id = 2")
    _exec(pg15_target, "DELETE FROM follows WHERE id = 999")
    engine.finalize(plan, pg18_source, pg15_target)
    if validation:
        assert _rows(pg15_target, fk) == [(False,)] and engine.validate(plan, pg18_source, pg15_target)["ok"]
    assert _rows(pg15_target, fk) == [(True,)] and _rows(pg15_target, key) == [(1,)]
    assert _rows(pg15_target, "SELECT count(*) FROM pg_stats WHERE tablename = 'follows'")[0][0] > 0  # ANALYZEd
    engine.finalize(plan, pg18_source, pg15_target)  # again (a resumed run): the key is there, nothing to do


def test_postgresql_rows_an_existing_table_refuses_are_rejects(pg18_source: Any, pg15_target: Any) -> None:
    _exec(pg15_target, "CREATE TABLE odd_text (id int PRIMARY KEY, t text, ok boolean CHECK (ok IS NOT FALSE),"
                       " c char(5), ip inet, arr text[])")
    _exec(pg15_target, "CREATE TABLE events (at timestamptz, what text CHECK (what <> md5('7')))")
    plan = engine.plan_migration(pg18_source, pg15_target, tables=["odd_text", "events"], batch_size=1000,
                                 max_rejects=2)
    report = _run(plan, pg18_source, pg15_target)
    assert report["ok"], json.dumps(report["tables"], default=str)  # the rejected rows left the checksums too
    assert {t["table"]: (t["source_rows"], t["target_rows"], t["rejects"]) for t in report["tables"]} == {
        "public.odd_text": (3, 2, 1), "public.events": (5000, 4999, 1)}  # source rows = copied + refused
    reasons = {(r["table"], r["key"]): r["reason"] for r in report["rejects"]}
    assert "odd_text_ok_check" in reasons[("public.odd_text", '["2"]')]
    (key, reason), = [(k, v) for (t, k), v in reasons.items() if t == "public.events"]
    assert json.loads(key)[1] == "8f14e45fceea167a5a36dedd4bea2543" and "events_what_check" in reason
    assert _rows(pg15_target, "SELECT id FROM odd_text ORDER BY 1") == [(1,), (3,)]


def test_a_sql_ascii_source_migrates_its_utf8_and_names_bytes_that_are_not(embedded_pg: Any, pg15_target: Any) -> None:
    name = f"mig_ascii_{uuid.uuid4().hex[:8]}"
    with pg_admin(embedded_pg.port, CANARY) as admin:
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY, dbname=name,
                             autocommit=True, client_encoding="UTF8") as c:
            c.execute("CREATE TABLE légacy (id int PRIMARY KEY, s text NOT NULL)")
            c.execute("INSERT INTO légacy SELECT g, 'ròw ' || g FROM generate_series(1, 300) g")
            c.execute("UPDATE légacy SET s = convert_from('\\x6361666580'::bytea, 'SQL_ASCII') WHERE id = 42")
        source = db("ascii_src", kind="postgresql", host="127.0.0.1", port=embedded_pg.port, dbname=name,
                    user="postgres", password_env="DBFLEET_TEST_CANARY")
        plan = engine.prepare(engine.plan_migration(source, pg15_target, batch_size=1000), source, pg15_target)
        assert [t.source for t in plan.tables] == ["public.légacy"]  # names read as UTF-8, not as bytes
        # a byte that is not UTF-8 fails its batch on the source, named, and the batch writes nothing
        with pytest.raises(psycopg.errors.CharacterNotInRepertoire, match="invalid byte sequence.*0x80"):
            engine.copy_batch(plan, plan.batches[0].id, source, pg15_target)
        assert _rows(pg15_target, "SELECT count(*) FROM légacy") == [(0,)]
        with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY, dbname=name,
                             autocommit=True, client_encoding="UTF8") as c:
            c.execute("UPDATE légacy SET s = 'café' WHERE id = 42")  # fixed at the source: the batch runs
        for b in plan.batches:
            engine.copy_batch(plan, b.id, source, pg15_target)
        engine.finalize(plan, source, pg15_target)
        assert engine.validate(plan, source, pg15_target)["ok"]
        assert _rows(pg15_target, "SELECT s FROM légacy WHERE id IN (7, 42) ORDER BY id") == [("ròw 7",), ("café",)]
    finally:
        with pg_admin(embedded_pg.port, CANARY) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_batch_the_target_cannot_take_now_fails_cleanly_and_runs_later(pg18_source: Any, pg15_target: Any) -> None:
    _exec(pg15_target, "CREATE TABLE users (id bigint PRIMARY KEY, email text, name text NOT NULL, born date,"
                       " seen timestamptz, score numeric(12,3), tags text[], meta jsonb, avatar bytea)")
    # a trigger that gives up in the middle of the stream, with an error that is not about the row
    _exec(pg15_target, "CREATE FUNCTION busy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id = 700 THEN"
                       " RAISE EXCEPTION 'busy now' USING ERRCODE = '55P03'; END IF; RETURN NEW; END $$")
    _exec(pg15_target, "CREATE TRIGGER busy BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION busy()")
    plan = engine.plan_migration(pg18_source, pg15_target, tables=["users"], batch_size=3000, lock_timeout=0.5)
    plan = engine.prepare(plan, pg18_source, pg15_target)
    with pytest.raises(psycopg.errors.LockNotAvailable, match="busy now"):  # the source COPY is cancelled
        engine.copy_batch(plan, plan.batches[0].id, pg18_source, pg15_target)
    _exec(pg15_target, "DROP TRIGGER busy ON users")
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=pg15_target.dbname) as locker:
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # e.g. someone's long ALTER TABLE
        with pytest.raises(psycopg.errors.LockNotAvailable):
            engine.copy_batch(plan, plan.batches[0].id, pg18_source, pg15_target)
    for b in plan.batches:  # nothing was left behind: every batch runs
        engine.copy_batch(plan, b.id, pg18_source, pg15_target)
    engine.finalize(plan, pg18_source, pg15_target)
    assert engine.validate(plan, pg18_source, pg15_target)["ok"]


def test_a_copy_stopped_midway_leaves_the_source_connection_usable(pg18_source: Any) -> None:
    from engines.connectors import open_connector

    with open_connector(pg18_source) as connector:
        src = PostgresSource(connector.conn)
        users = next(t for t in src.discover(["users"]))
        whole = Batch(0, users.source, None, None)
        chunks = src.copy_chunks(users, whole, rows_per_chunk=100)
        assert next(chunks).count(b"\n") == 100
        chunks.close()  # the target refused, say: the server's COPY is cancelled
        assert src.conn.execute("SELECT count(*) FROM users").fetchone() == (3000,)
        assert sum(c.count(b"\n") for c in src.copy_chunks(users, whole)) == 3000
        gone = Table("public.gone", "public", "gone", "public", "gone", users.columns, users.key)
        with pytest.raises(psycopg.errors.UndefinedTable):
            next(src.copy_chunks(gone, whole))
        assert src.conn.execute("SELECT 1").fetchone() == (1,)


def test_rollback_restores_the_target_exactly(pg18_source: Any, pg15_target: Any) -> None:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=pg15_target.dbname, autocommit=True) as c:
        c.execute("CREATE TABLE events (at timestamptz, what text)")
        c.execute("INSERT INTO events VALUES ('2020-01-01', 'was here before')")
    before = _rows(pg15_target, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    with pytest.raises(ConfigError, match="already hold rows: public.events"):  # the default: refuse
        engine.plan_migration(pg18_source, pg15_target, batch_size=1000)
    plan = engine.plan_migration(pg18_source, pg15_target, batch_size=1000, if_exists="append")
    report = {t["table"]: t for t in _run(plan, pg18_source, pg15_target)["tables"]}
    assert report["public.users"]["ok"] and report["public.we;ird \"t"]["ok"]
    # the keyless table was appended to: validation takes the row that was there before (the snapshot) out
    assert report["public.events"]["ok"] and report["public.events"]["target_rows"] == 5000
    plan = engine.prepare(plan, pg18_source, pg15_target)  # what the run recorded
    assert _rows(pg15_target, "SELECT count(*) FROM events")[0][0] == 5001  # appended to the existing table
    undone = engine.rollback(plan, pg18_source, pg15_target)
    assert "snapshot:public.events" in undone and "table:public.users" in undone
    assert _rows(pg15_target, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1") == before
    assert _rows(pg15_target, "SELECT what FROM events") == [("was here before",)]
    assert _rows(pg15_target, "SELECT count(*) FROM _dbfleet_migration.checkpoints")[0][0] == 0


def test_incremental_copies_changed_rows_by_watermark(pg18_source: Any, pg15_target: Any, embedded_pg: Any) -> None:
    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY,
                         dbname=pg18_source.dbname, autocommit=True) as c:
        c.execute("ALTER TABLE users ADD COLUMN updated_at timestamptz NOT NULL DEFAULT '2026-01-01'")
        full = engine.plan_migration(pg18_source, pg15_target, tables=["users"], batch_size=1000)
        assert _run(full, pg18_source, pg15_target)["ok"]
        base = engine.prepare(full, pg18_source, pg15_target)
        first = engine.plan_migration(pg18_source, pg15_target, type=MigrationType.INCREMENTAL, tables=["users"],
                                      watermark="updated_at", base=base, batch_size=1000)
        _run(first, pg18_source, pg15_target)  # records the watermark; every row is at it already
        c.execute("UPDATE users SET name = 'changed', updated_at = '2026-06-01' WHERE id IN (5, 2500)")
        c.execute("INSERT INTO users (email, name, updated_at) VALUES ('new@example.com', 'new', '2026-06-02')")
    second = engine.plan_migration(pg18_source, pg15_target, type=MigrationType.INCREMENTAL, tables=["users"],
                                   watermark="updated_at", base=base, batch_size=1000)
    assert second.since["public.users"].startswith("2026-01-01") and second.path == "rows"
    plan = engine.prepare(second, pg18_source, pg15_target)
    copied = sum(engine.copy_batch(plan, b.id, pg18_source, pg15_target)["rows"] for b in plan.batches)
    engine.finalize(plan, pg18_source, pg15_target)
    assert copied == 3
    assert _rows(pg15_target, "SELECT name FROM users WHERE id IN (5, 2500, 3001) ORDER BY id") == [
        ("changed",), ("changed",), ("new",)]
    assert _rows(pg15_target, "SELECT count(*) FROM users")[0][0] == 3001


def test_large_mysql_tables_are_split_by_the_statistics_without_counting(maria_source: Any, pg15_target: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.migration import sources

    conn = pymysql.connect(host=maria_source.host, port=maria_source.port, user="root", database=maria_source.dbname)
    with conn.cursor() as cur:
        cur.execute("ANALYZE TABLE texts, links")  # the estimates are there whatever InnoDB did in the background
    conn.close()
    monkeypatch.setattr(sources, "ESTIMATED_ROWS", 1)  # every table counts as large here
    asked: list[str] = []
    query = MySQLSource.query
    monkeypatch.setattr(MySQLSource, "query", lambda self, q, *a: asked.append(q) or query(self, q, *a))
    plan = engine.plan_migration(maria_source, pg15_target, tables=["texts", "links"], batch_size=10)
    assert asked and not [q for q in asked if "count(*)" in q.lower()]
    texts = [b for b in plan.batches if b.table == "texts"]
    assert texts[0].lo is None and texts[-1].hi is None
    report = _run(plan, maria_source, pg15_target)
    assert report["ok"] and {t["table"]: t["target_rows"] for t in report["tables"]} == {"texts": 33, "links": 3}


def test_large_tables_are_split_by_the_statistics_without_counting(pg18_source: Any, pg15_target: Any,
                                                                   embedded_pg: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.migration import sources

    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY,
                         dbname=pg18_source.dbname, autocommit=True) as c:
        c.execute("ANALYZE users")
    monkeypatch.setattr(sources, "ESTIMATED_ROWS", 1000)  # users (3,000 rows) counts as large here
    counted: list[str] = []
    execute = psycopg.Connection.execute
    monkeypatch.setattr(psycopg.Connection, "execute", lambda self, query, *a, **k: (
        counted.append(str(query.as_string(self) if hasattr(query, "as_string") else query)) or
        execute(self, query, *a, **k)))
    plan = engine.plan_migration(pg18_source, pg15_target, tables=["users"], batch_size=1000)
    assert not [q for q in counted if "count(*)" in q and "users" in q]  # no count: the estimate sized them
    assert len(plan.batches) == 3 and plan.batches[0].lo is None and plan.batches[-1].hi is None
    assert _run(plan, pg18_source, pg15_target)["ok"]
    assert _rows(pg15_target, "SELECT count(*) FROM users") == [(3000,)]


def test_bad_requests_are_clear(pg18_source: Any, pg15_target: Any) -> None:
    with pytest.raises(ConfigError, match="no such source table: nope"):
        engine.plan_migration(pg18_source, pg15_target, tables=["nope"])
    with pytest.raises(ConfigError, match="cannot migrate into 'redis'"):
        engine.plan_migration(pg18_source, db("r", kind="redis", host="127.0.0.1"))
    with pytest.raises(ConfigError, match="needs a watermark"):
        engine.plan_migration(pg18_source, pg15_target, type=MigrationType.INCREMENTAL)
    with pytest.raises(ConfigError, match="has no primary key"):
        engine.plan_migration(pg18_source, pg15_target, type=MigrationType.INCREMENTAL, tables=["events"], watermark="at")


DOC_TARGETS = {
    "mongodb": ("DBFLEET_TEST_MONGODB_URL", "MongoDB"),
    "elasticsearch": ("DBFLEET_TEST_ELASTICSEARCH_URL", "Elasticsearch"),
    # the tests' own ClickHouse (Debian's 18.16) runs PostgreSQL -> ClickHouse in test_clickhouse_target.py; this
    # one runs against another server (e.g. a newer one, with DateTime64) when the variable names it
    "clickhouse": ("DBFLEET_TEST_CLICKHOUSE_URL", "ClickHouse (HTTP, e.g. http://127.0.0.1:8123)"),
}


@pytest.mark.parametrize("kind", sorted(DOC_TARGETS))
def test_postgresql_into_a_document_store(kind: str, pg18_source: Any) -> None:
    import os

    env, name = DOC_TARGETS[kind]
    if not os.environ.get(env):
        pytest.skip(f"no {name} server here: set {env} to run PostgreSQL -> {kind}")
    target = db(f"{kind}_t", kind=kind, dsn=os.environ[env], dbname=f"dbfleet_mig_{uuid.uuid4().hex[:6]}")
    plan = engine.plan_migration(pg18_source, target, tables=["users", "we;ird \"t"], batch_size=700)
    try:
        report = _run(plan, pg18_source, target)
        assert report["ok"], json.dumps(report["tables"], default=str)
        assert {t["table"]: t["target_rows"] for t in report["tables"]} == {"public.users": 3000,
                                                                          'public.we;ird "t': 400}
        assert engine.copy_batch(plan, 0, pg18_source, target)["skipped"]
    finally:
        engine.rollback(engine.prepare(plan, pg18_source, target), pg18_source, target)


EMBED_SETUP = [
    "CREATE TABLE playlists (id int PRIMARY KEY, name text NOT NULL)",
    "INSERT INTO playlists SELECT g, 'list ' || g FROM generate_series(1, 250) g",
    'CREATE TABLE "line;items""" (id int PRIMARY KEY, playlist_id int REFERENCES playlists, track text,'
    " added timestamptz, price numeric(6,2))",
    # 3 items in each of the first 200 playlists (inserted out of order), 7 with no playlist at all
    'INSERT INTO "line;items""" SELECT g, CASE WHEN g <= 600 THEN (g - 1) % 200 + 1 END, \'t\' || g,'
    " timestamptz '2026-03-01 12:00:00+00' + g * interval '1 minute', g / 4.0 FROM generate_series(607, 1, -1) g",
    # a composite key whose foreign key lists its columns in another order
    "CREATE TABLE albums (artist text, no int, title text, PRIMARY KEY (artist, no))",
    "INSERT INTO albums VALUES ('Ève', 1, 'first'), ('Ève', 2, 'second'), ('Zed', 1, 'only')",
    "CREATE TABLE songs (id int PRIMARY KEY, no int, artist text, name text,"
    " FOREIGN KEY (no, artist) REFERENCES albums (no, artist))",
    "INSERT INTO songs VALUES (1, 1, 'Ève', 'a'), (2, 2, 'Ève', 'b'), (3, 1, 'Ève', 'c'), (4, 1, 'Zed', 'd')",
]


@pytest.fixture
def mongo_stand_in(monkeypatch: pytest.MonkeyPatch) -> Any:
    """mongomock, an in-process stand-in for a MongoDB server (none can run here), behind the MongoDB
    connector: the engine's MongoDB writer, embedding and validation run end to end against it."""
    mongomock = pytest.importorskip("mongomock", reason="mongomock (test extra) is not installed")
    from engines.connectors.mongodb import MongoConnector

    builder = mongomock.collection.BulkOperationBuilder
    replace = builder.add_replace
    if "sort" not in replace.__code__.co_varnames:  # pymongo 4.11+ passes ReplaceOne's sort; mongomock predates it
        monkeypatch.setattr(builder, "add_replace", lambda self, selector, doc, upsert, sort=None, **kw:
                            replace(self, selector, doc, upsert, **kw))
    client = mongomock.MongoClient()
    monkeypatch.setattr(MongoConnector, "_connect", lambda self: client)
    monkeypatch.setattr(MongoConnector, "_close", lambda self: None)
    return client


@pytest.fixture(params=["stand-in", "server"])
def mongo_target(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """(target config, pymongo-like client): mongomock behind the connector, or the MongoDB server at
    DBFLEET_TEST_MONGODB_URL when one is given."""
    import os

    name = f"dbfleet_mig_{uuid.uuid4().hex[:6]}"
    if request.param == "stand-in":
        client = request.getfixturevalue("mongo_stand_in")
        yield db("mongo_t", kind="mongodb", host="127.0.0.1", dbname=name), client
        return
    url = os.environ.get("DBFLEET_TEST_MONGODB_URL")
    if not url:
        pytest.skip("no MongoDB server here: set DBFLEET_TEST_MONGODB_URL to run embedding against a real one")
    import pymongo

    client = pymongo.MongoClient(url)
    yield db("mongo_t", kind="mongodb", dsn=url, dbname=name), client
    client.drop_database(name)
    client.close()


def test_postgresql_to_mongodb_embeds_child_tables_by_foreign_key(pg18_source: Any, embedded_pg: Any,
                                                                   mongo_target: tuple[Any, Any]) -> None:
    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY,
                         dbname=pg18_source.dbname, autocommit=True) as c:
        for stmt in EMBED_SETUP:
            c.execute(stmt)
    target, client = mongo_target
    plan = engine.plan_migration(pg18_source, target, tables=["playlists", "albums"], batch_size=60,
                                 embed={'line;items"': {"into": "playlists", "as": "items"}, "songs": "albums"})
    assert [t.source for t in plan.tables] == ["public.albums", "public.playlists"]
    assert {e.field: e.fk for t in plan.tables for e in t.embeds} == {"items": ["playlist_id"],
                                                                    "songs": ["artist", "no"]}
    assert len([b for b in plan.batches if b.table == "public.playlists"]) == 5
    report = _run(plan, pg18_source, target)
    assert report["ok"], json.dumps(report["tables"], default=str)
    playlists = next(t for t in report["tables"] if t["table"] == "public.playlists")
    assert playlists["target_rows"] == 250
    assert playlists["embedded"] == [{"table": 'public.line;items"', "field": "items", "source_rows": 600,
                                      "target_rows": 600, "not_embedded": 7, "ok": True}]
    shop = client[target.dbname]
    first = shop["playlists"].find_one({"_id": "1"})
    assert first["name"] == "list 1" and [i["id"] for i in first["items"]] == [1, 201, 401]  # the child's key order
    assert set(first["items"][0]) == {"id", "track", "added", "price"}  # the foreign key is the parent's id
    assert str(first["items"][0]["price"]) == "0.25" and first["items"][0]["added"].minute == 1
    assert shop["playlists"].find_one({"_id": "250"})["items"] == []
    eve = shop["albums"].find_one({"_id": "Ève|1"})
    assert [s["name"] for s in eve["songs"]] == ["a", "c"] and set(eve["songs"][0]) == {"id", "name"}
    # a redelivered batch rewrites the same documents: nothing duplicated
    batch = next(b for b in plan.batches if b.table == "public.playlists")
    shop["_dbfleet_checkpoints"].delete_one({"_id": f"{plan.id}:{batch.id}"})
    assert not engine.copy_batch(plan, batch.id, pg18_source, target)["skipped"]
    assert engine.validate(plan, pg18_source, target)["ok"] and shop["playlists"].count_documents({}) == 250
    # one sub-document lost: validation names the embedded table
    shop["playlists"].update_one({"_id": "7"}, {"$pop": {"items": 1}})
    bad = next(t for t in engine.validate(plan, pg18_source, target)["tables"] if t["table"] == "public.playlists")
    assert not bad["ok"] and bad["embedded"][0]["target_rows"] == 599 and not bad["embedded"][0]["ok"]
    engine.rollback(engine.prepare(plan, pg18_source, target), pg18_source, target)
    assert "playlists" not in shop.list_collection_names()


def test_embedding_requests_that_cannot_work_are_clear(pg18_source: Any, pg15_target: Any, embedded_pg: Any,
                                                       mongo_stand_in: Any) -> None:
    with psycopg.connect(host="127.0.0.1", port=embedded_pg.port, user="postgres", password=CANARY,
                         dbname=pg18_source.dbname, autocommit=True) as c:
        for stmt in EMBED_SETUP:
            c.execute(stmt)
    mongo = db("mongo_t", kind="mongodb", host="127.0.0.1", dbname="shop")
    cases = [
        (pg15_target, {"songs": "albums"}, "for MongoDB targets, not postgresql"),
        (mongo, {"users": "playlists"}, "public.users has no foreign key to public.playlists"),
        (mongo, {"songs": "nope"}, "no such source table: nope"),
        (mongo, {"songs": {"into": "albums", "as": "title"}}, "field 'title' is not free"),
        (mongo, {"songs": {"into": "albums", "as": "a.b"}}, "field 'a.b' is not free"),
        (mongo, {"songs": {"parent": "albums"}}, "give the parent table"),
        (mongo, {'line;items"': "playlists", "playlists": "users"}, "public.playlists is embedded itself"),
    ]
    for target, embed, message in cases:
        with pytest.raises(ConfigError, match=message):
            engine.plan_migration(pg18_source, target, tables=["playlists", "albums", "users"], embed=embed)


@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_a_mysql_source_given_only_by_dsn_reads_batches_through_the_connectors_arguments(
        maria_source: Any, pg15_target: Any, driver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if driver == "mysqlclient" and importlib.util.find_spec("MySQLdb") is None:
        pytest.skip("mysqlclient is not installed (it builds against libmariadb-dev): the PyMySQL run covers the path")
    monkeypatch.setenv("DBFLEET_MYSQL_DRIVER", driver)
    by_dsn = db("maria_dsn", kind="mariadb", dsn=f"mysql://root@{maria_source.host}:3306/{maria_source.dbname}")
    assert by_dsn.host is None and by_dsn.dbname is None  # everything comes from the dsn, the raw reader's too
    plan = engine.plan_migration(by_dsn, pg15_target, tables=["texts"], batch_size=10)
    assert plan.path == "text" and _run(plan, by_dsn, pg15_target)["ok"]
    assert _rows(pg15_target, "SELECT count(*) FROM texts") == [(33,)]
