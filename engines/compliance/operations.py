"""The compliance operations as (result, ok, error) calls: what tasks, the CLI's --local and the API run.

Every action is appended to the tamper-evident trail when a trail key is configured; results carry
database ids, table names, counts and digests, never values, keys or passwords.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from engines.compliance.anonymize.base import mask_target_class
from engines.compliance.anonymize.inplace import anonymize_in_place, prod_guard
from engines.compliance.anonymize.rules import Masker
from engines.compliance.erasure import Subject, backups_holding, eraser_class, parse_links, parse_subject, plan_dict
from engines.compliance.model import ComplianceRefused
from engines.compliance.scan import scan_database
from engines.compliance.trail import AuditTrail, check_history
from engines.config import Config, DatabaseConfig
from engines.connectors import open_connector
from engines.errors import ConfigError, DbfleetError
from engines.history import HistoryStore

Result = tuple[dict[str, Any], bool, str | None]
SCRIPTS = ("compliance_scan", "compliance_anonymize", "compliance_erase")


def settings_for(cfg: Config, db: DatabaseConfig, options: dict[str, Any]) -> dict[str, Any]:
    """``database_scripts.compliance``, then the database's ``options.compliance``, then run options."""
    return {**cfg.database_scripts.compliance.model_dump(), **dict(db.options.get("compliance") or {}), **options}


def open_trail(cfg: Config) -> AuditTrail | None:
    """The trail in the history database, or None when no trail key is configured."""
    section = cfg.database_scripts.compliance
    if not (section.trail_key_env or section.trail_key_file):
        return None
    return AuditTrail(cfg.fleet.resolved_history(), section.trail_key())


def record(cfg: Config, action: str, database_id: str | None, details: dict[str, Any]) -> dict[str, Any]:
    """Append to the trail; returns what to put in the result under ``trail``."""
    trail = open_trail(cfg)
    if trail is None:
        return {"recorded": False, "why": "no trail key (database_scripts.compliance.trail_key_file/_env)"}
    try:
        return {"recorded": True, **trail.append(action, database_id, details)}
    finally:
        trail.engine.dispose()


def do_scan(db: DatabaseConfig, cfg: Config, history: HistoryStore, options: dict[str, Any]) -> Result:
    """PII discovery + standards; the result holds the diff with the last scan."""
    settings = settings_for(cfg, db, options)
    trail = open_trail(cfg)
    verified = trail.verify() if trail else None
    report = scan_database(db, cfg, history, settings, trail=verified)
    disc = report["discovery"]
    report["trail"] = record(cfg, "compliance.scan", db.id, {
        "pii_columns": len([f for f in disc["findings"] if f["status"] == "pii"]),
        "status": {k: v["status"] for k, v in report["standards_compliance"].items()},
        "new": disc["diff"]["new"] if disc.get("diff") else []})
    if report["error"]:
        return report, False, report["error"]
    return report, True, None


def do_anonymize(db: DatabaseConfig, cfg: Config, options: dict[str, Any], progress: Any = None) -> Result:
    """Mask ``options.table`` in place with ``options.rules`` (column: rule); with ``copy_to``, copy the
    database into that one instead, masked in flight (``do_masked_copy``)."""
    if options.get("copy_to"):
        return do_masked_copy(db, cfg, options, progress)
    settings = settings_for(cfg, db, options)
    table, rules = options.get("table"), options.get("rules")
    if not table or not isinstance(rules, dict):
        raise ConfigError([("options", "anonymize needs table and rules ({column: rule})")])

    def backup_ids() -> list[str]:
        from engines.backup.engine import open_repository

        return [b for _, b in open_repository(cfg).backup_ids(db.id)]

    prod_guard(db, i_know=bool(options.get("i_know")), backup_id=options.get("backup_id"), backup_ids=backup_ids)
    masker = Masker(cfg.database_scripts.compliance.anonymization_key())
    with open_connector(db) as conn:
        target = mask_target_class(db.kind)(conn)
        result = anonymize_in_place(target, db.id, str(table), {str(k): str(v) for k, v in rules.items()}, masker,
                                    batch_size=int(settings.get("batch_size", 1000)), again=bool(options.get("again")),
                                    throttle_seconds=float(options.get("throttle_seconds", 0)), progress=progress)
    result["trail"] = record(cfg, "compliance.anonymize", db.id, {
        k: result[k] for k in ("table", "job_id", "rows_masked", "columns", "key_fingerprint")})
    return result, True, None


