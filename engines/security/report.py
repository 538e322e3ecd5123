"""Audit reports as JSON (stable schema) and as one self-contained HTML page."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from engines.security.model import FAIL, PASS, SEVERITIES, UNKNOWN, AuditReport, Finding

_COLOURS = {"critical": "#8b0000", "high": "#c0392b", "medium": "#d35400", "low": "#b7950b", "info": "#566573"}
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:70rem;color:#222}
h1{margin-bottom:.2rem} .muted{color:#666} table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.4rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6f7} .score{font-size:2.5rem;font-weight:700} .sev{color:#fff;border-radius:.3rem;
padding:.1rem .4rem;font-size:.8rem;text-transform:uppercase} code,pre{background:#f4f6f7;border-radius:.2rem}
pre{padding:.4rem;white-space:pre-wrap;margin:.2rem 0} .pass{color:#1e8449} .fail{color:#c0392b}
.unknown{color:#7f8c8d} .cards{display:flex;gap:1rem;flex-wrap:wrap} .card{border:1px solid #ddd;
border-radius:.4rem;padding:.6rem 1rem;min-width:7rem}
"""


def to_json(report: AuditReport) -> str:
    """The report in its stable JSON schema (see AuditReport.to_dict)."""
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str)


def _evidence(evidence: dict[str, Any]) -> str:
    return escape(json.dumps(evidence, indent=1, sort_keys=True, default=str)) if evidence else ""


def _badge(severity: str) -> str:
    return f'<span class="sev" style="background:{_COLOURS[severity]}">{escape(severity)}</span>'


def _row(f: Finding) -> str:
    detail = f.reason if f.status == UNKNOWN else ""
    cis = f" <span class='muted'>CIS {escape(f.cis)}</span>" if f.cis else ""
    fix = f"<pre>{escape(f.remediation)}</pre>" if f.status != PASS else ""
    ev = f"<pre>{_evidence(f.evidence)}</pre>" if f.evidence else ""
    return (f"<tr><td>{_badge(f.severity)}</td><td class='{f.status}'>{escape(f.status)}</td>"
            f"<td><b>{escape(f.title)}</b><br><code>{escape(f.check_id)}</code>{cis}"
            f"{'<br>' + escape(detail) if detail else ''}</td><td>{ev}</td><td>{fix}</td></tr>")


def _table(title: str, findings: list[Finding]) -> str:
    if not findings:
        return ""
    head = "<tr><th>severity</th><th>status</th><th>check</th><th>evidence</th><th>remediation</th></tr>"
    return f"<h2>{escape(title)} ({len(findings)})</h2><table>{head}{''.join(_row(f) for f in findings)}</table>"


def _order(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.check_id))


def to_html(report: AuditReport) -> str:
    """One HTML file (inline CSS, no scripts, nothing fetched): score, counts, findings, remediation."""
    counts = report.counts()
    cards = "".join(f"<div class='card'>{_badge(s)}<div class='score' style='font-size:1.6rem'>"
                    f"{counts[FAIL][s]}</div><span class='muted'>failing</span></div>" for s in SEVERITIES)
    diff = ""
    if report.diff:
        since = report.diff.get("previous")
        parts = [f"<li>{k}: {escape(', '.join(report.diff.get(k, []))) or 'none'}</li>"
                 for k in ("new", "fixed", "unchanged", "unknown")]
        title = f"Since the previous audit ({escape(since)})" if since else "First audit of this database"
        diff = f"<h2>{title}</h2><ul>{''.join(parts)}</ul>"
    error = f"<p class='fail'><b>The audit could not run:</b> {escape(report.error)}</p>" if report.error else ""
    by = {s: _order([f for f in report.findings if f.status == s]) for s in (FAIL, UNKNOWN, PASS)}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Security audit of {escape(report.database_id)}</title>
<style>{_STYLE}</style></head><body>
<h1>Security audit of {escape(report.database_id)}</h1>
<p class="muted">{escape(report.kind)} {escape(report.server_version or '')} · audited as
{escape(str(report.user or '-'))} at {escape(report.audited_at)} · {len(report.findings)} checks in
{report.duration_ms:.0f} ms{' · excluded: ' + escape(', '.join(report.excluded)) if report.excluded else ''}</p>
{error}<p><span class="score">{report.score:.0f}</span><span class="muted"> / 100 (weighted by severity;
unknown checks not counted)</span></p>
<div class="cards">{cards}</div>{diff}
{_table('Failing', by[FAIL])}{_table('Unknown (could not look)', by[UNKNOWN])}{_table('Passing', by[PASS])}
<p class="muted">dbfleet security audit, report schema {report.schema_version}</p>
</body></html>
"""
