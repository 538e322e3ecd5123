"""Definitions read from a source never run as SQL text on the target (issue 14, section 6).

A compromised PostgreSQL source is a real server whose database puts a schema of look-alike catalog
functions (``pg_get_indexdef``, ``pg_get_constraintdef``, ``format_type``) before pg_catalog on its
search_path: the migration's catalog queries then read hostile text from a real server. A CHECK that calls
a volatile function is something any source can hold. The MariaDB source carries hostile names everywhere.
Each time the target keeps its table ``victim`` and nothing the source wrote runs there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest

from engines.errors import ConfigError
from engines.migration import engine
from engines.migration.clickhouse_target import ch_type
from engines.migration.ddl import UnsafeDefinition, constraint_statement, index_statement, safe_type
from engines.migration.engine import MigrationFailed
from tests.conftest import db
from tests.integration.backup_cases import pg_admin
from tests.servers import require

pytestmark = pytest.mark.integration

DROP = "DROP TABLE public.victim"
HOSTILE_SOURCE = [
    "CREATE TABLE items (id int PRIMARY KEY, name text, qty int CONSTRAINT qty_positive CHECK (qty > 0),"
    " CONSTRAINT named_ok CHECK (length(name) > 0),"
    # any source may hold a check that calls a volatile function: run on the target it creates large objects
    " CONSTRAINT sneaky CHECK (lo_create(0) > 0))",
    'CREATE INDEX "by ""name""; DROP TABLE victim; --" ON items (lower(name))',  # a hostile name, honestly quoted
    "CREATE INDEX by_qty ON items (qty)",
    "INSERT INTO items SELECT g, 'n' || g, g FROM generate_series(1, 20) g",
    "CREATE TABLE typed (id int PRIMARY KEY, v numeric(7,3))",
    "INSERT INTO typed VALUES (1, 1.5)",
    # the compromised part: look-alike catalog functions, found before pg_catalog's
    "CREATE SCHEMA evil",
    "CREATE FUNCTION evil.pg_get_indexdef(oid) RETURNS text LANGUAGE sql AS $$ SELECT CASE WHEN"
    " (SELECT relname FROM pg_catalog.pg_class WHERE oid = $1) = 'by_qty' THEN"
    " 'CREATE INDEX by_qty ON public.items USING btree (qty); DROP TABLE public.victim; --'"
    " ELSE pg_catalog.pg_get_indexdef($1) END $$",
    "CREATE FUNCTION evil.pg_get_constraintdef(oid) RETURNS text LANGUAGE sql AS $$ SELECT CASE WHEN"
    " (SELECT conname FROM pg_catalog.pg_constraint WHERE oid = $1) = 'qty_positive' THEN"
    " 'CHECK (qty > 0); DROP TABLE public.victim' ELSE pg_catalog.pg_get_constraintdef($1) END $$",
    # numeric(7,3) is typmod 458759: only typed.v has it
    "CREATE FUNCTION evil.format_type(oid, integer) RETURNS text LANGUAGE sql AS $$ SELECT CASE WHEN $2 = 458759"
    " THEN 'integer); DROP TABLE public.victim; CREATE TABLE public.x (y int' ELSE pg_catalog.format_type($1, $2) END $$",
]


def _pg(name: str) -> Any:
    return db(name, kind="postgresql", host="127.0.0.1", dbname=name, user="postgres")


def _query(database: Any, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=database.dbname) as c:
        return c.execute(query).fetchall()


@pytest.fixture
def databases() -> Iterator[tuple[Any, Any]]:
    """(a compromised PostgreSQL source, a target holding a table ``victim``), on the PostgreSQL 15 server."""
    require("postgresql15")
    source, target = f"h4_src_{uuid.uuid4().hex[:8]}", f"h4_tgt_{uuid.uuid4().hex[:8]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{source}"')
        admin.execute(f'CREATE DATABASE "{target}"')
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=source, autocommit=True) as c:
        for stmt in HOSTILE_SOURCE:
            c.execute(stmt)
        c.execute(f'ALTER DATABASE "{source}" SET search_path = evil, pg_catalog, public')
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=target, autocommit=True) as c:
        c.execute("CREATE TABLE victim (id int); INSERT INTO victim VALUES (1), (2)")
    yield _pg(source), _pg(target)
    with pg_admin() as admin:
        for name in (source, target):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _untouched(target: Any) -> None:
    assert _query(target, "SELECT count(*) FROM victim") == [(2,)]
    assert _query(target, "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]
    assert _query(target, "SELECT count(*) FROM pg_tables WHERE tablename = 'x'") == [(0,)]


def test_a_compromised_postgresql_source_cannot_run_statements_on_the_target(databases: tuple[Any, Any]) -> None:
    source, target = databases
    plan = engine.prepare(engine.plan_migration(source, target, tables=["public.items"]), source, target)
    assert _query(source, "SELECT pg_get_indexdef('by_qty'::regclass)")[0][0].endswith(f"{DROP}; --")  # it lies
    for b in plan.batches:
        engine.copy_batch(plan, b.id, source, target)
    with pytest.raises(MigrationFailed) as failed:
        engine.finalize(plan, source, target)
    message = str(failed.value)
    assert "index by_qty: refused, index 'by_qty' of public.items: holds 2 statements" in message
    assert "constraint qty_positive: refused, constraint 'qty_positive' of public.items: holds 2" in message
    assert "constraint sneaky: refused, its definition calls lo_create, volatile or unknown on the target" in message
    _untouched(target)
    built = {r[0] for r in _query(target, "SELECT conname FROM pg_constraint WHERE conrelid = 'items'::regclass"
                                          " UNION ALL SELECT indexrelid::regclass::text FROM pg_index"
                                          " WHERE indrelid = 'items'::regclass")}
    # what the source defined honestly is rebuilt, its hostile-looking name exactly
    assert {"named_ok", '"by ""name""; DROP TABLE victim; --"', "items_pkey"} <= built
    assert not {"qty_positive", "sneaky", "by_qty"} & built
    assert _query(target, "SELECT count(*) FROM items") == [(20,)]


def test_a_type_that_carries_sql_is_refused_at_plan_time(databases: tuple[Any, Any]) -> None:
    source, target = databases
    with pytest.raises(ConfigError, match=r"public.typed.v: column type 'integer\); DROP TABLE public.victim;.*"
                                          r"holds 3 statements.*nothing was written"):
        engine.plan_migration(source, target, tables=["public.typed"])
    _untouched(target)


MARIA_HOSTILE = [
    "CREATE TABLE `victim\"; DROP TABLE victim; --` (`id\"; DROP TABLE victim; --` INT PRIMARY KEY,"
    " `k``;` ENUM('a'');DROP TABLE victim;--','b') NOT NULL, `n` VARCHAR(20), `d` DECIMAL(7,3))",
    "INSERT INTO `victim\"; DROP TABLE victim; --` VALUES (1, 'a'');DROP TABLE victim;--', 'x', 1.5), (2, 'b', NULL, NULL)",
    "CREATE INDEX `i\"; DROP TABLE victim; --` ON `victim\"; DROP TABLE victim; --` (`n`(5), `k``;`)",
    "CREATE TABLE `child` (id INT PRIMARY KEY, p INT, CONSTRAINT `f\"); DROP TABLE victim; --` FOREIGN KEY (p)"
    " REFERENCES `victim\"; DROP TABLE victim; --` (`id\"; DROP TABLE victim; --`) ON DELETE CASCADE)",
    "INSERT INTO `child` VALUES (1, 1), (2, NULL)",
]


def test_a_mariadb_source_with_hostile_names_is_rebuilt_exactly_and_runs_nothing(databases: tuple[Any, Any]) -> None:
    host, port = require("mariadb")
    _, target = databases
    name = f"h4_maria_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host=host, port=port, user="root", autocommit=True, charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{name}`")
            for stmt in MARIA_HOSTILE:
                cur.execute(stmt)
        source = db("h4_maria", kind="mariadb", host=host, port=port, dbname=name, user="root")
        plan = engine.prepare(engine.plan_migration(source, target), source, target)
        for b in plan.batches:
            engine.copy_batch(plan, b.id, source, target)
        engine.finalize(plan, source, target)
        assert engine.validate(plan, source, target)["ok"]
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
    _untouched(target)
    table = 'public."victim""; DROP TABLE victim; --"'
    assert _query(target, f"SELECT count(*) FROM {table}") == [(2,)]  # noqa: S608 - a constant
    names = {r[0] for r in _query(target, "SELECT relname FROM pg_class UNION ALL SELECT conname FROM pg_constraint")}
    assert {'victim"; DROP TABLE victim; --_i"; DROP TABLE victim; --', 'f"); DROP TABLE victim; --'} <= names
    assert _query(target, "SELECT enumlabel FROM pg_enum ORDER BY enumsortorder") == [("a');DROP TABLE victim;--",),
                                                                                       ("b",)]


@pytest.mark.parametrize("text", ["integer); DROP TABLE victim; --", "int DEFAULT pg_sleep(1)", "int, x int",
                                  "numeric((SELECT 1))", "int COLLATE \"C\"", "int) INHERITS (victim"])
def test_a_type_is_one_type_name_or_nothing(text: str) -> None:
    with pytest.raises(UnsafeDefinition):
        safe_type(text)


def test_plain_types_print_back_as_the_same_type() -> None:
    assert [safe_type(t) for t in ("integer", "character varying(10)[]", "numeric(10,2)", 'public."we;ird"[]',
                                   "timestamp(3) with time zone")] == \
        ["integer", "varchar(10)[]", "numeric(10, 2)", 'public."we;ird"[]', "timestamp(3) with time zone"]


@pytest.mark.parametrize("definition", ["CREATE INDEX i ON public.t (a); DROP TABLE v", "CREATE INDEX j ON public.t (a)",
                                        "CREATE INDEX i ON public.v (a)", "DROP TABLE v",
                                        "CREATE INDEX i ON public.t (a) TABLESPACE elsewhere"])
def test_an_index_definition_is_that_index_on_that_table(definition: str) -> None:
    with pytest.raises(UnsafeDefinition):
        index_statement(definition, ("public", "t"), ("public", "t"), "i")


@pytest.mark.parametrize("definition,contype", [("CHECK (true); DROP TABLE v", "c"), ("CHECK (true), DROP COLUMN a", "c"),
                                                ("UNIQUE (a)", "c"), ("CHECK ((SELECT 1) = 1)", "c"),
                                                ("FOREIGN KEY (a) REFERENCES other (id)", "f")])
def test_a_constraint_definition_is_one_constraint_of_its_kind(definition: str, contype: str) -> None:
    with pytest.raises(UnsafeDefinition):
        constraint_statement(definition, ("public", "t"), "c", contype, ("public", "p"))


def test_a_foreign_key_is_pinned_to_the_migrated_table_and_added_not_valid() -> None:
    text, calls = constraint_statement("FOREIGN KEY (a) REFERENCES p(id) ON DELETE CASCADE", ("public", "t"), "fk",
                                       "f", ("public", "p"))
    assert text == ("ALTER TABLE public.t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES public.p (id)"
                    " ON DELETE CASCADE NOT VALID") and calls == set()


def test_clickhouse_decimal_takes_only_the_digits_of_a_type() -> None:
    assert ch_type("numeric(10,2)", False) == "Decimal(10, 2)"
    assert ch_type("numeric(10,2)) ENGINE = Log; DROP TABLE x; --(", False) == "String"
