"""Compliance scan reports as JSON and as one self-contained HTML page (inline CSS, no scripts)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from engines.security.report import _STYLE

_STATUS = {"compliant": "#1e8449", "non_compliant": "#c0392b", "needs_review": "#d35400",
           "pass": "#1e8449", "fail": "#c0392b", "not_applicable": "#7f8c8d"}


def to_json(report: dict[str, Any]) -> str:
    """The scan report as stable, sorted JSON."""
    return json.dumps(report, indent=2, sort_keys=True, default=str)


def _badge(status: str) -> str:
    colour = _STATUS.get(status, "#566573")
    return f'<span class="sev" style="background:{colour}">{escape(status.replace("_", " "))}</span>'


def _findings(report: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(str(f['table']))}.{escape(str(f['column'] or '*'))}</code></td>"
        f"<td>{escape(str(f['category'] or '-'))}</td><td>{f['confidence']:.2f}</td><td>{escape(f['status'])}</td>"
        f"<td>{escape(str(f['evidence'].get('text') or f.get('reason') or ''))}</td></tr>"
        for f in sorted(report["discovery"]["findings"], key=lambda f: (f["table"], str(f["column"]))))
    head = "<tr><th>column</th><th>category</th><th>confidence</th><th>status</th><th>evidence</th></tr>"
    return f"<h2>Personal data found</h2><table>{head}{rows}</table>" if rows else "<p>No personal data found.</p>"


def _standards(report: dict[str, Any]) -> str:
    out = []
    for std, data in report["standards_compliance"].items():
        rows = "".join(
            f"<tr><td>{escape(c['requirement'])}</td><td>{escape(c['title'])}</td><td>{_badge(c['status'])}</td>"
            f"<td><pre>{escape(json.dumps(c['evidence'], sort_keys=True, default=str))}</pre></td>"
            f"<td>{escape(c['recommendation'])}</td></tr>" for c in data["controls"])
        out.append(f"<h2>{escape(std.upper().replace('_', '-'))} {_badge(data['status'])}</h2><table><tr><th>"
                   f"requirement</th><th>control</th><th>status</th><th>evidence</th><th>fix</th></tr>{rows}</table>")
    return "".join(out)


def to_html(report: dict[str, Any]) -> str:
    """One HTML file: standards at a glance, recommendations by risk, findings, controls with evidence."""
    cards = "".join(f"<div class='card'><b>{escape(s.upper().replace('_', '-'))}</b><br>{_badge(d['status'])}</div>"
                    for s, d in report["standards_compliance"].items())
    recs = "".join(f"<li><b>{escape(r['risk'])}</b> ({escape(r['status'].replace('_', ' '))}): "
                   f"{escape(r['recommendation'])} <span class='muted'>{escape(', '.join(r['controls']))}</span></li>"
                   for r in report["recommendations"])
    diff = report["discovery"].get("diff") or {}
    changes = "".join(f"<li>{escape(m)}</li>" for m in diff.get("messages", []))
    error = f"<p class='fail'><b>Discovery failed:</b> {escape(report['error'])}</p>" if report.get("error") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compliance of {escape(report['database_id'])}</title>
<style>{_STYLE}</style></head><body>
<h1>Compliance of {escape(report['database_id'])}</h1>
<p class="muted">{escape(report['kind'])} · scanned {escape(report['scanned_at'])} ·
{report['discovery']['tables_scanned']} tables, {report['discovery']['columns_scanned']} columns, samples of
{report['discovery']['sample_size']} rows · values are never shown</p>{error}
<div class="cards">{cards}</div>
<h2>Recommendations (riskiest first)</h2><ol>{recs or '<li>none</li>'}</ol>
{'<h2>Since the last scan</h2><ul>' + changes + '</ul>' if changes else ''}
{_findings(report)}{_standards(report)}
<p class="muted">dbfleet compliance scan, report schema {report.get('schema_version', 1)}</p>
</body></html>
"""
