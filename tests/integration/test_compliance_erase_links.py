"""Right to erasure across databases: a configured link (``compliance.erasure_links``: users.email in the
PostgreSQL 15 app database -> contacts.email in a MariaDB CRM) makes one erasure reach the linked rows and
their dependants, each database in its own transaction, the linked one first; the plan shows both, nothing
changes on a dry run, other subjects are untouched, the trail names both databases without the value; a bad
link is refused when the config loads; a link to an unknown database erases nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engines.errors import ConfigError, UnknownDatabaseError
from tests.servers import require

pytestmark = pytest.mark.integration
PG_DB, CRM_DB = "lnk_cmp_app", "lnk_cmp_crm"
TRAIL = "lnk-erase-trail-key-0123456789"


@pytest.fixture(scope="module")
def dbs() -> Iterator[None]:
    import pymysql

    require("postgresql15")
    require("mariadb")
    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {PG_DB}")
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={PG_DB}", autocommit=True) as c:
        c.execute("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL)")
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users(id), total int)")
        c.execute("INSERT INTO users SELECT g, 'person' || g || '@mail.example' FROM generate_series(1, 5) g")
        c.execute("INSERT INTO orders SELECT g, 1 + g % 5, g * 10 FROM generate_series(1, 20) g")
    maria = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    with maria.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {CRM_DB}")
        cur.execute(f"CREATE DATABASE {CRM_DB}")
        cur.execute(f"USE {CRM_DB}")
        cur.execute("CREATE TABLE contacts (id INT PRIMARY KEY, email VARCHAR(80) NOT NULL) ENGINE=InnoDB")
        cur.execute("CREATE TABLE notes (id INT PRIMARY KEY, contact_id INT NOT NULL, body TEXT,"
                    " FOREIGN KEY (contact_id) REFERENCES contacts(id)) ENGINE=InnoDB")
        cur.executemany("INSERT INTO contacts VALUES (%s, %s)", [(10 + i, f"person{i}@mail.example") for i in (1, 2, 3)])
        cur.executemany("INSERT INTO notes VALUES (%s, %s, %s)", [(i, 10 + 1 + i % 3, f"call {i}") for i in range(9)])
    yield
    admin.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    admin.close()
    with maria.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {CRM_DB}")
    maria.close()


def _config(path: Path, tmp: Path, link_db: str = "crm") -> None:
    path.write_text(f"""
fleet: {{history_url: "sqlite:///{tmp / 'history.db'}"}}
databases:
  app: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {PG_DB}}}
  crm: {{kind: mariadb, host: 127.0.0.1, user: root, dbname: {CRM_DB}}}
database_scripts:
  compliance:
    trail_key_env: LNK_TRAIL
    erasure_links: [{{from: users.email, database: {link_db}, to: contacts.email}}]
""")


def _counts() -> dict[str, int]:
    import pymysql

    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={PG_DB}") as c:
        out = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("users", "orders")}  # noqa: S608
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=CRM_DB)
    with conn.cursor() as cur:
        for t in ("contacts", "notes"):
            cur.execute(f"SELECT count(*) FROM {t}")  # noqa: S608 - fixed names
            out[t] = cur.fetchone()[0]
    conn.close()
    return out


def test_an_erasure_follows_the_link_into_the_other_database(dbs: None, fresh_runtime: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.compliance import run_local

    monkeypatch.setenv("LNK_TRAIL", TRAIL)
    _config(fresh_runtime, tmp_path)
    before = _counts()
    plan = run_local("compliance_erase", "app", {"subject": "users.id=2", "dry_run": True})
    assert {s["table"]: s["rows"] for s in plan["plan"]} == {"users": 1, "orders": 4}
    crm = plan["linked"][0]
    assert crm["database_id"] == "crm" and crm["link"] == "users.email -> crm:contacts.email"
    assert {s["table"]: s["rows"] for s in crm["plan"]} == {"contacts": 1, "notes": 3}
    assert _counts() == before  # a dry run changes nothing anywhere

    result = run_local("compliance_erase", "app", {"subject": "users.id=2"})
    assert result["affected"] == {"orders": 4, "users": 1}
    assert result["linked"][0]["affected"] == {"notes": 3, "contacts": 1}
    after = _counts()
    assert {t: before[t] - after[t] for t in before} == {"users": 1, "orders": 4, "contacts": 1, "notes": 3}
    text = json.dumps(result)
    assert "person2@mail.example" not in text and "users.id=2" not in text  # the record holds no data
    assert result["trail"]["recorded"] and result["linked"][0]["trail"]["recorded"]

    again = run_local("compliance_erase", "app", {"subject": "users.id=2", "dry_run": True})
    assert all(s["rows"] == 0 for s in again["plan"]) and "linked" not in again  # nothing left to follow


def test_a_link_to_an_unknown_database_erases_nothing(dbs: None, fresh_runtime: Path, tmp_path: Path) -> None:
    from workers.compliance import run_local

    _config(fresh_runtime, tmp_path, link_db="nowhere")
    before = _counts()
    with pytest.raises(UnknownDatabaseError, match="nowhere"):
        run_local("compliance_erase", "app", {"subject": "users.id=3"})
    assert _counts() == before  # the linked database is erased first; it failed, so the app was not touched


@pytest.mark.parametrize(("link", "message"), [
    ("{from: users, database: crm, to: contacts.email}", "expected table.column"),
    ("{from: users.email, to: contacts.email}", "expected {from: table.column"),
])
def test_a_malformed_link_is_refused_when_the_config_loads(link: str, message: str) -> None:
    from engines.config import parse_config

    with pytest.raises(ConfigError, match=message.replace("{", "\\{")):
        parse_config(f"database_scripts:\n  compliance:\n    erasure_links: [{link}]\n", environ={})


def test_linked_values_read_only_the_subject_rows(dbs: None) -> None:
    from engines.compliance.erasure import Subject, eraser_class
    from engines.connectors import open_connector
    from tests.conftest import db

    entry = db("app", kind="postgresql", host="127.0.0.1", user="postgres", dbname=PG_DB)
    with open_connector(entry) as conn:
        eraser: Any = eraser_class("postgresql")(conn, {}, {})
        assert eraser.linked_values(Subject("users", "id", "4"), "email") == ["person4@mail.example"]
        with pytest.raises(ConfigError, match="no column 'nope'"):
            eraser.linked_values(Subject("users", "id", "4"), "nope")
