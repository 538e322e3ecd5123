"""`dbfleet compliance scan|anonymize|erase|trail verify`: through the fleet (default) or --local."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from engines.errors import ConfigError
from workers.render import console, err_console, key_value_table, rows_table, styled

STATUS_STYLE = {"compliant": "green", "non_compliant": "red", "needs_review": "yellow", "pass": "green",
                "fail": "red", "not_applicable": "white"}


def _st(status: str) -> str:
    style = STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/{style}]"


def _run(script: str, database_id: str, options: dict[str, Any], local: bool, timeout: float) -> dict[str, Any]:
    from workers.compliance import run_local, run_on_fleet

    if local:
        with err_console.status(f"{script} on {database_id}") as status:
            def progress(done: int, _total: int | None) -> None:
                status.update(f"{script} on {database_id}: {done:,} rows")

            return run_local(script, database_id, options, progress)
    from workers.manager import current_app
    from workers.status import require_worker

    require_worker(current_app(), "compliance")
    err_console.print(f"sending {script} for {database_id} to the compliance queue")
    with err_console.status(f"{script} on {database_id}: waiting for a worker"):
        return run_on_fleet(script, database_id, options, timeout)


def print_scan(report: dict[str, Any]) -> None:
    """Findings, standards, recommendations and the diff as tables."""
    disc = report["discovery"]
    table = Table(title=f"personal data in {escape(report['database_id'])} ({len(disc['findings'])} findings)",
                  title_justify="left")
    for col in ("column", "category", "confidence", "status", "evidence / reason"):
        table.add_column(col, overflow="fold")
    for f in sorted(disc["findings"], key=lambda f: (f["table"], str(f["column"]))):
        table.add_row(escape(f"{f['table']}.{f['column'] or '*'}"), f["category"] or "-", f"{f['confidence']:.2f}",
                      styled(f["status"]), escape(str(f["evidence"].get("text") or f.get("reason") or "")))
    console.print(table)
    console.print(rows_table("standards", ["standard", "status", "failing controls"],
                             [[s.upper(), _st(d["status"]), ", ".join(d["failing"]) or "-"]
                              for s, d in report["standards_compliance"].items()]))
    console.print(rows_table("recommendations (riskiest first)", ["risk", "status", "recommendation", "controls"],
                             [[r["risk"], _st(r["status"]), escape(r["recommendation"]), ", ".join(r["controls"])]
                              for r in report["recommendations"]] or [["-", "-", "none", "-"]]))
    for message in (disc.get("diff") or {}).get("messages", []):
        console.print(f"[bold]{escape(message)}[/bold]")


@click.group("compliance")
def compliance() -> None:
    """PII discovery and GDPR/PCI-DSS/HIPAA/SOX scans, anonymisation, erasure, the audit trail."""


@compliance.command("scan")
@click.argument("database_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write the report to a file")
@click.option("--sample-size", type=int, help="rows sampled per table (default: compliance.sample_size)")
@click.option("--local", is_flag=True, help="run in this process instead of on a compliance worker")
@click.option("--timeout", default=3600.0, show_default=True)
def scan_cmd(database_id: str, fmt: str, output: str | None, sample_size: int | None, local: bool,
             timeout: float) -> None:
    """Scan DATABASE_ID. Exit 0 compliant/needs review, 1 a standard is non-compliant, 2 the scan failed."""
    from engines.compliance.report import to_html, to_json

    options = {"sample_size": sample_size} if sample_size else {}
    report = _run("compliance_scan", database_id, options, local, timeout)
    if fmt == "table":
        print_scan(report)
    text = to_html(report) if fmt == "html" else to_json(report)
    if output:
        Path(output).write_text(text)
        err_console.print(f"wrote the {fmt if fmt != 'table' else 'json'} report to {output}")
    elif fmt != "table":
        click.echo(text)
    if report.get("error"):
        sys.exit(2)
    sys.exit(1 if any(d["status"] == "non_compliant" for d in report["standards_compliance"].values()) else 0)


def _rules(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        col, sep, rule = pair.partition("=")
        if not sep or not col or not rule:
            raise ConfigError([("--rule", f"{pair!r} is not column=rule (e.g. email=email)")])
        out[col.strip()] = rule.strip()
    return out


@compliance.command("anonymize")
@click.argument("database_id")
@click.option("--table", help="the table to mask (in place: required; copy: or name columns table.column=rule)")
@click.option("--rule", "rules", multiple=True, required=True,
              help="column=rule (repeatable), e.g. email=email; with --copy-to also table.column=rule")
@click.option("--copy-to", help="copy the database into this one (PostgreSQL), masked in flight; the source is"
                                " only read")
@click.option("--only", "tables", multiple=True, help="--copy-to: copy only these tables (repeatable)")
@click.option("--i-know", is_flag=True, help="required for databases tagged prod")
@click.option("--backup-id", help="a backup of the database taken within 24 h (required for prod)")
@click.option("--again", is_flag=True, help="mask a table already masked with these rules")
@click.option("--batch-size", type=int)
@click.option("--local", is_flag=True)
@click.option("--timeout", default=3 * 3600.0, show_default=True)
def anonymize_cmd(database_id: str, table: str | None, rules: tuple[str, ...], copy_to: str | None,
                  tables: tuple[str, ...], i_know: bool, backup_id: str | None, again: bool, batch_size: int | None,
                  local: bool, timeout: float) -> None:
    """Mask TABLE of DATABASE_ID in place, deterministically (rerun to resume after a crash), or with
    --copy-to write a masked copy of DATABASE_ID into another database (the staging copy of production)."""
    options: dict[str, Any] = {"i_know": i_know, "again": again}
    if copy_to:
        options.update(copy_to=copy_to, rules=_copy_rules(table, rules))
        if tables:
            options["tables"] = list(tables)
    else:
        if not table:
            raise click.UsageError("--table is required to mask in place (or give --copy-to)")
        options.update(table=table, rules=_rules(rules))
    if backup_id:
        options["backup_id"] = backup_id
    if batch_size:
        options["batch_size"] = batch_size
    result = _run("compliance_anonymize", database_id, options, local, timeout)
    if copy_to:
        validation = result.get("validation") or {}
        console.print(key_value_table(f"masked copy of {database_id} in {result['copy_to']}", [
            ("tables", len(result["tables"])), ("rows copied", result["rows_copied"]),
            ("masked", "; ".join(f"{t}: " + ", ".join(f"{c}={r}" for c, r in cols.items())
                                 for t, cols in result["columns"].items())),
            ("validation", "skipped" if not validation else "ok" if validation["ok"] else "[red]FAILED[/red]"),
            ("rows/s", result["rows_per_second"]), ("migration", result["migration_id"]),
            ("trail", "recorded" if result.get("trail", {}).get("recorded") else "not recorded")]))
        if validation and not validation["ok"]:
            sys.exit(1)
        return
    console.print(key_value_table(f"anonymised {result['table']} of {database_id}", [
        ("rows masked", result["rows_masked"]), ("resumed from", result["resumed_from_rows"]),
        ("columns", ", ".join(f"{c}: {r}" for c, r in result["columns"].items())),
        ("rows/s", result["rows_per_second"]), ("job", result["job_id"]),
        ("trail", "recorded" if result.get("trail", {}).get("recorded") else "not recorded")]))


def _copy_rules(table: str | None, pairs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """--rule for a copy: column=rule under --table, or table.column=rule (schema.table.column=rule)."""
    out: dict[str, dict[str, str]] = {}
    for col, rule in _rules(pairs).items():
        if table:
            out.setdefault(table, {})[col] = rule
            continue
        tname, dot, column = col.rpartition(".")
        if not dot or not tname or not column:
            raise ConfigError([("--rule", f"{col}={rule}: name the table (table.column=rule) or give --table")])
        out.setdefault(tname, {})[column] = rule
    return out


def _parts(result: dict[str, Any], via: str = "") -> list[tuple[str, str, dict[str, Any]]]:
    """(database, link followed, result) for the subject's database and every linked one (erasure_links)."""
    out = [(str(result["database_id"]), via, result)]
    for child in result.get("linked") or []:
        out += _parts(child, child.get("link", ""))
    return out


