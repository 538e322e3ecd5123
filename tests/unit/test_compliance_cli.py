"""`dbfleet compliance scan|anonymize|erase --local` on SQLite files (no server): tables, HTML, exit codes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from workers.cli import cli


@pytest.fixture
def people(tmp_path: Path, fresh_runtime: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "h8_cli_people.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT UNIQUE, card TEXT)")
        conn.executemany("INSERT INTO contacts (email, card) VALUES (?, ?)",
                         [(f"p{i}@example.org", "4111111111111111") for i in range(40)])
    monkeypatch.setenv("H8_CLI_KEY", "h8-cli-anonymisation-key-0123456789")
    fresh_runtime.write_text(f"""
fleet: {{history_url: "sqlite:///{tmp_path / 'history.db'}"}}
databases:
  people: {{kind: sqlite, path: "{path}"}}
  staging: {{kind: sqlite, path: "{path}", tags: [prod]}}
database_scripts: {{compliance: {{key_env: H8_CLI_KEY, sample_size: 20}}}}
""")
    return tmp_path


def test_scan_prints_tables_and_exits_1_when_a_standard_fails(people: Path) -> None:
    out = CliRunner().invoke(cli, ["compliance", "scan", "people", "--local"])
    assert out.exit_code == 1, out.output  # PAN in clear: PCI-DSS 3.4 fails
    assert "contacts.card" in out.output and "card_number" in out.output and "PCI_DSS" in out.output
    assert "4111111111111111" not in out.output


def test_scan_writes_a_self_contained_html_report(people: Path) -> None:
    page = people / "report.html"
    out = CliRunner().invoke(cli, ["compliance", "scan", "people", "--local", "--format", "html", "-o", str(page)])
    assert out.exit_code == 1 and page.read_text().startswith("<!doctype html>")
    assert "PCI-DSS 3.4" in page.read_text() and "<script" not in page.read_text()


def test_anonymize_refuses_prod_without_i_know_and_masks_otherwise(people: Path) -> None:
    refused = CliRunner().invoke(cli, ["compliance", "anonymize", "staging", "--table", "contacts",
                                       "--rule", "email=email", "--local"])
    assert refused.exit_code == 2 and "tagged prod" in refused.output
    done = CliRunner().invoke(cli, ["compliance", "anonymize", "people", "--table", "contacts", "--rule", "email=email",
                                    "--rule", "card=card", "--local"])
    assert done.exit_code == 0, done.output
    assert "rows masked" in done.output and "40" in done.output
    with sqlite3.connect(people / "h8_cli_people.db") as conn:
        emails = {r[0] for r in conn.execute("SELECT email FROM contacts")}
    assert len(emails) == 40 and not emails & {f"p{i}@example.org" for i in range(40)}


def test_bad_rule_syntax_is_a_clear_error(people: Path) -> None:
    out = CliRunner().invoke(cli, ["compliance", "anonymize", "people", "--table", "contacts", "--rule", "email",
                                   "--local"])
    assert out.exit_code == 2 and "is not column=rule" in out.output
    out = CliRunner().invoke(cli, ["compliance", "anonymize", "people", "--table", "contacts", "--rule",
                                   "email=shuffle", "--local"])
    assert out.exit_code == 2 and "unknown anonymisation rule" in out.output
    assert "Traceback" not in out.output


def test_erase_shows_the_plan_then_erases_with_yes(people: Path) -> None:
    with sqlite3.connect(people / "h8_cli_people.db") as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, contact_id INTEGER REFERENCES contacts(id), body TEXT)")
        conn.executemany("INSERT INTO notes (contact_id, body) VALUES (?, ?)", [(3, "a"), (3, "b"), (4, "c")])
    plan = CliRunner().invoke(cli, ["compliance", "erase", "people", "--subject", "contacts.id=3", "--local",
                                    "--dry-run"])
    assert plan.exit_code == 0 and "notes" in plan.output and "fk" in plan.output
    done = CliRunner().invoke(cli, ["compliance", "erase", "people", "--subject", "contacts.id=3", "--local", "--yes"])
    assert done.exit_code == 0, done.output
    assert "expires" in done.output and "backup repository not readable" in done.output  # none configured
    with sqlite3.connect(people / "h8_cli_people.db") as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM contacts WHERE id = 3").fetchone()[0] == 0
