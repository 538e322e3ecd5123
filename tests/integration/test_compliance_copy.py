"""Masked copy mode on a real PostgreSQL 15: the music database copied into a new database through the
migration engine with users' personal columns masked in flight. No original value of a masked column is
in the copy (joined against the originals), foreign keys and unique constraints hold, the fakes are those
of in-place masking under the same key, every other column is identical, validation compares the masked
checksums; bad rules and targets are refused before anything is written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from engines.embedded.music import generate_music_database
from engines.errors import ConfigError
from tests.servers import require

pytestmark = pytest.mark.integration
SRC, DST, TWIN = "h17_mcopy_src", "h17_mcopy_dst", "h17_mcopy_twin"
KEY = "h17-copy-anonymisation-key-0123456789"
RULES = {"email": "email", "full_name": "name", "phone": "phone", "street_address": "default", "iban": "iban",
         "birth_date": "date_shift:90"}
UNMASKED = ("id", "city", "country_code", "card_token", "plan", "created_at")


def _dsn(name: str) -> str:
    return f"host=127.0.0.1 user=postgres dbname={name}"


@pytest.fixture(scope="module")
def music() -> Iterator[None]:
    require("postgresql15")
    admin = psycopg.connect(_dsn("postgres"), autocommit=True)
    for name in (SRC, DST, TWIN):
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {SRC}")
    with psycopg.connect(_dsn(SRC), autocommit=True) as conn:
        generate_music_database(conn, events=1200, seed=17)
    admin.execute(f"CREATE DATABASE {TWIN} TEMPLATE {SRC}")  # masked in place, to compare the fakes
    yield
    for name in (SRC, DST, TWIN):
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def fleet(music: None, fresh_runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("H17_COPY_KEY", KEY)
    with psycopg.connect(_dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DST} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DST}")
    fresh_runtime.write_text(f"""
fleet: {{history_url: "sqlite:///{tmp_path / 'history.db'}"}}
databases:
  src: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {SRC}}}
  staging: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {DST}}}
  twin: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {TWIN}}}
  prodcopy: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {DST}, tags: [prod]}}
  lite: {{kind: sqlite, path: "{tmp_path / 'lite.db'}"}}
database_scripts:
  compliance: {{key_env: H17_COPY_KEY, batch_size: 100}}
""")
    return tmp_path


def _users(name: str) -> dict[int, tuple[Any, ...]]:
    cols = ", ".join((*UNMASKED, *RULES))
    with psycopg.connect(_dsn(name)) as conn:
        return {r[0]: r for r in conn.execute(f"SELECT {cols} FROM users")}  # noqa: S608 - test constants


def test_masked_copy_holds_no_original_value_keeps_constraints_and_matches_in_place_fakes(fleet: Path) -> None:
    from workers.cli import cli
    from workers.compliance import run_local

    rules = [f"--rule=users.{c}={r}" for c, r in RULES.items()]
    out = CliRunner().invoke(cli, ["compliance", "anonymize", "src", "--copy-to", "staging", *rules, "--local"])
    assert out.exit_code == 0, out.output
    assert "masked copy of src in staging" in out.output and "validation" in out.output

    original, copy = _users(SRC), _users(DST)
    assert set(copy) == set(original) and len(copy) > 50
    # 1. no original value of a masked column anywhere in the copy: the originals joined against the copy
    with psycopg.connect(_dsn(DST)) as conn:
        conn.execute("CREATE TEMP TABLE orig (id bigint, email text, full_name text, phone text, street_address text,"
                     " iban text, birth_date date)")
        with conn.cursor().copy("COPY orig FROM STDIN") as cp:
            for row in original.values():
                cp.write_row((row[0], *row[len(UNMASKED):]))
        for col in RULES:  # identifying values: in no row at all; dates (shared by many people): not in their row
            same_row = " AND u.id = o.id" if col == "birth_date" else ""
            stmt = f"SELECT count(*) FROM users u JOIN orig o ON u.{col} = o.{col}{same_row}"  # noqa: S608 - constants
            hits = conn.execute(stmt).fetchone()[0]
            assert hits == 0, f"{hits} original values of users.{col} survive in the copy"
        # 2. foreign keys and unique constraints: rebuilt, validated, and holding
        cons = dict(conn.execute("SELECT conname, convalidated FROM pg_constraint WHERE contype IN ('f', 'u')"
                                 " AND connamespace = 'public'::regnamespace").fetchall())
        assert "users_email_key" in cons and "playlists_user_id_fkey" in cons and all(cons.values())
        assert conn.execute("SELECT count(*) FROM playlists p LEFT JOIN users u ON u.id = p.user_id"
                            " WHERE u.id IS NULL").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) = count(DISTINCT email) FROM users").fetchone()[0]
    # 3. unmasked columns identical, masked ones all changed (NULL stays NULL)
    for uid, row in original.items():
        assert copy[uid][:len(UNMASKED)] == row[:len(UNMASKED)]
        for i, _ in enumerate(RULES, len(UNMASKED)):
            assert (copy[uid][i] is None) == (row[i] is None)
            assert row[i] is None or copy[uid][i] != row[i]
    with psycopg.connect(_dsn(SRC)) as s, psycopg.connect(_dsn(DST)) as d:
        digest = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM play_events t"
        assert s.execute(digest).fetchone() == d.execute(digest).fetchone()  # other tables copied as they are
    # 4. the same fakes as in-place masking of the same values under the same key
    run_local("compliance_anonymize", "twin", {"table": "users", "rules": RULES})
    assert _users(TWIN) == copy
    # 5. the run is in history with its validation; the source was only read
    from workers import runtime

    run = runtime.history().query("compliance_anonymize", "src")[0]
    assert run["status"] == "succeeded" and run["summary"]["validation"]["ok"]
    assert "masked rows" in run["summary"]["validation"]["masked_columns"]
    assert _users(SRC) == original


def test_bad_copy_requests_are_refused_before_anything_is_written(fleet: Path) -> None:
    from engines.compliance.model import ComplianceRefused
    from workers.compliance import initialize_compliance_system

    engine = asyncio.run(initialize_compliance_system(local=True))
    cases: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
        ("staging", {"users": {"no_such": "email"}}, ConfigError, "rules.users.no_such"),
        ("staging", {"users": {"id": "hash"}}, ConfigError, "primary-key"),
        ("staging", {"users": {"email": "redact"}}, ConfigError, "unique constraint"),
        ("staging", {"nope": {"email": "email"}}, ConfigError, "no table 'nope'"),
        ("staging", {"users": {"email": "bogus"}}, ConfigError, "unknown anonymisation rule"),
        ("src", {"users": {"email": "email"}}, ConfigError, "another database"),
        ("lite", {"users": {"email": "email"}}, ConfigError, "PostgreSQL"),
        ("prodcopy", {"users": {"email": "email"}}, ComplianceRefused, "tagged prod"),
        ("unknown_db", {"users": {"email": "email"}}, Exception, "unknown_db"),
    ]
    for target, rules, exc, text in cases:
        with pytest.raises(exc, match=text):
            asyncio.run(engine.anonymized_copy("src", target, rules))
    with psycopg.connect(_dsn(DST)) as conn:  # nothing was created in the target
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
