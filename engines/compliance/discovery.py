"""PII discovery: name signals + validated content samples -> one finding per column, never the values."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from engines.compliance import presidio
from engines.compliance.base import CannotSample, ColumnInfo, Discoverer, TableInfo, discoverer_class
from engines.compliance.model import NOUNS, PII, SUPPRESSED, UNKNOWN, ColumnFinding, DiscoveryReport
from engines.compliance.signals import NameSignal, name_signals, pin_from_text
from engines.compliance.validators import FAMILIES, STANDALONE, VALIDATORS, as_text, is_free_text
from engines.config import DatabaseConfig
from engines.connectors import Connector, open_connector
from engines.errors import DbfleetError
from engines.secrets import scrub

MIN_SAMPLES = 5  # fewer non-null sampled values than this: the name alone decides
DEFAULTS = {"sample_size": 100, "min_confidence": 0.5, "statement_timeout_seconds": 10.0, "max_tables": 2000}


def _score(signal: NameSignal | None, valid: int, seen: int, category: str) -> tuple[float, str]:
    """(confidence, source) from a name weight and a content ratio; content that contradicts a name wins."""
    w = signal.weight if signal else 0.0
    if seen < MIN_SAMPLES:
        return w, "name"
    ratio = valid / seen
    if category == "free_text_with_pii":  # prevalence: a tenth of notes naming people is already a finding
        return (round(min(0.95, 0.6 + ratio + w / 4), 3) if ratio >= 0.05 and valid >= 2 else 0.0), "sample"
    if not signal:
        return round(ratio * STANDALONE[category], 3), "sample"
    if ratio >= 0.5:
        return round(1 - (1 - w) * (1 - ratio * max(STANDALONE[category], 0.8)), 3), "name+sample"
    if ratio < 0.2:
        return round(w * 0.3, 3), "name+sample"  # a column called email that holds no e-mail addresses
    return round(w * 0.8, 3), "name+sample"


def _candidates(column: ColumnInfo, signals: list[NameSignal]) -> list[str]:
    named = [s.category for s in signals]
    content = [c for c in FAMILIES.get(column.family, ()) if STANDALONE[c] > 0 or c in named]
    return list(dict.fromkeys([*named, *content]))


def classify(table: str, column: ColumnInfo, values: list[Any] | None, min_confidence: float,
             extra: Callable[[str], set[str]] | None = None) -> ColumnFinding | None:
    """The best classification of one column from its name, comment and sampled ``values`` (None: not sampled).
    ``extra``: a second validator of free text (Presidio's recognizers) returning the entity types in a text;
    a text counts as embedding PII when either finds some."""
    pinned = pin_from_text(column.comment)
    if pinned == "none":
        return ColumnFinding(table, column.name, None, 0.0, SUPPRESSED, {"pinned_by": "comment"}, "comment")
    if pinned:
        return ColumnFinding(table, column.name, pinned, 1.0, PII, {"pinned_by": "comment"}, "comment")
    signals = name_signals(column.name)
    by_cat = {s.category: s for s in signals}
    present = [v for v in values or [] if v is not None]
    best: ColumnFinding | None = None
    for cat in _candidates(column, signals):
        check = VALIDATORS[cat]
        items = present if cat == "dob" else [t for t in map(as_text, present) if t and t.strip()]
        extra_evidence = None
        if cat == "free_text_with_pii" and extra is not None:
            ours = [check(v) for v in items]
            theirs = [extra(v) if is_free_text(v) else set() for v in items]
            valid = sum(1 for a, b in zip(ours, theirs, strict=True) if a or b)
            extra_evidence = {"texts": sum(1 for b in theirs if b), "only_presidio": sum(
                1 for a, b in zip(ours, theirs, strict=True) if b and not a),
                "entities": sorted(set().union(*theirs))}
        else:
            valid = sum(1 for v in items if check(v))
        conf, source = _score(by_cat.get(cat), valid, len(items), cat)
        if best is None or conf > best.confidence:
            evidence: dict[str, Any] = {"sampled": len(items), "valid": valid}
            if extra_evidence is not None:
                evidence["presidio"] = extra_evidence
            if cat in by_cat:
                evidence["name_signal"] = by_cat[cat].token
            if len(items) >= MIN_SAMPLES:
                evidence["text"] = f"{valid}/{len(items)} sampled values valid {NOUNS[cat]}"
            else:
                evidence["text"] = f"column name ({by_cat[cat].token})" if cat in by_cat else "no samples"
            best = ColumnFinding(table, column.name, cat, conf, PII, evidence, source)
    if best is None or best.confidence < min_confidence:
        return None
    return best


def _unknown(table: TableInfo, columns: list[ColumnInfo], reason: str) -> list[ColumnFinding]:
    """Unreadable columns: those whose name suggests PII, or one table-level finding, all ``unknown``."""
    out = []
    for col in columns:
        signals = name_signals(col.name)
        if signals:
            s = signals[0]
            out.append(ColumnFinding(table.name, col.name, s.category, s.weight, UNKNOWN,
                                     {"name_signal": s.token, "text": "not sampled"}, "name", reason))
    return out or [ColumnFinding(table.name, None, None, 0.0, UNKNOWN, {}, "name", reason)]


def scan_table(disc: Discoverer, table: TableInfo, settings: dict[str, Any]) -> list[ColumnFinding]:
    """Findings for one table: sample its readable columns once, classify each column."""
    n, floor = int(settings["sample_size"]), float(settings["min_confidence"])
    if not table.readable:
        return _unknown(table, table.columns, table.reason or "not readable")
    readable = [c for c in table.columns if c.readable]
    findings = _unknown(table, [c for c in table.columns if not c.readable], "no SELECT privilege on the column") \
        if len(readable) < len(table.columns) else []
    findings = [f for f in findings if f.column]
    try:
        rows = disc.sample(table, readable, n) if readable else []
    except CannotSample as exc:
        return findings + _unknown(table, readable, scrub(str(exc)))
    extra = None
    if presidio.wanted(settings):
        extra = presidio.presidio_validator().entities  # ConfigError with the pip line when not installed
    for i, col in enumerate(readable):
        f = classify(table.name, col, [r[i] for r in rows], floor, extra)
        if f is not None:
            f.evidence.setdefault("rows_sampled", len(rows))
            findings.append(f)
    return findings


def run_discovery(db: DatabaseConfig, settings: dict[str, Any] | None = None,
                  factory: Callable[[DatabaseConfig], Connector] = open_connector) -> DiscoveryReport:
    """Discover PII in ``db`` read-only; a database that cannot be reached gives a report with ``error``."""
    settings = {**DEFAULTS, **(settings or {})}
    cls = discoverer_class(db.kind)
    started = time.perf_counter()
    findings: list[ColumnFinding] = []
    tables: list[TableInfo] = []
    error = None
    try:
        with factory(db) as conn:
            disc = cls(conn, settings)
            tables = disc.tables()[: int(settings["max_tables"])]
            for table in tables:
                findings.extend(scan_table(disc, table, settings))
    except DbfleetError as exc:
        error = scrub(str(exc))
    except Exception as exc:  # a driver error outside one table: the database cannot be scanned
        error = scrub(f"{db.kind} database {db.id!r}: {type(exc).__name__}: {exc}")
    return DiscoveryReport(
        database_id=db.id, kind=db.kind, scanned_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_ms=round((time.perf_counter() - started) * 1000, 1), tables_scanned=len(tables),
        columns_scanned=sum(len(t.columns) for t in tables),
        findings=[f for f in findings if f.status != SUPPRESSED],
        suppressed=[f for f in findings if f.status == SUPPRESSED], sample_size=int(settings["sample_size"]),
        error=error)
