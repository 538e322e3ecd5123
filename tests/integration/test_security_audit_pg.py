"""The PostgreSQL security audit against real clusters: a deliberately weak PostgreSQL 18, then fixed;
the system PostgreSQL 15; a role without privileges; and proof that the audit only reads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engines.security import diff_findings, run_audit
from engines.security.model import FAIL, PASS, UNKNOWN
from tests.conftest import db
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration

WEAK_PW = "weak-Pw-3c1d8e-not-a-canary"
HBA_WEAK = ("host all weak_nopw 127.0.0.1/32 trust\n"
            "host all all 0.0.0.0/0 scram-sha-256\n")
WEAKEN = [
    "CREATE ROLE weak_nopw LOGIN",
    f"CREATE ROLE weak_admin LOGIN SUPERUSER PASSWORD '{WEAK_PW}'",
    f"CREATE ROLE weak_creator LOGIN CREATEROLE PASSWORD '{WEAK_PW}'",
    "SET password_encryption = 'md5'",
    f"CREATE ROLE weak_md5 LOGIN PASSWORD '{WEAK_PW}'",
    "RESET password_encryption",
    "CREATE EXTENSION dblink",
    "CREATE FUNCTION public.weak_definer() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'",
    "GRANT CREATE ON SCHEMA public TO PUBLIC",
    "CREATE TABLE public.customers (id int PRIMARY KEY, email text, birth_date date)",
    f"CREATE ROLE weak_reader LOGIN PASSWORD '{WEAK_PW}'",
    "ALTER ROLE postgres SET log_statement = 'all'",
    "ALTER SYSTEM SET log_line_prefix = '%m [%p] app=%a '",
]
FIX = [
    f"ALTER ROLE weak_nopw PASSWORD '{WEAK_PW}'",
    "ALTER ROLE weak_admin NOSUPERUSER",
    "ALTER ROLE weak_creator NOCREATEROLE",
    f"ALTER ROLE weak_md5 PASSWORD '{WEAK_PW}'",
    "DROP EXTENSION dblink",
    "ALTER FUNCTION public.weak_definer() SET search_path = pg_catalog, public",
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    "ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY",
]
# check id -> a string its evidence must show while the setup is weak
CAUGHT = {
    "pg.hba_trust_host": "weak_nopw", "pg.hba_open_range": "0.0.0.0", "pg.hba_remote_superuser": "0.0.0.0",
    "pg.hba_remote_without_tls": "0.0.0.0", "pg.listen_addresses": "*", "pg.login_without_password": "weak_nopw",
    "pg.superusers": "weak_admin", "pg.role_createrole": "weak_creator", "pg.md5_passwords": "weak_md5",
    "pg.risky_extensions": "dblink", "pg.security_definer_search_path": "weak_definer",
    "pg.public_schema_create": "true", "pg.rls_on_pii_tables": "public.customers",
}


def _admin(pg: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", password=CANARY, dbname="postgres",
                           autocommit=True)


def _execute(pg: Any, statements: list[str]) -> None:
    with _admin(pg) as conn:
        for sql in statements:
            conn.execute(sql)
        conn.execute("SELECT pg_reload_conf()")


def _pg(pg: Any, user: str = "postgres", password_env: str = "DBFLEET_TEST_CANARY", **kw: Any) -> Any:
    return db(f"weak_pg_{user}", kind="postgresql", host="127.0.0.1", port=pg.port, dbname="postgres", user=user,
              password_env=password_env, **kw)


@pytest.fixture(scope="module")
def weak_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An embedded PostgreSQL 18 listening on '*' with a trust line, open ranges and weak roles."""
    from engines.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path_factory.mktemp("weakpg"), CANARY, listen="*").start()
    hba = pg.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(HBA_WEAK + original)
    _execute(pg, WEAKEN)
    pg.hba_original = original
    yield pg
    pg.stop()


def _status(report: Any) -> dict[str, str]:
    return {f.check_id: f.status for f in report.findings}


