"""Per-run options of the application API: checked on the client, applied on the worker, summarised.

Client side, :func:`prepare_options` resolves what the config can answer (``cloud_storage`` URL -> the
storage target that has that URL; custom metric names). Worker side, :func:`backup_run_options`
refuses options that contradict the repository. :func:`finish_result` shapes the typed result.
"""

from __future__ import annotations

from typing import Any

from engines.config import Config, DatabaseConfig
from engines.errors import ConfigError
from workers.operations import OperationResult, summarize

INCREMENTAL = ("every backup is content-defined-chunked and deduplicated against the repository: only chunks "
               "the repository does not hold yet are written (stats.new_bytes); an incremental backup is "
               "restored alone, without a chain of earlier backups")
FULL = "a complete, self-contained backup (also deduplicated against the repository: see stats.new_bytes)"
RETENTION_KEY = "dbfleet:retention-days:{}"  # a per-database retention_days set by a backup run, read by prune
TABLE_KINDS = ("postgresql", "mysql")


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def prepare_options(script: str, cfg: Config, db: DatabaseConfig, options: dict[str, Any]) -> dict[str, Any]:
    """Check and resolve one run's options against the config (before anything reaches the broker)."""
    if script == "backup":
        return _backup_options(cfg, db, options)
    if script == "monitoring":
        _check_metric_names(db, options)
    return options


def _backup_options(cfg: Config, db: DatabaseConfig, options: dict[str, Any]) -> dict[str, Any]:
    url = options.get("cloud_storage")
    if url:
        name = storage_for_url(cfg, str(url))
        if options.get("storage") not in (None, name):
            raise ConfigError([("config.cloud_storage", f"names storage target {name!r} but config.storage is "
                                                        f"{options['storage']!r}; give one of them")], "backup options")
        options["storage"] = name
    tables = options.get("tables")
    if tables is not None:
        if db.kind not in TABLE_KINDS:
            raise ConfigError([("config.tables", f"a table subset is supported for PostgreSQL and MySQL, not "
                                                 f"{db.kind} ({db.id})")], "backup options")
        if isinstance(tables, str):
            tables = [t.strip() for t in tables.split(",") if t.strip()]
        if not tables or not all(isinstance(t, str) and t for t in tables):
            raise ConfigError([("config.tables", "expected a non-empty list of table names")], "backup options")
        options["tables"] = list(tables)
    days = options.get("retention_days")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
        raise ConfigError([("config.retention_days", "expected a whole number of days, 1 or more")], "backup options")
    return options


def storage_for_url(cfg: Config, url: str) -> str:
    """The configured storage target whose URL is ``url`` (credentials come from its configured chain)."""
    from engines.errors import StorageError
    from engines.storage.s3 import parse_s3_url

    try:
        wanted = parse_s3_url(url)
    except StorageError as exc:
        raise ConfigError([("config.cloud_storage", str(exc))], "backup options") from None
    for name, target in cfg.storage.items():
        if target.type in ("s3", "minio") and target.url and parse_s3_url(target.url) == wanted:
            return name
    known = ", ".join(f"{n}={t.url}" for n, t in cfg.storage.items() if t.url) or "none with a url"
    raise ConfigError([("config.cloud_storage", f"no storage target has the URL {url!r} (configured: {known}); "
                                                "add it under storage: with its endpoint and key, credentials "
                                                "stay in the configured chain")], "backup options")


def _check_metric_names(db: DatabaseConfig, options: dict[str, Any]) -> None:
    from engines.monitoring.metrics import METRICS, host_metric_names

    known = set(METRICS) | set(db.metrics) | (host_metric_names() if db.host_metrics is not None else set())
    asked = list(options.get("metrics") or []) + list((options.get("alert_thresholds") or {}).keys())
    unknown = sorted({m for m in asked if m not in known})
    if unknown:
        raise ConfigError([("config.metrics", f"{db.id} has no metric {', '.join(map(repr, unknown))}: declare it "
                                              f"under databases.{db.id}.metrics (declared: "
                                              f"{', '.join(sorted(db.metrics)) or 'none'})")], "monitoring options")
    for name, value in (options.get("alert_thresholds") or {}).items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError([(f"config.alert_thresholds.{name}", "expected a number")], "monitoring options")


def backup_run_options(repo: Any, opts: dict[str, Any], default_type: str) -> dict[str, Any]:
    """Worker side: refuse options that contradict the repository; what the manifest and result record."""
    encrypted = repo.config.get("encryption", "none") != "none"
    if "encryption" in opts and _truthy(opts["encryption"]) != encrypted:
        state = "encrypted" if encrypted else "not encrypted"
        raise ConfigError([("config.encryption", f"the repository on {repo.storage.describe()} is {state}; "
                                                 "a run cannot change that: drop the option, or back up to a storage "
                                                 "target whose repository matches")], "backup options")
    backup_type = opts.get("backup_type") or default_type
    out: dict[str, Any] = {"backup_type": backup_type, "storage": opts.get("storage"),
                           "encryption": repo.config.get("encryption"),
                           "compression": "zstd" if _truthy(opts.get("compression", True)) else "none"}
    if opts.get("tables"):
        out["tables"], out["partial"] = list(opts["tables"]), True
    if opts.get("retention_days"):
        out["retention_days"] = int(opts["retention_days"])
    return out


def stored_retention_days(database_id: str) -> int | None:
    """The retention_days a backup run set for ``database_id`` (None: the config's policy)."""
    import json

    from workers import runtime

    try:
        raw = runtime.cache().get(RETENTION_KEY.format(database_id))
    except Exception:  # the cache is down: the config's policy applies
        return None
    return int(json.loads(raw)["retention_days"]) if raw else None


def describe_backup(result: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A backup result with what its options meant (incremental, partial, retention)."""
    result.update({k: v for k, v in extra.items() if v is not None})
    result["incremental"] = INCREMENTAL if extra.get("backup_type") == "incremental" else FULL
    return result


def finish_result(result: OperationResult, options: dict[str, Any]) -> OperationResult:
    """Shape a result by its options: a health summary unless ``detailed``; monitoring thresholds."""
    if result.operation in ("health_check", "monitoring") and result.payload.get("checks") is not None:
        if result.operation == "monitoring":
            result.summary["monitoring"] = monitoring_summary(result.payload, options)
        if "detailed" in options and not _truthy(options["detailed"]):
            result.payload = health_summary(result.payload)
        result.summary.update({k: v for k, v in summarize(result.payload).items() if k not in result.summary})
    return result


def health_summary(report: dict[str, Any]) -> dict[str, Any]:
    """A health report without its checks: status, counts by verdict, the failing checks' names."""
    checks = report.get("checks") or []
    counts: dict[str, int] = {}
    for c in checks:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    return {k: report.get(k) for k in ("database_id", "kind", "status", "checked_at", "duration_ms", "error")} | {
        "counts": counts, "checks_count": len(checks),
        "problems": [c["check"] for c in checks if c["status"] in ("warning", "critical")]}


def monitoring_summary(report: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The asked metrics' values and which of ``alert_thresholds`` they exceed."""
    from engines.monitoring.metrics import from_report

    values = from_report(report)
    asked = list(options.get("metrics") or [])
    thresholds = dict(options.get("alert_thresholds") or {})
    breaches = [{"metric": m, "value": values.get(m), "threshold": t} for m, t in thresholds.items()
                if values.get(m) is not None and float(values[m] or 0) > float(t)]
    return {"metrics": {m: values.get(m) for m in asked},
            "thresholds": thresholds, "breaches": breaches,
            "missing": sorted(m for m in [*asked, *thresholds] if values.get(m) is None)}
