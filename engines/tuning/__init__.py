"""Performance tuning: workload-driven index advice, index hygiene, settings, safe apply and revert.

One tuner class per kind (``engines.tuning.postgres:PostgresTuner`` ...) behind ``Tuner``; the
kinds registry (engines/kinds.py, the ``tuner`` column) names them.
"""

from __future__ import annotations

from typing import Any

from engines import kinds
from engines.config import DatabaseConfig
from engines.errors import ConfigError
from engines.tuning.base import AREAS, CannotTune, Change, Tuner, TuningReport, TuningSettings
from engines.tuning.targets import BadTarget, parse_targets


def tuner_class(kind: str) -> type[Tuner]:
    """The tuner class of ``kind`` from the kinds registry; a kind without one lists those that have one."""
    cls: type[Tuner] = kinds.load(kind, "tuner", "tuner")
    return cls


INTERVALS = {"daily": "0 4 * * *", "weekly": "0 4 * * 0"}


def analysis_cron(interval: str) -> str:
    """``performance_tuning.analysis_interval`` as a five-field cron (daily/weekly at 04:00 UTC, or as given)."""
    return INTERVALS.get(interval, interval)


VERIFY = ("plan", "execute")
OPERATOR_ONLY = frozenset({"apply_settings", "apply_mviews", "apply_partitions"})


def tuning_settings(section: dict[str, Any], options: dict[str, Any]) -> TuningSettings:
    """Settings from the ``performance_tuning`` section overlaid with one run's options.

    What may change the server beyond indexes (``apply_settings``, ``apply_mviews``) is the operator's
    decision in the config; a run option cannot turn it on."""
    overlay = {k: v for k, v in options.items() if v is not None and k not in OPERATOR_ONLY}
    merged = {**section, **overlay}
    only = merged.get("only") or AREAS
    if isinstance(only, str):
        only = [a.strip() for a in only.split(",") if a.strip()]
    unknown = sorted(set(only) - set(AREAS))
    if unknown:
        raise ConfigError([("only", f"unknown area(s) {', '.join(unknown)}; known: {', '.join(AREAS)}")])
    try:
        parse_targets(merged.get("optimization_targets"))
    except BadTarget as exc:
        raise ConfigError([("optimization_targets", str(exc))]) from None
    if isinstance(merged.get("optimization_targets"), str):
        merged["optimization_targets"] = [merged["optimization_targets"]]
    if merged.get("verify", "plan") not in VERIFY:
        raise ConfigError([("verify", f"unknown verify {merged['verify']!r}; known: {', '.join(VERIFY)} (execute: "
                                      "timed read-only executions of sampled parameters before and after)")])
    if merged.get("only") and "partitions" in only:
        merged["apply_partitions"] = True  # an apply converts tables only when the run names the area
    fields = TuningSettings.__dataclass_fields__
    kept = {k: v for k, v in merged.items() if k in fields and k != "only"}
    return TuningSettings(only=tuple(only), **kept)


def analyze(db: DatabaseConfig, settings: TuningSettings, memory: dict[str, Any] | None = None) -> TuningReport:
    """Analyse one database (read-only)."""
    return tuner_class(db.kind)(db, settings, memory).analyze()


def analyze_and_apply(db: DatabaseConfig, settings: TuningSettings,
                      memory: dict[str, Any] | None = None) -> TuningReport:
    """Analyse, then apply the proven advice safely; the report lists each change."""
    tuner = tuner_class(db.kind)(db, settings, memory)
    report = tuner.analyze()
    tuner.apply(report)
    return report


def revert(db: DatabaseConfig, settings: TuningSettings, change: dict[str, Any]) -> dict[str, Any]:
    """Undo one recorded change."""
    return tuner_class(db.kind)(db, settings).revert(change)


def refresh_view(db: DatabaseConfig, settings: TuningSettings, schema: str, view: str) -> dict[str, Any]:
    """Refresh one materialized view an apply created (what its beat entry runs)."""
    return tuner_class(db.kind)(db, settings).refresh(schema, view)


__all__ = ["AREAS", "analysis_cron", "CannotTune", "Change", "TuningReport", "TuningSettings", "analyze",
           "analyze_and_apply", "refresh_view", "revert", "tuner_class", "tuning_settings"]
