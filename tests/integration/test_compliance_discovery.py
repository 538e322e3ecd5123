"""PII discovery against real servers: the music database plus decoys on PostgreSQL 15, MariaDB and SQLite;
pins and suppressions from comments; a role without SELECT; the diff between two scans; hostile names."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from faker import Faker

from engines.compliance.discovery import run_discovery
from engines.compliance.model import PII, UNKNOWN
from engines.compliance.scan import scan_database
from engines.config import Config
from engines.embedded.music import generate_music_database
from engines.history import SUCCEEDED, HistoryStore
from tests.conftest import db
from tests.servers import require

pytestmark = pytest.mark.integration
DB = "h8_cmp_disc"
SCANNER = "h8_cmp_scanner"
DECOYS = """
CREATE TABLE decoys (id serial PRIMARY KEY, email text, card_number text, notes text, remarks text,
                     contact_iban text, legacy_code text);
COMMENT ON COLUMN decoys.contact_iban IS 'test data only; dbfleet:pii=none';
COMMENT ON COLUMN decoys.legacy_code IS 'pii=national_id (pinned by the DPO)';
CREATE TABLE secret_patients (id serial PRIMARY KEY, diagnosis text, patient_email text);
"""
PARTITIONED = """
CREATE TABLE logins (id int, login_email text, at date) PARTITION BY RANGE (at);
CREATE TABLE logins_2025 PARTITION OF logins FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE logins_2026 PARTITION OF logins FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO logins SELECT g, 'user' || g || '@corp.example', date '2025-01-01' + g % 700 FROM generate_series(1, 3000) g;
"""
HOSTILE = 'CREATE TABLE "we""ird; DROP TABLE users" (id serial PRIMARY KEY, "e-mail ""x""" text)'


def decoy_rows(fake: Faker, n: int) -> list[tuple[Any, ...]]:
    """Columns whose names lie: product codes in `email`, Luhn-failing numbers in `card_number`."""
    rows = []
    for i in range(n):
        digits = fake.credit_card_number()
        bad = digits[:-1] + str((int(digits[-1]) + 1) % 10)  # one digit off: fails Luhn
        text = (f"Customer called about order {i}, reach her at {fake.email()} tomorrow" if i % 2 else
                f"Order {i} shipped in {fake.color_name()} box, no issues reported by the courier")
        rows.append((f"SKU-{fake.bothify('??###').upper()}", bad, text, fake.sentence(nb_words=8),
                     fake.iban(), fake.bothify("LC-####")))
    return rows


@pytest.fixture(scope="module")
def pg_music() -> Iterator[Any]:
    require("postgresql15")
    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DB}")
    admin.execute(f"DROP ROLE IF EXISTS {SCANNER}")
    admin.execute(f"CREATE ROLE {SCANNER} LOGIN")
    fake = Faker("en_US")
    fake.seed_instance(11)
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        generate_music_database(conn, events=2000, seed=5)
        conn.execute(DECOYS)
        conn.execute(HOSTILE)
        conn.execute(PARTITIONED)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO decoys (email, card_number, notes, remarks, contact_iban, legacy_code)"
                            " VALUES (%s, %s, %s, %s, %s, %s)", decoy_rows(fake, 120))
            cur.executemany("INSERT INTO secret_patients (diagnosis, patient_email) VALUES (%s, %s)",
                            [("E11.9", fake.email()) for _ in range(20)])
            cur.executemany('INSERT INTO "we""ird; DROP TABLE users" ("e-mail ""x""") VALUES (%s)',
                            [(fake.email(),) for _ in range(30)])
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {SCANNER}")
        conn.execute(f"REVOKE SELECT ON secret_patients FROM {SCANNER}")  # noqa: S608 - a constant
        conn.execute("ANALYZE")
    yield db("music", kind="postgresql", host="127.0.0.1", user="postgres", dbname=DB)
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin.execute(f"DROP ROLE IF EXISTS {SCANNER}")
    admin.close()


def _by_key(report: Any) -> dict[str, Any]:
    return {f.key: f for f in report.findings}


