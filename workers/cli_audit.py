"""`dbfleet audit DATABASE_ID` and `dbfleet audit-checks KIND`: security audits as tables, JSON or HTML."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from engines.kinds import canonical
from engines.security.model import SEVERITIES, AuditReport
from workers.render import console, err_console
from workers.render_audit import print_audit, sev


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
    """List the security checks of KIND (dbfleet kinds shows which kinds have an audit), or of every kind."""
    from engines.security.engine import AUDITORS, checks_for

    kinds = [canonical(kind) or kind] if kind else list(AUDITORS)
    for k in kinds:
        table = Table(title=f"{k} checks", title_justify="left")
        for col in ("check", "CIS", "severity", "title"):
            table.add_column(col, overflow="fold")
        checks = checks_for(k)
        for c in checks:
            table.add_row(c.id, c.cis or "", sev(c.severity), escape(c.title))
        console.print(table)
        console.print(f"{len(checks)} {k} checks")


__all__ = ["audit", "audit_checks", "exit_code", "print_audit"]
