"""Presidio as an optional extra validator of free-text columns: offline (pattern recognizers, no NLP
engine, no model download, tldextract on its bundled snapshot), behind the ``presidio`` extra. Without it
installed, asking for it is a clear error naming the pip line; with it, texts our own validators miss
(IP addresses in log notes) are counted, with the entity types as evidence and never the texts."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from engines.compliance import presidio
from engines.compliance.base import ColumnInfo
from engines.compliance.discovery import classify
from engines.errors import ConfigError

NOTES = ["Login from 203.0.113.45 was flagged by the fraud team",
         "User connected from 2001:db8::8a2e:370:7334 during the outage",
         "Nothing personal in this note at all, just the weather today",
         "Delivery left with the neighbour, signed at the door as usual",
         "Login from 192.0.2.10 blocked after five attempts",
         "Package arrived damaged, replacement shipped on monday morning"]


def _installed() -> bool:
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        return False
    return True


def test_asking_for_presidio_without_it_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # as on a worker without the extra
    with pytest.raises(ConfigError, match=r"pip install 'dbfleet\[presidio\]'"):
        presidio.PresidioTexts()
    assert presidio.wanted({"presidio": "true"}) and not presidio.wanted({}) and not presidio.wanted({"presidio": 0})


@pytest.mark.skipif(not _installed(), reason="presidio-analyzer is not installed (the optional 'presidio' extra: "
                                             "pip install 'dbfleet[presidio]'; ~260 MB with spaCy, so not in 'test')")
def test_presidio_counts_free_text_pii_our_validators_miss_offline() -> None:
    import tldextract

    texts = presidio.PresidioTexts()
    assert tldextract.extract.suffix_list_urls == ()  # type: ignore[attr-defined]  # never fetches the list
    assert texts.entities("Wire it to DE89 3704 0044 0532 0130 00 before friday") == {"IBAN_CODE"}
    assert texts.entities("contact: ann.lee@example.org about the invoice") == {"EMAIL_ADDRESS"}
    column = ColumnInfo("remarks", "text", "text")
    assert classify("tickets", column, list(NOTES), 0.5) is None  # IPs in running text: ours see nothing
    found: Any = classify("tickets", column, list(NOTES), 0.5, texts.entities)
    assert found is not None and found.category == "free_text_with_pii"
    assert found.evidence["presidio"] == {"texts": 3, "only_presidio": 3, "entities": ["IP_ADDRESS"]}
    assert found.evidence["valid"] == 3 and "203.0.113.45" not in str(found.evidence)


def test_a_scan_asking_for_presidio_on_a_worker_without_it_reports_the_pip_line(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from engines.compliance.discovery import run_discovery
    from tests.conftest import db

    path = tmp_path / "h17_notes.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id integer PRIMARY KEY, body text)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(n,) for n in NOTES])
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)
    presidio.presidio_validator.cache_clear()
    report = run_discovery(db("notes", kind="sqlite", path=str(path)), {"presidio": True})
    presidio.presidio_validator.cache_clear()
    assert report.error and "dbfleet[presidio]" in report.error
    assert run_discovery(db("notes", kind="sqlite", path=str(path)), {}).error is None  # off by default
