"""In-place masking on SQLite and MariaDB: the same fakes as anywhere under one key, unique columns kept,
and a run that dies between batches resumes with every row masked exactly once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faker import Faker

from engines.compliance.anonymize.base import mask_target_class
from engines.compliance.anonymize.inplace import anonymize_in_place
from engines.compliance.anonymize.rules import Masker, parse_rule
from engines.connectors import open_connector
from tests.conftest import db
from tests.servers import require

pytestmark = pytest.mark.integration
KEY = b"h8-others-key-0123456789abcdef"
RULES = {"email": "email", "full_name": "name", "phone": "phone", "iban": "iban"}
N = 400


def people(seed: int = 6) -> list[tuple[Any, ...]]:
    fake = Faker("en_GB")
    fake.seed_instance(seed)
    return [(i, f"{i}.{fake.email()}", fake.name(), fake.phone_number(), fake.iban()) for i in range(1, N + 1)]


class Boom(Exception):
    """Stands for a crash between two batches."""


def _mask(entry: Any, table: str, crash_after: int | None = None) -> dict[str, Any]:
    def progress(done: int, _total: int | None) -> None:
        if crash_after is not None and done >= crash_after:
            raise Boom(done)

    with open_connector(entry) as conn:
        target = mask_target_class(entry.kind)(conn)
        return anonymize_in_place(target, entry.id, table, RULES, Masker(KEY), batch_size=60, progress=progress)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Any:
    path = tmp_path / "h8_mask.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, full_name TEXT,"
                     " phone TEXT, iban TEXT)")
        conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?)", people())
    return db("lite", kind="sqlite", path=str(path))


@pytest.fixture
def maria_db() -> Iterator[Any]:
    import pymysql

    require("mariadb")
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS h8_cmp_mask")
        cur.execute("CREATE DATABASE h8_cmp_mask CHARACTER SET utf8mb4")
        cur.execute("CREATE TABLE h8_cmp_mask.people (id INT PRIMARY KEY, email VARCHAR(120) NOT NULL UNIQUE,"
                    " full_name VARCHAR(100), phone VARCHAR(40), iban VARCHAR(40))")
        cur.executemany("INSERT INTO h8_cmp_mask.people VALUES (%s, %s, %s, %s, %s)", people())
    yield db("maria", kind="mariadb", host="127.0.0.1", user="root", dbname="h8_cmp_mask")
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS h8_cmp_mask")
    conn.close()


def _sqlite_rows(entry: Any) -> dict[int, tuple[Any, ...]]:
    with sqlite3.connect(entry.path) as conn:
        return {r[0]: r[1:] for r in conn.execute("SELECT id, email, full_name, phone, iban FROM people")}


def _maria_rows() -> dict[int, tuple[Any, ...]]:
    import pymysql

    with pymysql.connect(host="127.0.0.1", user="root", password="", database="h8_cmp_mask") as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT id, email, full_name, phone, iban FROM people")
        return {r[0]: r[1:] for r in cur.fetchall()}


def _expected() -> dict[int, tuple[Any, ...]]:
    masker, rules = Masker(KEY), [parse_rule(r) for r in RULES.values()]
    return {r[0]: tuple(masker.apply(rule, v) for rule, v in zip(rules, r[1:], strict=True)) for r in people()}


def test_sqlite_crash_between_batches_resumes_and_masks_each_row_once(sqlite_db: Any) -> None:
    with pytest.raises(Boom):
        _mask(sqlite_db, "people", crash_after=120)
    result = _mask(sqlite_db, "people")
    assert result["resumed_from_rows"] == 120 and result["rows_masked"] == N
    assert _sqlite_rows(sqlite_db) == _expected()  # f(x) for every row: never x, never f(f(x))


def test_mariadb_masks_to_the_same_fakes_as_sqlite(maria_db: Any, sqlite_db: Any) -> None:
    with pytest.raises(Boom):
        _mask(maria_db, "people", crash_after=180)
    assert _mask(maria_db, "people")["rows_masked"] == N
    _mask(sqlite_db, "people")
    rows = _maria_rows()
    assert rows == _sqlite_rows(sqlite_db) == _expected()
    assert len({r[0] for r in rows.values()}) == N


def test_unique_columns_bump_colliding_fakes_deterministically(tmp_path: Path) -> None:
    results, tables = [], []
    for name in ("h8_a.db", "h8_b.db"):
        path = tmp_path / name
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE nicks (id INTEGER PRIMARY KEY, nick TEXT NOT NULL UNIQUE)")
            conn.executemany("INSERT INTO nicks (nick) VALUES (?)", [(f"nick{i}",) for i in range(200)])
        entry = db("nicks", kind="sqlite", path=str(path))
        with open_connector(entry) as conn:
            results.append(anonymize_in_place(mask_target_class("sqlite")(conn), "nicks", "nicks",
                                              {"nick": "faker:first_name"}, Masker(KEY), batch_size=100))
        with sqlite3.connect(path) as conn:
            tables.append([r[0] for r in conn.execute("SELECT nick FROM nicks ORDER BY id")])
    assert results[0]["unique_collisions_resolved"] > 0  # Faker draws common first names far more often
    assert len(set(tables[0])) == 200 and tables[0] == tables[1]


def test_hostile_table_and_column_names_are_masked_safely(tmp_path: Path) -> None:
    path = tmp_path / "h8_hostile.db"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE "we""ird; DROP TABLE x" (id INTEGER PRIMARY KEY, "e-mail ""x""" TEXT UNIQUE)')
        conn.executemany('INSERT INTO "we""ird; DROP TABLE x" ("e-mail ""x""") VALUES (?)',
                         [(f"h{i}@corp.example",) for i in range(30)])
    entry = db("hostile", kind="sqlite", path=str(path))
    with open_connector(entry) as conn:
        result = anonymize_in_place(mask_target_class("sqlite")(conn), "hostile", 'we"ird; DROP TABLE x',
                                    {'e-mail "x"': "email"}, Masker(KEY), batch_size=7)
    assert result["rows_masked"] == 30
    with sqlite3.connect(path) as conn:
        values = [r[0] for r in conn.execute('SELECT "e-mail ""x""" FROM "we""ird; DROP TABLE x"')]
    assert len(values) == 30 and not [v for v in values if v.endswith("@corp.example")]