def copy_rules(options: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Rules of a masked copy: ``table`` + ``rules`` {column: rule}, or ``rules`` {table: {column: rule}}."""
    rules = options.get("rules")
    if not isinstance(rules, dict) or not rules:
        raise ConfigError([("rules", "a masked copy needs rules: {column: rule} with table, or {table: {column: rule}}")])
    if options.get("table"):
        if any(isinstance(v, dict) for v in rules.values()):
            raise ConfigError([("rules", "with table, rules are {column: rule}")])
        return {str(options["table"]): {str(k): str(v) for k, v in rules.items()}}
    if not all(isinstance(v, dict) for v in rules.values()):
        raise ConfigError([("rules", "without table, rules are {table: {column: rule}} (or give table)")])
    return {str(t): {str(k): str(v) for k, v in cols.items()} for t, cols in rules.items()}


def do_masked_copy(db: DatabaseConfig, cfg: Config, options: dict[str, Any], progress: Any = None) -> Result:
    """Copy ``db`` into ``options.copy_to`` through the migration engine, masking the ruled columns in the
    worker before rows leave it (the plan's ``mask`` transform); validated against the masked checksums.
    The source is only read; a failed copy is rolled back (what it created in the target is dropped)."""
    import time

    from engines.compliance.anonymize.copy import check_copy_rules, mask_spec, masking_key
    from engines.migration import engine as migration

    settings = settings_for(cfg, db, options)
    rules = copy_rules(options)
    target = cfg.database(str(options["copy_to"]))
    if target.id == db.id:
        raise ConfigError([("copy_to", "a masked copy goes into another database than its source")])
    if target.kind != "postgresql":
        raise ConfigError([("copy_to", f"masked copies are written into PostgreSQL databases ({target.id} is "
                                       f"{target.kind}); mask in place there instead")])
    if "prod" in target.tags:
        raise ComplianceRefused(f"{target.id} is tagged prod: a masked copy is written into a staging database")
    key = cfg.database_scripts.compliance.anonymization_key()
    started = time.perf_counter()
    with masking_key(key) as fingerprint:  # the key stays in this process; the plan names its fingerprint
        plan = migration.plan_migration(db, target, migration.MigrationOptions(
            batch_size=int(settings.get("batch_size", 1000)), parallel_workers=1,
            validation=bool(options.get("validation", True)), tables=options.get("tables"),
            transform={"kind": "mask"}))
        plan.transform = mask_spec(check_copy_rules(plan.tables, rules), fingerprint)
        plan = migration.prepare(plan, db, target)
        total = len(plan.batches)
        try:
            rows = 0
            for batch in plan.batches:  # here, not on the migrations queue: the batches need the key
                rows += int(migration.copy_batch(plan, batch.id, db, target).get("rows") or 0)
                if progress:
                    progress(rows, None)
            finalized = migration.finalize(plan, db, target)
            report = migration.validate(plan, db, target) if plan.validation else None
        except BaseException:
            migration.rollback(plan, db, target)
            raise
    elapsed = time.perf_counter() - started
    masked = (plan.transform or {})["rules"]
    result: dict[str, Any] = {
        "database_id": db.id, "copy_to": target.id, "mode": "copy", "migration_id": plan.id,
        "tables": [t.source for t in plan.tables], "batches": total, "rows_copied": finalized["rows"],
        "columns": masked, "key_fingerprint": fingerprint, "duration_seconds": round(elapsed, 3),
        "rows_per_second": round(finalized["rows"] / elapsed, 1) if elapsed else None,
        "validation": None if report is None else {
            "ok": report["ok"], "tables": [{k: t.get(k) for k in ("table", "ok", "rows") if k in t}
                                           for t in report["tables"]],
            "masked_columns": "compared by the checksums of the masked rows (taken in the worker after masking;"
                              " original values never enter the copy or its checksums)"}}
    result["trail"] = record(cfg, "compliance.anonymize_copy", db.id, {
        k: result[k] for k in ("copy_to", "migration_id", "rows_copied", "columns", "key_fingerprint")})
    ok = report is None or bool(report["ok"])
    return result, ok, None if ok else f"validation of the masked copy {plan.id} failed: see validation.tables"


def _backups(cfg: Config, db: DatabaseConfig, at: datetime) -> dict[str, Any]:
    from engines.backup.engine import open_repository

    section = cfg.database_scripts.backup
    try:
        ids = [b for _, b in open_repository(cfg).backup_ids(db.id)]
    except DbfleetError as exc:
        return {"backups": [], "note": f"backup repository not readable: {exc}"}
    return {"backups": backups_holding(ids, at, section.retention, section.retention_days),
            "note": "these backups were taken before the erasure and may still hold the subject; "
                    "restoring one requires erasing the subject again"}


MAX_LINK_DEPTH = 4  # databases a chain of erasure links may cross


def do_erase(db: DatabaseConfig, cfg: Config, options: dict[str, Any]) -> Result:
    """Plan (``dry_run``) or perform the erasure of ``options.subject`` (``table.column=value``), following the
    configured cross-database links (``compliance.erasure_links``): each linked database is erased in its own
    transaction, before the subject's own rows (whose values the links are read from)."""
    subject = parse_subject(str(options.get("subject") or ""))
    at = datetime.now(timezone.utc)
    result = _erase(db, cfg, options, subject, at, seen=set())
    return result, True, None


def _erase(db: DatabaseConfig, cfg: Config, options: dict[str, Any], subject: Any, at: datetime,
           seen: set[tuple[str, str, str, str]], depth: int = 0) -> dict[str, Any]:
    settings = settings_for(cfg, db, options)
    seen.add((db.id, subject.table, subject.column, subject.value))
    links = [link for link in parse_links(list(settings.get("erasure_links") or []))
             if link.source_table == subject.table]
    linked: list[dict[str, Any]] = []
    with open_connector(db) as conn:
        eraser = eraser_class(db.kind)(conn, dict(settings.get("erasure_policies") or {}),
                                       dict(settings.get("erasure_rules") or {}))
        steps = eraser.plan(subject)
        follow = [(link, value) for link in links for value in eraser.linked_values(subject, link.source_column)]
        if follow and depth >= MAX_LINK_DEPTH:
            raise ConfigError([("compliance.erasure_links", f"links go deeper than {MAX_LINK_DEPTH} databases: "
                                                            "check them for a cycle")])
        for link, value in follow:  # the linked databases first: this database's rows hold the link values
            target = cfg.database(link.database)
            sub = Subject(link.target_table, link.target_column, value)
            if (target.id, sub.table, sub.column, sub.value) in seen:
                continue
            child = _erase(target, cfg, {k: v for k, v in options.items() if k != "subject"}, sub, at, seen,
                           depth + 1)
            linked.append({"link": f"{link.source_table}.{link.source_column} -> {link.database}:"
                                   f"{link.target_table}.{link.target_column}", **child})
        done: dict[str, int] | None = None
        if not options.get("dry_run"):
            masker = None
            if any(s.action == "anonymize" for s in steps):
                masker = Masker(cfg.database_scripts.compliance.anonymization_key())
            done = eraser.execute(subject, steps, masker)
    key = _subject_key(cfg)
    result: dict[str, Any] = {
        "database_id": db.id, "subject": f"{subject.table}.{subject.column}", "erased_at": at.isoformat(timespec="seconds"),
        "subject_digest": subject.digest(key) if key else None, "dry_run": bool(options.get("dry_run")),
        "plan": plan_dict(steps), "affected": done, **_backups(cfg, db, at)}
    if linked:
        result["linked"] = linked
    if done is not None:
        result["trail"] = record(cfg, "compliance.erase", db.id, {
            "subject": result["subject"], "subject_digest": result["subject_digest"], "affected": done,
            "linked": [{"database_id": c["database_id"], "subject": c["subject"]} for c in linked]})
    return result


def _subject_key(cfg: Config) -> bytes | None:
    section = cfg.database_scripts.compliance
    if section.trail_key_env or section.trail_key_file:
        return section.trail_key()
    if section.key_env or section.key_file:
        return section.anonymization_key()
    return None


def trail_verify(cfg: Config, anchor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify the trail's chain (and an exported anchor when given)."""
    trail = open_trail(cfg)
    if trail is None:
        raise ConfigError([("database_scripts.compliance.trail_key_file", "no trail key is configured")])
    try:
        result = {**trail.verify(anchor), "anchor": trail.head()}
        store = HistoryStore(cfg.fleet.resolved_history())
        try:
            result["history"] = check_history(trail, store.query(limit=10**9))
        finally:
            store.close()
        result["ok"] = bool(result["ok"] and result["history"]["ok"])
        return result
    finally:
        trail.engine.dispose()


ANCHORS = "compliance/trail-anchors/"


def _anchor_storage(cfg: Config) -> Any:
    from engines.storage import open_storage

    name, scfg = cfg.backup_storage()
    return open_storage(name, scfg)


def export_anchor(cfg: Config) -> dict[str, Any]:
    """Write the trail's head to the backup storage (``compliance/trail-anchors/<time>.json``), never replacing one."""
    trail = open_trail(cfg)
    if trail is None:
        raise ConfigError([("database_scripts.compliance.trail_key_file", "no trail key is configured")])
    try:
        head = {**trail.head(), "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    finally:
        trail.engine.dispose()
    key = f"{ANCHORS}{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}.json"
    _anchor_storage(cfg).put_new(key, json.dumps(head, sort_keys=True).encode())
    return {"key": key, **head}


def latest_anchor(cfg: Config) -> dict[str, Any] | None:
    """The newest exported anchor in the backup storage, if any."""
    storage = _anchor_storage(cfg)
    keys = sorted(info.key for info in storage.list(ANCHORS))
    return json.loads(storage.get(keys[-1])) if keys else None
