"""Security audit reports as tables (shared by `dbfleet audit` and `dbfleet backups`; imports no CLI module)."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from engines.security.model import FAIL, PASS, SEVERITIES, UNKNOWN, AuditReport
from workers.render import console, err_console, styled

SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "white"}


def sev(severity: str) -> str:
    """A severity word in its colour."""
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
        table.add_row(sev(f.severity), styled(f.status), check, detail,
                      escape(f.remediation) if f.status != PASS else "")
    console.print(table)
    if report.diff is not None and not report.diff.get("previous"):
        console.print("first audit of this database: the next run will show what changed")
    elif report.diff is not None:
        d = report.diff
        console.print(f"since the previous audit ({d['previous']}): " + " · ".join(
            f"{k} {len(d.get(k, []))}" + (f" ({escape(', '.join(d[k]))})" if d.get(k) and k != "unchanged" else "")
            for k in ("new", "fixed", "unchanged", "unknown")))


__all__ = ["SEVERITY_STYLE", "print_audit", "sev"]