def test_the_music_users_pii_is_found_with_counts_and_no_value_leaks(pg_music: Any) -> None:
    report = run_discovery(pg_music, {"sample_size": 50, "sample_seed": 1})
    assert report.error is None
    found = {k: f.category for k, f in _by_key(report).items() if f.status == PII}
    for key, cat in {"users.email": "email", "users.full_name": "person_name", "users.phone": "phone",
                     "users.street_address": "address", "users.birth_date": "dob", "users.iban": "iban"}.items():
        assert found.get(key) == cat, (key, found.get(key))
    iban = _by_key(report)["users.iban"]
    assert iban.evidence["sampled"] == 50 and iban.evidence["valid"] >= 45
    assert iban.evidence["text"] == f"{iban.evidence['valid']}/50 sampled values valid IBANs"
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}") as conn:
        values = [r[0] for r in conn.execute("SELECT email FROM users UNION ALL SELECT iban FROM users")]
    text = json.dumps(report.to_dict())
    assert not [v for v in values if v in text]


def test_decoy_columns_are_not_taken_for_what_their_names_say(pg_music: Any) -> None:
    found = _by_key(run_discovery(pg_music, {"sample_size": 60, "sample_seed": 1}))
    assert "decoys.email" not in found  # SKU codes in a column called email
    assert "decoys.card_number" not in found  # numbers one digit off: Luhn fails
    assert "decoys.remarks" not in found  # free text without PII
    assert found["decoys.notes"].category == "free_text_with_pii"
    assert "artists.name" not in found and "playlists.name" not in found
    assert found["logins.login_email"].category == "email"  # the partitioned table, sampled once
    assert not [k for k in found if k.startswith("logins_20")]  # its partitions are not listed again


def test_comments_pin_and_suppress_classifications(pg_music: Any) -> None:
    report = run_discovery(pg_music, {"sample_size": 30, "sample_seed": 1})
    found = _by_key(report)
    assert found["decoys.legacy_code"].category == "national_id"
    assert found["decoys.legacy_code"].source == "comment" and found["decoys.legacy_code"].confidence == 1.0
    assert "decoys.contact_iban" not in found  # real IBANs, suppressed by its comment
    assert [f.key for f in report.suppressed] == ["decoys.contact_iban"]


def test_a_role_without_select_gets_unknown_findings_with_the_reason(pg_music: Any) -> None:
    scanner = db("music_ro", kind="postgresql", host="127.0.0.1", user=SCANNER, dbname=DB)
    report = run_discovery(scanner, {"sample_size": 20, "sample_seed": 1})
    assert report.error is None
    unknown = {f.key: f for f in report.findings if f.status == UNKNOWN}
    assert set(unknown) == {"secret_patients.diagnosis", "secret_patients.patient_email"}
    assert unknown["secret_patients.diagnosis"].category == "health"
    assert "no SELECT privilege" in (unknown["secret_patients.patient_email"].reason or "")
    assert _by_key(report)["users.email"].status == PII  # the rest is still scanned


def test_hostile_table_and_column_names_are_scanned_safely(pg_music: Any) -> None:
    found = _by_key(run_discovery(pg_music, {"sample_size": 20, "sample_seed": 1}))
    assert found['we"ird; DROP TABLE users.e-mail "x"'].category == "email"
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] > 0


def test_a_second_scan_names_the_new_pii_column(pg_music: Any, tmp_path: Path) -> None:
    history = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    cfg = Config()
    settings = {"sample_size": 30, "security_audit": False, "sample_seed": 1}
    first = scan_database(pg_music, cfg, history, settings)
    history.start("scan-1", "compliance_scan", "music")
    history.finish("scan-1", SUCCEEDED, summary=first)
    assert first["discovery"]["diff"]["new"] == []  # nothing to compare with yet
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        conn.execute("ALTER TABLE playlists ADD COLUMN owner_iban text")
        conn.execute("UPDATE playlists SET owner_iban = 'DE89370400440532013000'")
    try:
        second = scan_database(pg_music, cfg, history, settings)
    finally:
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
            conn.execute("ALTER TABLE playlists DROP COLUMN owner_iban")
    diff = second["discovery"]["diff"]
    assert diff["new"] == ["playlists.owner_iban"]
    assert diff["messages"][0].startswith("new PII column playlists.owner_iban (iban) since the last scan")


