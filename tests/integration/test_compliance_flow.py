"""The documented API and erasure on a real PostgreSQL 15: a scan through initialize_compliance_system
(standards, recommendations, trail), inline configs refused, erasure of a multi-table subject (plan,
one transaction, record without data, backups still holding the subject with their expiry)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from engines.embedded.music import generate_music_database
from engines.errors import ConfigError
from tests.servers import require

pytestmark = pytest.mark.integration
DB = "h8_cmp_flow"
KEY, TRAIL, REPO = "h8-flow-anonymisation-key-0123456789", "h8-flow-trail-key-0123456789", "h8-flow-repo-key-0123"


@pytest.fixture(scope="module")
def music_db() -> Iterator[str]:
    require("postgresql15")
    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        generate_music_database(conn, events=1500, seed=8)
    yield DB
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin.close()


@pytest.fixture
def fleet(music_db: str, fresh_runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in (("H8_CMP_KEY", KEY), ("H8_CMP_TRAIL", TRAIL), ("H8_CMP_REPO", REPO)):
        monkeypatch.setenv(name, value)
    fresh_runtime.write_text(f"""
fleet: {{history_url: "sqlite:///{tmp_path / 'history.db'}"}}
storage: {{repo: {{type: filesystem, path: "{tmp_path / 'repo'}", key_env: H8_CMP_REPO}}}}
databases:
  music: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {music_db}}}
database_scripts:
  backup: {{retention_days: 30}}
  compliance:
    key_env: H8_CMP_KEY
    trail_key_env: H8_CMP_TRAIL
    sample_size: 40
    sample_seed: 2
    erasure_policies: {{users: anonymize}}
    erasure_rules: {{users: {{email: email, full_name: name, phone: phone, street_address: redact, iban: iban,
                              birth_date: generalize}}}}
""")
    return tmp_path


def test_scan_through_the_api_reports_standards_recommendations_and_records_the_trail(fleet: Path) -> None:
    from engines.compliance.report import to_html
    from workers.compliance import initialize_compliance_system

    engine = asyncio.run(initialize_compliance_system(local=True))
    report = asyncio.run(engine.scan_database_compliance({"id": "music", "type": "postgresql"}))
    std = report["standards_compliance"]
    assert set(std) == {"gdpr", "pci_dss", "hipaa", "sox"}
    assert std["gdpr"]["status"] in ("non_compliant", "needs_review")
    controls = {c["control_id"]: c for c in std["gdpr"]["controls"]}
    assert controls["gdpr.art5.retention"]["status"] == "pass"  # retention_days: 30
    assert controls["gdpr.art32.backups"]["status"] == "needs_review"  # no backup recorded yet
    assert std["pci_dss"]["status"] == "compliant" and not std["pci_dss"]["applicable"]  # card tokens, no PAN
    assert report["recommendations"] and report["trail"]["recorded"]
    assert "users.iban" in report["discovery"]["categories"]["iban"]
    html = to_html(report)
    assert html.startswith("<!doctype html>") and "GDPR" in html and "<script" not in html


def test_inline_database_configs_are_refused(fleet: Path) -> None:
    from workers.compliance import initialize_compliance_system

    engine = asyncio.run(initialize_compliance_system(local=True))
    with pytest.raises(ConfigError, match="inline database configs"):
        asyncio.run(engine.anonymize_data(database_config={"id": "music", "host": "10.9.9.9"}, table_name="users",
                                          anonymization_rules={"email": "email"}))
    with pytest.raises(ConfigError, match="register"):
        asyncio.run(engine.scan_database_compliance({"type": "postgresql", "host": "127.0.0.1"}))


def _counts(user_id: int) -> dict[str, int]:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}") as conn:
        return {
            "play_events": conn.execute("SELECT count(*) FROM play_events WHERE user_id = %s", (user_id,)).fetchone()[0],
            "playlists": conn.execute("SELECT count(*) FROM playlists WHERE user_id = %s", (user_id,)).fetchone()[0],
            "playlist_tracks": conn.execute("SELECT count(*) FROM playlist_tracks t JOIN playlists p ON p.id ="
                                            " t.playlist_id WHERE p.user_id = %s", (user_id,)).fetchone()[0]}


def test_erasure_follows_foreign_keys_masks_the_subject_and_lists_backups(fleet: Path) -> None:
    from engines.backup.engine import open_repository
    from workers import runtime
    from workers.compliance import run_local

    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}") as conn:
        user_id, email = conn.execute("SELECT p.user_id, u.email FROM playlists p JOIN users u ON u.id = p.user_id"
                                      " JOIN play_events e ON e.user_id = u.id LIMIT 1").fetchone()
        others = conn.execute("SELECT count(*) FROM play_events WHERE user_id <> %s", (user_id,)).fetchone()[0]
    before = _counts(user_id)
    repo = open_repository(runtime.config(), create=True)  # manifest-only entries: what the repository lists
    taken = datetime.now(timezone.utc) - timedelta(days=3)
    backup_id = taken.strftime("%Y%m%dT%H%M%S") + "000Z-h8abcd"
    repo.save_manifest({"database_id": "music", "backup_id": backup_id})
    plan = run_local("compliance_erase", "music", {"subject": f"users.id={user_id}", "dry_run": True})
    steps = {s["table"]: s for s in plan["plan"]}
    assert {t: steps[t]["rows"] for t in before} == before and steps["users"]["action"] == "anonymize"
    assert _counts(user_id) == before  # a dry run changes nothing
    result = run_local("compliance_erase", "music", {"subject": f"users.id={user_id}"})
    assert _counts(user_id) == {t: 0 for t in before}
    assert result["affected"]["users"] == 1 and result["affected"]["play_events"] == before["play_events"]
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}") as conn:
        new_email, = conn.execute("SELECT email FROM users WHERE id = %s", (user_id,)).fetchone()
        assert conn.execute("SELECT count(*) FROM play_events WHERE user_id <> %s", (user_id,)).fetchone()[0] == others
    assert new_email != email and new_email.endswith((".com", ".org", ".net"))
    record = json.dumps(result)
    assert email not in record and f"={user_id}" not in record and result["subject_digest"]
    assert result["backups"] == [{"backup_id": backup_id, "taken_at": taken.replace(microsecond=0).isoformat(),
                                  "expires": (taken + timedelta(days=30)).date().isoformat()}]
    assert result["trail"]["recorded"]
