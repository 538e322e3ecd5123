"""The security audit's pg.rls_on_pii_tables takes the tables the last compliance scan found PII in, not
column names: a table whose column is named innocently but holds e-mails is flagged, a table whose
`email_template` column holds no e-mail is not (the name heuristic gets both wrong)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.servers import require

pytestmark = pytest.mark.integration
DB = "integ_rls_pii"


def _rls(report: dict) -> dict:
    return next(f for f in report["findings"] if f["check_id"] == "pg.rls_on_pii_tables")


def test_rls_check_follows_the_last_pii_scan_instead_of_column_names(fresh_runtime: Path, tmp_path: Path) -> None:
    require("postgresql15")
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, contact text)")
        conn.execute("INSERT INTO notes SELECT g, 'person' || g || '@mail.example' FROM generate_series(1, 200) g")
        conn.execute("CREATE TABLE templates (id int PRIMARY KEY, email_template text)")
        conn.execute("INSERT INTO templates SELECT g, 'Dear customer, thanks for order ' || g "
                     "FROM generate_series(1, 200) g")
    fresh_runtime.write_text(f"""
fleet: {{history_url: "sqlite:///{tmp_path / 'history.db'}"}}
databases:
  app: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {DB}}}
database_scripts: {{compliance: {{security_audit: false}}}}
""")
    from workers.audits import security
    from workers.compliance import scan

    try:
        before = _rls(security.apply(args=["app"]).get())  # no scan yet: the column-name heuristic
        assert [t["table"] for t in before["evidence"]["tables"]] == ["public.templates"]
        assert "column names" in before["evidence"]["source"]
        report = scan.apply(args=["app"], kwargs={"options": {"sample_size": 50}}).get()
        assert report["discovery"]["categories"].get("email") == ["notes.contact"]
        after = _rls(security.apply(args=["app"]).get())
        assert [t["table"] for t in after["evidence"]["tables"]] == ["public.notes"]
        assert after["evidence"]["source"] == "the last compliance scan's PII findings"
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