@pytest.fixture(scope="module")
def mariadb_people() -> Iterator[Any]:
    import pymysql

    require("mariadb")
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    fake = Faker("de_DE")
    fake.seed_instance(3)
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS h8_cmp_my")
        cur.execute("CREATE DATABASE h8_cmp_my CHARACTER SET utf8mb4")
        cur.execute("USE h8_cmp_my")
        cur.execute("CREATE TABLE kunden (id INT AUTO_INCREMENT PRIMARY KEY, vorname VARCHAR(60), nachname VARCHAR(60),"
                    " telefon VARCHAR(40), courriel VARCHAR(120) COMMENT 'contact', kontonummer VARCHAR(40),"
                    " client_ip VARCHAR(45), geburtsdatum DATE, bemerkung TEXT,"
                    " alt_iban VARCHAR(40) COMMENT 'test fixtures; pii=none', code VARCHAR(20) COMMENT 'pii=national_id')")
        rows = [(fake.first_name(), fake.last_name(), fake.phone_number(), fake.email(), fake.iban(), fake.ipv4(),
                 fake.date_of_birth(), fake.sentence(), fake.iban(), "X") for _ in range(600)]
        cur.executemany("INSERT INTO kunden (vorname, nachname, telefon, courriel, kontonummer, client_ip,"
                        " geburtsdatum, bemerkung, alt_iban, code) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        rows)
        cur.execute("CREATE TABLE tresor (id INT PRIMARY KEY, iban VARCHAR(40))")
        cur.execute("CREATE USER IF NOT EXISTS 'h8_cmp_my'@'%' IDENTIFIED BY ''")
        cur.execute("GRANT SELECT ON h8_cmp_my.kunden TO 'h8_cmp_my'@'%'")
        cur.execute("GRANT INSERT ON h8_cmp_my.tresor TO 'h8_cmp_my'@'%'")
    yield db("kunden", kind="mariadb", host="127.0.0.1", user="root", dbname="h8_cmp_my")
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS h8_cmp_my")
        cur.execute("DROP USER IF EXISTS 'h8_cmp_my'@'%'")
    conn.close()


def test_mariadb_german_and_french_column_names_are_classified(mariadb_people: Any) -> None:
    report = run_discovery(mariadb_people, {"sample_size": 60, "sample_seed": 1})
    assert report.error is None
    found = {k: f.category for k, f in _by_key(report).items() if f.status == PII}
    assert found == {"kunden.vorname": "person_name", "kunden.nachname": "person_name", "kunden.telefon": "phone",
                     "kunden.courriel": "email", "kunden.kontonummer": "iban", "kunden.client_ip": "ip",
                     "kunden.geburtsdatum": "dob", "kunden.code": "national_id",  # pinned by its comment
                     "tresor.iban": "iban"}  # tresor: empty, name only
    assert [f.key for f in report.suppressed] == ["kunden.alt_iban"]
    assert _by_key(report)["kunden.kontonummer"].evidence["sampled"] == 60  # key-range samples, full count


def test_mariadb_table_without_select_is_unknown(mariadb_people: Any) -> None:
    limited = db("kunden_ro", kind="mariadb", host="127.0.0.1", user="h8_cmp_my", dbname="h8_cmp_my")
    report = run_discovery(limited, {"sample_size": 20, "sample_seed": 1})
    unknown = [f for f in report.findings if f.status == UNKNOWN]
    assert [f.key for f in unknown] == ["tresor.iban"]
    assert "permission denied" in (unknown[0].reason or "") and "SELECT" in (unknown[0].reason or "")


def test_sqlite_random_rowid_ranges_find_pii(tmp_path: Path) -> None:
    path = tmp_path / "h8_people.db"
    fake = Faker("fr_FR")
    fake.seed_instance(9)
    random.seed(9)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE personnes (id INTEGER PRIMARY KEY, prenom TEXT, nom TEXT, adresse TEXT,"
                     " carte TEXT, note TEXT)")
        conn.executemany("INSERT INTO personnes (prenom, nom, adresse, carte, note) VALUES (?, ?, ?, ?, ?)",
                         [(fake.first_name(), fake.last_name(), fake.street_address(), fake.credit_card_number(),
                           str(random.randint(0, 20))) for _ in range(800)])
    report = run_discovery(db("people", kind="sqlite", path=str(path)), {"sample_size": 50, "sample_seed": 1})
    found = {k: f.category for k, f in _by_key(report).items() if f.status == PII}
    assert found == {"personnes.prenom": "person_name", "personnes.nom": "person_name",
                     "personnes.adresse": "address", "personnes.carte": "card_number"}