@compliance.command("erase")
@click.argument("database_id")
@click.option("--subject", required=True, help="table.column=value, e.g. users.id=42")
@click.option("--yes", is_flag=True, help="do not ask before erasing")
@click.option("--dry-run", is_flag=True, help="only show the plan")
@click.option("--local", is_flag=True)
@click.option("--timeout", default=3600.0, show_default=True)
def erase_cmd(database_id: str, subject: str, yes: bool, dry_run: bool, local: bool, timeout: float) -> None:
    """Erase SUBJECT and every row depending on it; shows the plan first."""
    plan = _run("compliance_erase", database_id, {"subject": subject, "dry_run": True}, local, timeout)
    console.print(rows_table(f"erasure plan for {plan['subject']}", ["database", "table", "rows", "action", "via"],
                             [[db, s["table"], s["rows"], s["action"], s["via"]] for db, _, r in _parts(plan)
                              for s in r["plan"]]))
    if dry_run or not (yes or click.confirm("erase these rows?", default=False)):
        return
    result = _run("compliance_erase", database_id, {"subject": subject}, local, timeout)
    console.print(rows_table("erased (one transaction per database)", ["database", "table", "rows"],
                             [[db, t, n] for db, _, r in _parts(result) for t, n in (r["affected"] or {}).items()]))
    console.print(rows_table("backups that may still hold the subject", ["backup", "taken", "expires"],
                             [[b["backup_id"], b["taken_at"], b["expires"]] for b in result["backups"]]
                             or [["none", "-", "-"]]))
    if result.get("note"):
        err_console.print(escape(result["note"]))