def _statements(log: Path, since: int) -> list[str]:
    text = log.read_text(errors="replace")[since:]
    return re.findall(r"app=dbfleet LOG:  statement: (.*)", text)


def test_weak_cluster_is_caught_then_fixed(weak_pg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    log = weak_pg.directory / "postgres.log"
    offset = len(log.read_text(errors="replace"))
    weak = run_audit(_pg(weak_pg), {"expected_superusers": ["postgres"]})
    assert weak.error is None and len(weak.findings) >= 40
    for check_id, seen in CAUGHT.items():
        finding = weak.finding(check_id)
        assert finding.status == FAIL, (check_id, finding)
        assert seen in str(finding.evidence).replace("True", "true"), (check_id, finding.evidence)
        assert finding.remediation
    assert weak.finding("pg.fsync").status == FAIL  # the embedded test cluster really runs fsync=off
    assert CANARY not in str(weak.to_dict()) and WEAK_PW not in str(weak.to_dict())

    # the audit only read: every statement its session sent is a SELECT or the read-only switch
    sent = _statements(log, offset)
    assert len(sent) >= 10
    assert all(s.startswith(("SELECT ", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")) for s in sent), sent

    (weak_pg.data / "pg_hba.conf").write_text(weak_pg.hba_original)
    _execute(weak_pg, FIX)
    weak_pg.stop()
    weak_pg.listen = "127.0.0.1"
    weak_pg.start()
    fixed = run_audit(_pg(weak_pg), {"expected_superusers": ["postgres"]})
    statuses = _status(fixed)
    assert {c: statuses[c] for c in CAUGHT} == dict.fromkeys(CAUGHT, PASS)
    diff = diff_findings(weak.to_dict()["findings"], fixed.findings)
    assert set(CAUGHT) <= set(diff["fixed"]) and not diff["new"]
    assert "pg.fsync" in diff["unchanged"]


def test_role_without_privileges_gets_unknown_not_a_crash(weak_pg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAK_READER_PW", WEAK_PW)
    report = run_audit(_pg(weak_pg, "weak_reader", "WEAK_READER_PW"))
    assert report.error is None and report.user == "weak_reader"
    statuses = _status(report)
    for check_id in ("pg.hba_trust_host", "pg.hba_open_range", "pg.login_without_password", "pg.md5_passwords"):
        assert statuses[check_id] == UNKNOWN, check_id
        assert "permission denied" in report.finding(check_id).reason
    # what an unprivileged role can see is still judged
    assert statuses["pg.ssl"] in (PASS, FAIL) and statuses["pg.superusers"] in (PASS, FAIL)
    assert WEAK_PW not in str(report.to_dict())


def test_audit_session_refuses_writes(weak_pg: Any) -> None:
    from engines.connectors import open_connector
    from engines.security.postgres import open_probe

    with open_connector(_pg(weak_pg)) as conn:
        open_probe(conn, {})
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.conn.execute("CREATE TABLE audit_must_not_write (x int)")


def test_system_postgresql_15() -> None:
    require("postgresql15")
    report = run_audit(db("pg15", kind="postgresql", host="127.0.0.1", dbname="test", user="postgres"))
    assert report.error is None and report.server_version.startswith("15.")
    assert not [f for f in report.findings if f.status == UNKNOWN], "a superuser can evaluate every check"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test") as conn:
        trust = conn.execute("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'"
                             " AND type LIKE 'host%%'").fetchone()[0]
        ssl = conn.execute("SHOW ssl").fetchone()[0]
    assert report.finding("pg.hba_trust_host").status == (FAIL if trust else PASS)
    assert report.finding("pg.ssl").status == (PASS if ssl == "on" else FAIL)


def test_unreachable_database_is_an_error_in_the_report() -> None:
    from engines.embedded.redis import free_port

    report = run_audit(db("gone", kind="postgresql", host="127.0.0.1", port=free_port(), user="x",
                          connect_timeout=2))
    assert report.findings == [] and "gone" in report.error and "cannot connect" in report.error
