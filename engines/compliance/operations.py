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
from engines.compliance.erasure import backups_holding, eraser_class, parse_subject, plan_dict
from engines.compliance.scan import scan_database
from engines.compliance.trail import AuditTrail
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
    """Mask ``options.table`` in place with ``options.rules`` (column: rule)."""
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


def do_erase(db: DatabaseConfig, cfg: Config, options: dict[str, Any]) -> Result:
    """Plan (``dry_run``) or perform the erasure of ``options.subject`` (``table.column=value``)."""
    settings = settings_for(cfg, db, options)
    subject = parse_subject(str(options.get("subject") or ""))
    at = datetime.now(timezone.utc)
    with open_connector(db) as conn:
        eraser = eraser_class(db.kind)(conn, dict(settings.get("erasure_policies") or {}),
                                       dict(settings.get("erasure_rules") or {}))
        steps = eraser.plan(subject)
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
    if done is not None:
        result["trail"] = record(cfg, "compliance.erase", db.id, {
            "subject": result["subject"], "subject_digest": result["subject_digest"], "affected": done})
    return result, True, None


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
        return {**trail.verify(anchor), "anchor": trail.head()}
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
