"""PostgreSQL checks that read one server setting each (CIS PostgreSQL 16 sections 1, 3, 5, 6, 7).

One row per check: (id, CIS number, setting, predicate, what passes, severity, title). The
remediation is generated from the row: ``ALTER SYSTEM SET <setting> = <wanted>`` and a reload or
restart. Settings hidden from the auditing role (pg_settings omits them) make the check unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engines.security.registry import CheckSet, Unknowable, Verdict, verdict

_LEVELS = ("debug5", "debug4", "debug3", "debug2", "debug1", "info", "notice", "warning", "error", "log",
           "fatal", "panic")


def _at_most(level: str) -> Callable[[str], bool]:
    return lambda v: v in _LEVELS and _LEVELS.index(v) <= _LEVELS.index(level)


def _on(v: str) -> bool:
    return v == "on"


def _off(v: str) -> bool:
    return v == "off"


def _prefix_ok(v: str) -> bool:
    return any(t in v for t in ("%m", "%t", "%n")) and any(t in v for t in ("%p", "%c")) \
        and "%u" in v and "%d" in v and any(t in v for t in ("%h", "%r"))


def _not_wildcard(v: str) -> bool:
    return not ({a.strip() for a in v.split(",")} & {"*", "0.0.0.0", "::"})


# id, cis, setting, predicate, wanted (shown and used in the remediation), severity, title, needs restart
RULES: list[tuple[str, str | None, str, Callable[[str], bool], str, str, str, bool]] = [
    ("pg.data_checksums", "1.3.3", "data_checksums", _on, "on", "medium",
     "Data checksums detect silent corruption", True),
    ("pg.log_destination", "3.1.2", "log_destination", bool, "stderr (or csvlog/jsonlog/syslog)", "low",
     "Server log has a destination", False),
    ("pg.logging_collector", "3.1.3", "logging_collector", _on, "on", "low",
     "Logging collector captures the server log", True),
    ("pg.log_file_mode", "3.1.6", "log_file_mode", lambda v: v in ("0600", "0640"), "0600", "low",
     "Log files are not readable by other users", False),
    ("pg.log_truncate_on_rotation", "3.1.7", "log_truncate_on_rotation", _on, "on", "low",
     "Rotated logs are truncated, not appended", False),
    ("pg.syslog_sequence_numbers", "3.1.11", "syslog_sequence_numbers", _on, "on", "low",
     "Syslog messages are numbered (none suppressed)", False),
    ("pg.syslog_split_messages", "3.1.12", "syslog_split_messages", _on, "on", "low",
     "Long syslog messages are split, not lost", False),
    ("pg.log_min_messages", "3.1.14", "log_min_messages", _at_most("warning"), "warning", "low",
     "Warnings and worse reach the server log", False),
    ("pg.log_min_error_statement", "3.1.15", "log_min_error_statement", _at_most("error"), "error", "low",
     "Statements that cause errors are logged", False),
    ("pg.debug_print_parse", "3.1.16", "debug_print_parse", _off, "off", "low",
     "Parse trees are not written to the log", False),
    ("pg.debug_print_rewritten", "3.1.17", "debug_print_rewritten", _off, "off", "low",
     "Rewritten query trees are not written to the log", False),
    ("pg.debug_print_plan", "3.1.18", "debug_print_plan", _off, "off", "low",
     "Execution plans are not written to the log", False),
    ("pg.debug_pretty_print", "3.1.19", "debug_pretty_print", _on, "on", "info",
     "Debug output is indented when enabled", False),
    ("pg.log_connections", "3.1.20", "log_connections", lambda v: v not in ("off", ""), "on", "medium",
     "Successful connections are logged", False),
    ("pg.log_disconnections", "3.1.21", "log_disconnections", _on, "on", "medium",
     "Session ends are logged with their duration", False),
    ("pg.log_error_verbosity", "3.1.22", "log_error_verbosity", lambda v: v == "verbose", "verbose", "low",
     "Error messages are logged in full", False),
    ("pg.log_hostname", "3.1.23", "log_hostname", _off, "off", "low",
     "Logging does not reverse-resolve client addresses", False),
    ("pg.log_line_prefix", "3.1.24", "log_line_prefix", _prefix_ok,
     "'%m [%p]: user=%u,db=%d,app=%a,client=%h '", "low",
     "Log lines say when, which process, user, database and client", False),
    ("pg.log_statement", "3.1.25", "log_statement", lambda v: v in ("ddl", "mod", "all"), "ddl", "medium",
     "DDL statements are logged", False),
    ("pg.log_timezone", "3.1.26", "log_timezone", lambda v: v.upper() in ("UTC", "GMT", "ETC/UTC"), "UTC",
     "info", "Log timestamps are in UTC", False),
    ("pg.log_min_duration_statement", None, "log_min_duration_statement", lambda v: v != "-1", "1000",
     "low", "Slow statements are logged", False),
    ("pg.authentication_timeout", "5.4", "authentication_timeout", lambda v: v.isdigit() and int(v) <= 60,
     "60", "low", "Unauthenticated connections are dropped within 60 s", False),
    ("pg.password_encryption", "5.9", "password_encryption", lambda v: v == "scram-sha-256", "scram-sha-256",
     "high", "New passwords are stored as SCRAM-SHA-256", False),
    ("pg.ssl", "6.8", "ssl", _on, "on", "high", "TLS is enabled for client connections", False),
    ("pg.ssl_min_protocol_version", "6.8", "ssl_min_protocol_version", lambda v: v in ("TLSv1.2", "TLSv1.3"),
     "TLSv1.2", "medium", "TLS below 1.2 is refused", False),
    ("pg.listen_addresses", None, "listen_addresses", _not_wildcard, "the interfaces clients use", "medium",
     "The server does not listen on every interface", True),
    ("pg.fsync", None, "fsync", _on, "on", "high", "fsync is on (a crash cannot corrupt the cluster)", False),
    ("pg.full_page_writes", None, "full_page_writes", _on, "on", "high",
     "Full-page writes protect against torn pages", False),
    ("pg.log_replication_commands", "7.2", "log_replication_commands", _on, "on", "low",
     "Replication commands are logged", False),
    ("pg.archive_mode", "7.4", "archive_mode", lambda v: v in ("on", "always"), "on", "low",
     "WAL archiving is enabled (point-in-time recovery)", True),
    ("pg.lo_compat_privileges", None, "lo_compat_privileges", _off, "off", "medium",
     "Large objects keep their access checks", False),
    ("pg.allow_system_table_mods", None, "allow_system_table_mods", _off, "off", "medium",
     "System catalogs cannot be modified directly", False),
]


def _rule_check(setting: str, ok: Callable[[str], bool]) -> Callable[[Any], Verdict]:
    def run(probe: Any) -> Verdict:
        value = probe.setting(setting)
        return verdict(bool(ok(value)), **{setting: value})
    return run


def _remediation(setting: str, wanted: str, restart: bool) -> str:
    if setting == "data_checksums":
        return "stop the cluster and run pg_checksums --enable -D $PGDATA (or initdb --data-checksums)"
    if setting == "listen_addresses":
        return "ALTER SYSTEM SET listen_addresses = 'localhost, <the interface clients use>'; then restart"
    value = wanted if wanted.startswith("'") else f"'{wanted.split(' ')[0]}'"
    return f"ALTER SYSTEM SET {setting} = {value}; then " + ("restart PostgreSQL" if restart
                                                              else "SELECT pg_reload_conf();")


def register(checks: CheckSet) -> None:
    """Add every setting rule to ``checks``."""
    for cid, cis, setting, ok, wanted, severity, title, restart in RULES:
        checks.check(cid, title, severity, _remediation(setting, wanted, restart), cis)(_rule_check(setting, ok))


def require_setting(settings: dict[str, str], name: str, user: str) -> str:
    """A setting's value, or Unknowable when pg_settings hides it from ``user``."""
    if name not in settings:
        raise Unknowable(f"setting {name} is not visible to role {user!r} "
                         "(grant pg_read_all_settings to the auditing role)")
    return settings[name]
