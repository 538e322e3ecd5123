"""The compliance queue's tasks run through ScriptTask (history, scrubbing): registered names, the script
table, a scan of SQLite and an anonymisation of PostgreSQL whose key never reaches a result or history."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from tests.servers import CANARY, require

pytestmark = pytest.mark.integration
DB = "h8_cmp_task"


def test_tasks_are_registered_on_the_compliance_queue() -> None:
    from workers.app import TASK_MODULES, app
    from workers.scripts import ScriptType, resolve

    assert "workers.compliance" in TASK_MODULES
    app.loader.import_default_modules()  # what a worker does at start
    assert {"compliance.scan", "compliance.anonymize", "compliance.erase"} <= set(app.tasks)
    assert resolve(ScriptType.COMPLIANCE_AUDIT) == ("compliance_scan", "compliance.scan", "compliance")
    assert resolve("compliance-erase")[2] == "compliance"


def test_scan_task_records_history_and_anonymize_task_never_leaks_the_key(fresh_runtime: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    require("postgresql15")
    people = tmp_path / "h8_people.db"
    with sqlite3.connect(people) as conn:
        conn.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT)")
        conn.executemany("INSERT INTO contacts (email) VALUES (?)", [(f"p{i}@example.org",) for i in range(30)])
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE NOT NULL)")
        conn.execute("INSERT INTO users SELECT g, 'u' || g || '@corp.example' FROM generate_series(1, 50) g")
    monkeypatch.setenv("H8_TASK_KEY", CANARY + "-anonymisation")
    fresh_runtime.write_text(f"""
fleet: {{history_url: "sqlite:///{tmp_path / 'history.db'}"}}
databases:
  people: {{kind: sqlite, path: "{people}"}}
  users: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {DB}}}
database_scripts: {{compliance: {{key_env: H8_TASK_KEY, security_audit: false}}}}
""")
    from workers import runtime
    from workers.compliance import anonymize, scan

    try:
        report = scan.apply(args=["people"], kwargs={"options": {"sample_size": 20}}).get()
        assert report["discovery"]["categories"] == {"email": ["contacts.email"]}
        result = anonymize.apply(args=["users"], kwargs={"options": {"table": "users", "rules": {"email": "email"}}}).get()
        assert result["rows_masked"] == 50 and result["key_fingerprint"]
        runs = runtime.history().query(limit=10)
        assert sorted((r["script_type"], r["status"]) for r in runs) == [("compliance_anonymize", "succeeded"),
                                                                        ("compliance_scan", "succeeded")]
        assert CANARY not in json.dumps(runs) + json.dumps(result)
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