@compliance.group("trail")
def trail() -> None:
    """The tamper-evident audit trail: every history row, tuning change, failover and compliance action."""


@trail.command("verify")
@click.option("--anchor", type=click.Path(exists=True, dir_okay=False), help="an exported head (JSON)")
@click.option("--repository-anchor", is_flag=True, help="also check the newest anchor exported to the backup storage")
def trail_verify(anchor: str | None, repository_anchor: bool) -> None:
    """Check every link of the chain; exit 1 naming the first broken entry."""
    from engines.compliance.operations import latest_anchor
    from engines.compliance.operations import trail_verify as verify
    from workers import runtime

    head = json.loads(Path(anchor).read_text()) if anchor else None
    if repository_anchor:
        head = latest_anchor(runtime.config())
        if head is None:
            err_console.print("no anchor exported yet (dbfleet compliance trail export-anchor)")
    result = verify(runtime.config(), head)
    history = result.get("history") or {"checked": 0, "problems": []}
    if result["ok"]:
        console.print(f"[green]trail intact[/green]: {result['entries']} entries, head {result['anchor']['mac'][:16]}…"
                      f"; {history['checked']} history rows match it")
        return
    if result["first_broken"] is not None:
        err_console.print(f"[red]trail broken at entry {result['first_broken']}[/red]: {escape(result['problem'])}")
    for p in history["problems"][:20]:
        err_console.print(f"[red]history row {escape(p['run_id'])}[/red]: {escape(p['problem'])}")
    if len(history["problems"]) > 20:
        err_console.print(f"... and {len(history['problems']) - 20} more history rows")
    sys.exit(1)


@trail.command("head")
def trail_head() -> None:
    """Print the anchor (last entry's sequence and HMAC) as JSON, to keep outside the history database."""
    from engines.compliance.operations import trail_verify as verify
    from workers import runtime

    click.echo(json.dumps(verify(runtime.config())["anchor"]))


@trail.command("export-anchor")
def trail_export_anchor() -> None:
    """Write the trail's head to the backup storage (run it daily: cron or a schedule)."""
    from engines.compliance.operations import export_anchor
    from workers import runtime

    out = export_anchor(runtime.config())
    console.print(f"anchor of entry {out['seq']} written to {escape(out['key'])}")
