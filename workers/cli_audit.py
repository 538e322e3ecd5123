"""`dbfleet audit DATABASE_ID` and `dbfleet audit-checks KIND`: security audits as tables, JSON or HTML."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from engines.security.model import FAIL, PASS, SEVERITIES, UNKNOWN, AuditReport
from workers.render import console, err_console, styled

SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "white"}


def _sev(severity: str) -> str:
    style = SEVERITY_STYLE[severity]
    return f"[{style}]{severity}[/{style}]"


def _short(evidence: dict[str, Any], limit: int = 160) -> str:
    text = "; ".join(f"{k}={json.dumps(v, default=str)}" for k, v in evidence.items())
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def print_audit(result: dict[str, Any], show_passing: bool = False) -> None:
    """The audit as tables: summary, failing findings with remediation, unknowns with reasons, the diff."""
    report = AuditReport.from_dict(result)
    counts = report.counts()
    failing = ", ".join(f"{counts[FAIL][s]} {s}" for s in SEVERITIES if counts[FAIL][s]) or "none"
    console.print(f"[bold]security audit of {escape(report.database_id)}[/bold] ({report.kind} "
                  f"{escape(report.server_version or '?')}, as {escape(str(report.user or '-'))}): "
                  f"score [bold]{report.score:.0f}[/bold]/100 · {len(report.findings)} checks · "
                  f"failing: {failing} · unknown: {sum(counts[UNKNOWN].values())}")
    if report.error:
        err_console.print(f"[red]the audit could not run:[/red] {escape(report.error)}")
        return
    statuses = (FAIL, UNKNOWN, PASS) if show_passing else (FAIL, UNKNOWN)
    table = Table(title="findings", title_justify="left")
    for col in ("severity", "status", "check", "evidence / reason", "remediation"):
        table.add_column(col, overflow="fold")
    order = sorted(report.findings, key=lambda f: (statuses.index(f.status) if f.status in statuses else 9,
                                                    SEVERITIES.index(f.severity), f.check_id))
    for f in order:
        if f.status not in statuses:
            continue
        detail = escape(f.reason or "") if f.status == UNKNOWN else _short(f.evidence)
        check = f"{escape(f.check_id)}" + (f" (CIS {escape(f.cis)})" if f.cis else "") + f"\n{escape(f.title)}"
        table.add_row(_sev(f.severity), styled(f.status), check, detail,
                      escape(f.remediation) if f.status != PASS else "")
    console.print(table)
    if report.diff is not None and not report.diff.get("previous"):
        console.print("first audit of this database: the next run will show what changed")
    elif report.diff is not None:
        d = report.diff
        console.print(f"since the previous audit ({d['previous']}): " + " · ".join(
            f"{k} {len(d.get(k, []))}" + (f" ({escape(', '.join(d[k]))})" if d.get(k) and k != "unchanged" else "")
            for k in ("new", "fixed", "unchanged", "unknown")))


def exit_code(result: dict[str, Any], fail_on: str) -> int:
    """1 when a finding at ``fail_on`` severity or worse fails (``none``: never), 2 when the audit could not run."""
    report = AuditReport.from_dict(result)
    if report.error:
        return 2
    if fail_on == "none":
        return 0
    return 1 if report.failing(fail_on) else 0


@click.command("audit")
@click.argument("database_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
@click.option("--exclude", multiple=True, metavar="CHECK_ID", help="skip a check (repeatable; adds to the config's)")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write the report to a file")
@click.option("--all", "show_all", is_flag=True, help="table: list passing checks too")
@click.option("--fail-on", type=click.Choice([*SEVERITIES, "none"]), default=None,
              help="exit 1 when a finding this severe or worse fails (default: security_audit.fail_on, high)")
@click.option("--local", is_flag=True, help="run in this process instead of on a worker of the audits queue")
@click.option("--timeout", default=1800.0, show_default=True, help="seconds to wait for a worker")
def audit(database_id: str, fmt: str, exclude: tuple[str, ...], output: str | None, show_all: bool,
          fail_on: str | None, local: bool, timeout: float) -> None:
    """Security audit of DATABASE_ID (read-only). Exit 0 clean, 1 failing findings, 2 audit impossible."""
    from engines.security.report import to_html, to_json
    from workers import runtime
    from workers.cli_backups import run_script

    options: dict[str, Any] = {"exclude": list(exclude)} if exclude else {}
    result = run_script("security_audit", database_id, options, local=local, timeout=timeout)
    report = AuditReport.from_dict(result)
    if fmt == "table":
        print_audit(result, show_passing=show_all)
    text = {"json": to_json, "html": to_html}.get(fmt, to_json)(report)
    if output:
        Path(output).write_text(text)
        err_console.print(f"wrote {fmt if fmt != 'table' else 'json'} report to {output}")
    elif fmt != "table":
        click.echo(text)
    sys.exit(exit_code(result, fail_on or runtime.config().database_scripts.security_audit.fail_on))


@click.command("audit-checks")
@click.argument("kind", required=False)
def audit_checks(kind: str | None) -> None:
    """List the security checks of KIND (postgresql, mysql, redis, mongodb, elasticsearch), or of every kind."""
    from engines.config import KIND_ALIASES
    from engines.security.engine import AUDITORS, checks_for

    kinds = [KIND_ALIASES.get(kind.lower(), kind)] if kind else list(AUDITORS)
    for k in kinds:
        table = Table(title=f"{k} checks", title_justify="left")
        for col in ("check", "CIS", "severity", "title"):
            table.add_column(col, overflow="fold")
        checks = checks_for(k)
        for c in checks:
            table.add_row(c.id, c.cis or "", _sev(c.severity), escape(c.title))
        console.print(table)
        console.print(f"{len(checks)} {k} checks")
