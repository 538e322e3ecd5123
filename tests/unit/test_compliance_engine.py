"""Compliance engine pieces without servers: name signals, validators, masking rules, the prod guard,
registry-id-only database references, standards and their recommendations."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from stdnum import iban, luhn

from engines.compliance.anonymize.inplace import prod_guard
from engines.compliance.anonymize.rules import Masker, parse_rule
from engines.compliance.api import database_id
from engines.compliance.erasure import expiry, parse_subject
from engines.compliance.model import ColumnFinding, ComplianceRefused, DiscoveryReport
from engines.compliance.signals import name_signals, pin_from_text
from engines.compliance.standards import Evidence, evaluate, recommendations, summarize
from engines.compliance.validators import is_card, is_email, is_iban, is_person_name, is_phone
from engines.config import RetentionPolicy, parse_config
from engines.errors import ConfigError
from tests.conftest import db

KEY = b"h8-unit-key-0123456789abcdef"


@pytest.mark.parametrize("name,category", [
    ("email", "email"), ("Courriel", "email"), ("prénom", "person_name"), ("Nachname", "person_name"),
    ("TelNr", "phone"), ("date_of_birth", "dob"), ("geburtsdatum", "dob"), ("client_ip", "ip"),
    ("credit_card_number", "card_number"), ("iban", "iban"), ("diagnosis_code", "health"), ("ssn", "national_id"),
    ("street_address", "address"), ("last_name", "person_name")])
def test_column_names_in_several_languages_signal_their_category(name: str, category: str) -> None:
    assert name_signals(name)[0].category == category


@pytest.mark.parametrize("name", ["gossip_score", "companion_id", "created_at", "shipping", "pandas"])
def test_words_inside_other_words_do_not_signal(name: str) -> None:
    assert not [s for s in name_signals(name) if s.weight >= 0.5]


def test_validators_accept_real_values_and_reject_near_misses() -> None:
    assert is_email("jürgen.müller@web.de") and not is_email("SKU-AB123") and not is_email("a@b")
    assert is_iban("DE89 3704 0044 0532 0130 00") and not is_iban("DE89 3704 0044 0532 0130 01")
    assert is_card("4111 1111 1111 1111") and not is_card("4111 1111 1111 1112") and not is_card("9111111111111111" + "")
    assert is_phone("+44 20 7946 0958") and is_phone("(212) 555-0147") and not is_phone("2024-01-05")
    assert is_person_name("Maria Schmidt") and not is_person_name("Multi-layered neural-net")


def test_comments_pin_or_suppress_and_bad_pins_are_reported() -> None:
    assert pin_from_text("owner data; dbfleet:pii=iban") == "iban"
    assert pin_from_text("pii=none") == "none" and pin_from_text("just a comment") is None
    with pytest.raises(ValueError, match="unknown category"):
        pin_from_text("pii=shoe_size")


def test_masking_is_deterministic_per_key_and_keeps_formats() -> None:
    a, b, other = Masker(KEY), Masker(KEY), Masker(b"another-key-0123456789abcdef")
    for rule, value in [("email", "x@y.com"), ("name", "Ann Lee"), ("phone", "+1 202-555-0147"), ("hash", "v"),
                        ("card", "4111-1111-1111-1111"), ("iban", "DE89370400440532013000"), ("default", "AB-123x")]:
        r = parse_rule(rule)
        assert a.apply(r, value) == b.apply(r, value) != other.apply(r, value)
        assert a.apply(r, value) != value
    card = a.apply(parse_rule("card"), "4111-1111-1111-1111")
    assert card[:7] == "4111-11" and luhn.is_valid(card.replace("-", "")) and len(card) == 19
    assert iban.validate(a.apply(parse_rule("iban"), "DE89370400440532013000"), check_country=False)
    assert a.apply(parse_rule("default"), "AB-123x")[2] == "-"
    shifted = a.apply(parse_rule("date_shift:10"), date(1990, 5, 17))
    assert 0 < abs((shifted - date(1990, 5, 17)).days) <= 10
    assert a.apply(parse_rule("generalize"), date(1990, 5, 17)) == date(1990, 1, 1)


def test_rules_with_code_like_arguments_are_refused() -> None:
    for bad in ("faker:__class__", "faker:seed_instance", "eval", "date_shift:1;drop"):
        with pytest.raises(ConfigError):
            parse_rule(bad)


def test_prod_databases_need_i_know_and_a_fresh_backup() -> None:
    prod = db("p", kind="postgresql", host="h", tags=["prod"])
    fresh = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y%m%dT%H%M%S") + "000Z-abc123"
    old = "20200101T000000000Z-abc123"
    with pytest.raises(ComplianceRefused, match="--i-know"):
        prod_guard(prod, i_know=False, backup_id=fresh, backup_ids=lambda: [fresh])
    with pytest.raises(ComplianceRefused, match="not in the backup repository"):
        prod_guard(prod, i_know=True, backup_id=fresh, backup_ids=lambda: [])
    with pytest.raises(ComplianceRefused, match="h old"):
        prod_guard(prod, i_know=True, backup_id=old, backup_ids=lambda: [old])
    prod_guard(prod, i_know=True, backup_id=fresh, backup_ids=lambda: [fresh])
    prod_guard(db("s", kind="postgresql", host="h"), i_know=False, backup_id=None, backup_ids=lambda: [])


def test_only_registry_ids_name_databases() -> None:
    cfg = parse_config("databases: {users_db: {kind: postgresql, host: 127.0.0.1, dbname: users}}")
    assert database_id("users_db", cfg) == database_id({"id": "users_db", "type": "postgresql"}, cfg) == "users_db"
    with pytest.raises(ConfigError, match="inline database configs"):
        database_id({"id": "users_db", "host": "10.1.2.3"}, cfg)
    with pytest.raises(ConfigError, match="register"):
        database_id({"type": "postgresql", "host": "10.1.2.3"}, cfg)


def test_subject_and_retention_expiry() -> None:
    s = parse_subject("users.id=42")
    assert (s.table, s.column, s.value) == ("users", "id", "42")
    with pytest.raises(ConfigError):
        parse_subject("users=42")
    now = datetime(2026, 11, 29, tzinfo=timezone.utc)
    ids = ["20261120T000000000Z-aaaaaa"]
    assert expiry(ids, None, 30, now) == {ids[0]: "2026-12-21"}
    assert expiry(ids, RetentionPolicy(daily=3), None, now)[ids[0]] == "2026-12-02"
    assert expiry(ids, None, None, now) == {ids[0]: None}


def _report(*findings: ColumnFinding) -> DiscoveryReport:
    return DiscoveryReport("d", "postgresql", "now", 1.0, 1, 3, list(findings))


def test_clear_card_numbers_make_pci_non_compliant_and_lead_the_recommendations() -> None:
    card = ColumnFinding("pay", "pan", "card_number", 0.97, evidence={"sampled": 50, "valid": 49})
    audit = {"findings": [{"check_id": "pg.ssl", "status": "pass"}, {"check_id": "pg.log_connections", "status": "fail"}]}
    controls = evaluate(Evidence(_report(card), audit, {"encryption": True, "backups": 3, "retention": {"d": 1}}))
    std = summarize(controls)
    assert std["pci_dss"]["status"] == "non_compliant" and "pci.3.4" in std["pci_dss"]["failing"]
    assert std["hipaa"]["status"] == "compliant" and not std["hipaa"]["applicable"]
    recs = recommendations(controls)
    assert recs[0]["risk"] == "critical" and "PCI-DSS 3.4" in recs[0]["controls"][0]
    assert [r["risk"] for r in recs] == sorted((r["risk"] for r in recs), key=["critical", "high", "medium",
                                                                                "low"].index)


def test_pii_tables_for_the_security_audit_come_from_the_last_scan(tmp_path: Any) -> None:
    from engines.compliance.scan import pii_tables
    from engines.history import SUCCEEDED, HistoryStore

    history = HistoryStore(f"sqlite:///{tmp_path / 'h8_hist.db'}")
    assert pii_tables(history, "music") == []
    report = _report(ColumnFinding("users", "email", "email", 0.98), ColumnFinding("sales.orders", "note", "phone", 0.4))
    history.start("s1", "compliance_scan", "music")
    history.finish("s1", SUCCEEDED, summary={"discovery": report.to_dict()})
    assert pii_tables(history, "music") == ["users"]
