"""Monitoring: the alert rule language, rule evaluation with persisted state, and alert channels."""

from engines.monitoring.alerts import AlertRule, Evaluator, Notification, alert_id, compile_rules
from engines.monitoring.rules import RuleError, parse, parse_duration
from engines.monitoring.store import AlertStore

__all__ = ["AlertRule", "AlertStore", "Evaluator", "Notification", "RuleError", "alert_id", "compile_rules", "parse",
           "parse_duration"]
