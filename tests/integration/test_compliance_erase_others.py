"""Erasure on SQLite and MariaDB: the subject's dependants found through foreign keys (two levels, two
paths), deleted or masked in one transaction; other subjects untouched; a refused plan changes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.compliance.anonymize.rules import Masker
from engines.compliance.erasure import eraser_class, parse_subject
from engines.connectors import open_connector
from engines.errors import ConfigError
from tests.conftest import db
from tests.servers import require

pytestmark = pytest.mark.integration
SCHEMA = [
    "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR(80) NOT NULL, full_name VARCHAR(80))",
    "CREATE TABLE playlists (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, name VARCHAR(40),"
    " FOREIGN KEY (user_id) REFERENCES users(id))",
    "CREATE TABLE entries (playlist_id INTEGER NOT NULL, pos INTEGER NOT NULL, added_by INTEGER,"
    " PRIMARY KEY (playlist_id, pos), FOREIGN KEY (playlist_id) REFERENCES playlists(id),"
    " FOREIGN KEY (added_by) REFERENCES users(id))",
    "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, FOREIGN KEY (user_id) REFERENCES users(id))",
]
USERS = [(i, f"user{i}@corp.example", f"Person {i}") for i in range(1, 6)]
PLAYLISTS = [(i, 1 + i % 5, f"list {i}") for i in range(1, 11)]
ENTRIES = [(p, pos, 1 + (p + pos) % 5) for p in range(1, 11) for pos in range(3)]
EVENTS = [(i, 1 + i % 5) for i in range(1, 41)]
INSERTS = {"users": USERS, "playlists": PLAYLISTS, "entries": ENTRIES, "events": EVENTS}


def _expected(user: int) -> dict[str, int]:
    lists = {p for p, u, _ in PLAYLISTS if u == user}
    return {"users": 1, "playlists": len(lists), "events": sum(1 for _, u in EVENTS if u == user),
            "entries": sum(1 for p, _, a in ENTRIES if p in lists or a == user)}


def _erase(entry: Any, policies: dict[str, str], rules: dict[str, dict[str, str]], dry: bool = False) -> Any:
    with open_connector(entry) as conn:
        eraser = eraser_class(entry.kind)(conn, policies, rules)
        subject = parse_subject("users.id=2")
        steps = eraser.plan(subject)
        return steps if dry else (steps, eraser.execute(subject, steps, Masker(b"h8-erase-key-0123456789abc")))


@pytest.fixture
def lite(tmp_path: Path) -> Any:
    path = tmp_path / "h8_erase.db"
    with sqlite3.connect(path) as conn:
        for stmt in SCHEMA:
            conn.execute(stmt)
        for table, rows in INSERTS.items():
            conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)  # noqa: S608
    return db("lite", kind="sqlite", path=str(path))


@pytest.fixture
def maria() -> Iterator[Any]:
    import pymysql

    require("mariadb")
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS h8_cmp_erase")
        cur.execute("CREATE DATABASE h8_cmp_erase")
        cur.execute("USE h8_cmp_erase")
        for stmt in SCHEMA:
            cur.execute(stmt + " ENGINE=InnoDB")
        for table, rows in INSERTS.items():
            cur.executemany(f"INSERT INTO {table} VALUES ({', '.join(['%s'] * len(rows[0]))})", rows)  # noqa: S608
    yield db("maria", kind="mariadb", host="127.0.0.1", user="root", dbname="h8_cmp_erase")
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS h8_cmp_erase")
    conn.close()


def _counts_sqlite(entry: Any) -> dict[str, int]:
    with sqlite3.connect(entry.path) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in INSERTS}  # noqa: S608


def test_sqlite_erasure_deletes_the_subject_and_every_dependant(lite: Any) -> None:
    before = _counts_sqlite(lite)
    steps = _erase(lite, {}, {}, dry=True)
    assert {s.table: s.rows for s in steps} == _expected(2) and steps[-1].table == "users"
    _, done = _erase(lite, {}, {})
    assert done == _expected(2)
    after = _counts_sqlite(lite)
    assert {t: before[t] - after[t] for t in before} == _expected(2)


def test_mariadb_erasure_masks_the_subject_row_when_the_policy_says_so(maria: Any) -> None:
    import pymysql

    steps, done = _erase(maria, {"users": "anonymize"}, {"users": {"email": "email", "full_name": "name"}})
    assert done == {**_expected(2), "users": 1}
    with pymysql.connect(host="127.0.0.1", user="root", password="", database="h8_cmp_erase") as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT email, full_name FROM users WHERE id = 2")
        email, name = cur.fetchone()
        cur.execute("SELECT count(*) FROM users WHERE email LIKE 'user%%@corp.example'")
        assert cur.fetchone()[0] == 4  # the other subjects untouched
    assert email != "user2@corp.example" and name != "Person 2"


def test_a_plan_that_would_break_a_foreign_key_is_refused(lite: Any) -> None:
    with pytest.raises(ConfigError, match="references users"):
        _erase(lite, {"events": "keep"}, {})
    assert _counts_sqlite(lite)["users"] == 5
