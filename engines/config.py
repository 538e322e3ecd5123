"""dbfleet.yaml: pydantic models, ``${VAR}`` interpolation, ``DBFLEET_*`` overrides, the registry."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engines.dr.models import DisasterRecoverySection
from engines.errors import ConfigError, SecretMissingError, UnknownDatabaseError
from engines.kinds import DEFAULT_PORTS, KIND_ALIASES, KINDS
from engines.secrets import password_location, remember_url, resolve_secret, url_has_password

ENV_PREFIX = "DBFLEET_"
# Convenience names for the most common overrides; the general form is DBFLEET_A__B__C.
ENV_SHORTCUTS = {
    "DBFLEET_BROKER_URL": ("fleet", "broker_url"),
    "DBFLEET_RESULT_BACKEND": ("fleet", "result_backend"),
    "DBFLEET_STATE_DIR": ("fleet", "state_dir"),
    "DBFLEET_HISTORY_URL": ("fleet", "history_url"),
    # the DR_* names for the inline disaster_recovery group
    **{f"DR_{key.upper()}": ("database_scripts", "disaster_recovery", key) for key in (
        "strategy", "rto_minutes", "rpo_minutes", "auto_failover_enabled", "failover_after", "drill_schedule")},
    "DR_ENABLED": ("database_scripts", "disaster_recovery", "enabled"),  # false: beat neither observes nor drills
    "DR_AUTO_FAILOVER": ("database_scripts", "disaster_recovery", "auto_failover_enabled"),
}
_INTERP = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# the seed's alert_thresholds names -> health threshold names
SEED_THRESHOLDS = {"connection_count": "connections_percent", "query_performance_degradation": "query_regression_percent",
                   "disk_usage_percent": "disk_percent"}


class Thresholds(BaseModel):
    """Health thresholds; the seed's table gives the defaults."""

    model_config = ConfigDict(extra="allow")
    response_time_ms: float = 100.0
    connections_percent: float = 80.0
    replication_lag_seconds: float = 60.0
    query_regression_percent: float = 50.0
    disk_percent: float = 90.0
    cpu_percent: float = 80.0  # host CPU (node_exporter/psutil) and Redis used_cpu: docs/monitoring.md
    memory_percent: float = 85.0


METRIC_UNITS = {"number": "number", "count": "number", "%": "%", "percent": "%", "ms": "ms", "s": "s",
                "seconds": "s", "bytes": "bytes"}


class CustomMetric(_Model):
    """A metric a database declares: read-only ``sql``, a read-only ``redis`` command, or a ``count``."""

    sql: str | None = None  # PostgreSQL/MySQL/ClickHouse/SQLite: one row, first column numeric
    redis: str | None = None  # e.g. "SCARD online_users" (allow-listed read-only commands)
    count: dict[str, Any] | None = None  # MongoDB {collection, filter}, Elasticsearch {index, query}
    unit: str = "number"
    timeout: float = Field(default=5.0, gt=0, le=300)

    @model_validator(mode="after")
    def _one_source(self) -> CustomMetric:
        given = [k for k in ("sql", "redis", "count") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("declare exactly one of sql, redis, count")
        if self.unit not in METRIC_UNITS:
            raise ValueError(f"unit {self.unit!r}: known {', '.join(METRIC_UNITS)}")
        return self


class HostMetrics(_Model):
    """Where a database host's CPU, memory and disk use come from: node_exporter, or psutil (``local``)."""

    node_exporter_url: str | None = None  # http://host:9100/metrics
    local: bool = False  # the database runs on the worker's own host
    data_directory: str | None = None  # whose filesystem counts as ``disk_usage`` (default: /)
    timeout: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _source(self) -> HostMetrics:
        if bool(self.node_exporter_url) == self.local:
            raise ValueError("set node_exporter_url, or local: true (psutil on the worker), not both")
        if self.node_exporter_url and url_has_password(self.node_exporter_url):
            raise ValueError("node_exporter_url must not contain credentials")
        return self


class DatabaseBackupConfig(_Model):
    """Per-database backup settings (PostgreSQL physical backups and PITR: docs/pitr.md)."""

    method: Literal["logical", "physical"] = "logical"
    pitr_window: str | None = None  # e.g. "7d": prune keeps the base backups and WAL to recover any point in it
    incremental: bool = False  # PostgreSQL 17+: block-level incremental base backups
    data_dir: str | None = None  # the cluster's data directory on the worker's host: restore --in-place (docs/pitr.md)


class DatabaseConfig(_Model):
    """One database in the registry. Secrets are references, never values."""

    id: str = ""
    kind: str
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    user: str | None = None
    dsn: str | None = None
    path: str | None = None  # sqlite
    password_env: str | None = None
    password_file: str | None = None
    passfile: str | None = None  # libpq passfile (PostgreSQL)
    connect_timeout: float = 5.0
    query_timeout: float = 10.0
    tags: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    schedules: dict[str, str] = Field(default_factory=dict)
    backup: DatabaseBackupConfig = Field(default_factory=DatabaseBackupConfig)
    metrics: dict[str, CustomMetric] = Field(default_factory=dict)  # custom metrics: docs/monitoring.md
    host_metrics: HostMetrics | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        kind = KIND_ALIASES.get(v.strip().lower())
        if kind is None:
            raise ValueError(f"unknown kind {v!r}; known: {', '.join(sorted(KINDS))} "
                             f"(aliases: {', '.join(sorted(set(KIND_ALIASES) - set(KINDS)))})")
        return kind

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        where = password_location(v) if v else None
        if where:
            raise ValueError(f"dsn must not contain a password (found in {where}); "
                             "use password_env or password_file")
        return v

    @field_validator("schedules")
    @classmethod
    def _crons(cls, v: dict[str, str]) -> dict[str, str]:
        for script, cron in v.items():
            check_cron(cron, script)
        return v

    @model_validator(mode="after")
    def _where(self) -> DatabaseConfig:
        if self.password_env and self.password_file:
            raise ValueError("set only one of password_env and password_file")
        if KINDS[self.kind].file_based:
            if not self.path:
                raise ValueError(f"{self.kind} databases need 'path'")
        elif not (self.host or self.dsn):
            raise ValueError("set 'host' (and port, dbname, user) or 'dsn'")
        if self.port is None and self.host:
            self.port = DEFAULT_PORTS.get(self.kind)
        return self

    def password(self) -> str | None:
        """Resolve this database's password in the current process."""
        return resolve_secret(f"database {self.id!r}", env=self.password_env, file=self.password_file)

    def public(self) -> dict[str, Any]:
        """A description safe to show anywhere (no secret values)."""
        return self.model_dump(exclude={"options", "thresholds"}, exclude_none=True)


STORAGE_TYPES = frozenset({"filesystem", "file", "local", "posix", "s3", "minio"})


class StorageConfig(BaseModel):
    """A backup repository target (used by the backup engine)."""

    model_config = ConfigDict(extra="allow")
    type: str
    path: str | None = None
    url: str | None = None
    endpoint_url: str | None = None
    # the repository key that wraps the data key: a file, an env var, or a passphrase env var
    key_file: str | None = None
    key_env: str | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in STORAGE_TYPES:
            raise ValueError(f"unknown storage type {v!r}; known: {', '.join(sorted(STORAGE_TYPES))}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        where = password_location(v) if v else None
        if where:
            raise ValueError(f"url must not contain credentials (found in {where}); use access_key_env/secret_key_env")
        return v

    def key_secret(self, name: str) -> str | None:
        """The repository key (key_file or key_env), resolved in this process."""
        return resolve_secret(f"storage {name!r} key", env=self.key_env, file=self.key_file)


class FlowerConfig(_Model):
    address: str = "127.0.0.1"
    port: int = 5555
    user: str = "admin"
    password_env: str | None = "DBFLEET_FLOWER_PASSWORD"
    password_file: str | None = None

    def password(self) -> str | None:
        """The basic-auth password, or None when none is configured."""
        try:
            return resolve_secret("flower", env=self.password_env, file=self.password_file)
        except Exception:
            if self.password_file:
                raise
            return None


class ExporterConfig(_Model):
    address: str = "127.0.0.1"
    port: int = 9808
    # basic auth (user + password) and/or a bearer token; none of them: /metrics is open, as node_exporter's
    # is by default (docs/security.md). A user without a password source is a config error, never open.
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None

    @model_validator(mode="after")
    def _fail_closed(self) -> ExporterConfig:
        if self.user and not (self.password_env or self.password_file):
            raise ValueError("exporter.user is set but no password source: set exporter.password_env or "
                             "exporter.password_file (or remove user)")
        if (self.password_env or self.password_file) and not self.user:
            raise ValueError("exporter.password_env/password_file need exporter.user (the basic-auth user name)")
        return self


class TracingConfig(_Model):
    """``fleet.tracing``: OpenTelemetry spans for tasks and engine phases over OTLP/HTTP (workers/tracing.py);
    off unless ``otlp_endpoint`` (or OTEL_EXPORTER_OTLP_ENDPOINT) is set."""

    otlp_endpoint: str | None = None  # e.g. http://jaeger:4318 (the collector's OTLP/HTTP port)
    service_name: str = "dbfleet"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    flush_interval_ms: int = Field(default=1000, ge=10, le=60_000)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"https?://[^/\s]+", v):
            raise ValueError(f"{v!r}: expected http(s)://host:port of an OTLP/HTTP collector, e.g. http://jaeger:4318")
        where = password_location(v)
        if where:
            raise ValueError(f"otlp_endpoint must not contain credentials (found in {where}); a collector token "
                             "goes in OTEL_EXPORTER_OTLP_HEADERS on the workers")
        return v


class ApiConfig(_Model):
    """The monitoring REST + WebSocket API (`dbfleet api`): it never runs without a token."""

    address: str = "127.0.0.1"
    port: int = 8088
    # token sources, first found wins: token_file, the token_env variable, <state_dir>/secrets/api.token
    token_env: str | None = "DBFLEET_API_TOKEN"
    token_file: str | None = None


class InlineSecrets(_Model):
    """What secret references an inline database config may name (only with allow_inline_databases)."""

    env_prefix: str | None = None  # e.g. DBFLEET_INLINE_: password_env and other *_env must start with it
    file_dir: str | None = None  # password_file, passfile and other *_file must resolve inside it


class FleetConfig(_Model):
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None
    cache_url: str | None = None  # a Redis for health results and redbeat; default: a Redis above
    history_url: str | None = None
    state_dir: str | None = None
    visibility_timeout: int | None = None
    # passed to kombu as is, e.g. {unacked_restore_interval: 1} with a short visibility_timeout
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)
    time_limits: dict[str, int] = Field(default_factory=dict)  # hard seconds per queue
    soft_time_limits: dict[str, int] = Field(default_factory=dict)  # default: 90 % of the hard limit
    max_deliveries: int = Field(default=3, ge=1)  # a task that killed its worker this often is failed, not rerun
    extra_task_modules: list[str] = Field(default_factory=list)  # more task modules to import (tests, plugins)
    worker_groups: dict[str, list[str]] = Field(default_factory=lambda: {
        "backups": ["backups"],
        "ops": ["health", "audits", "tuning", "compliance"],
        "long": ["migrations", "dr"],
    })
    flower: FlowerConfig = Field(default_factory=FlowerConfig)
    exporter: ExporterConfig = Field(default_factory=ExporterConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    # inline database configs (a dict instead of a registry id) from callers: off unless the operator turns
    # them on, and then their secret references are limited to inline_secrets (docs/security.md)
    allow_inline_databases: bool = False
    inline_secrets: InlineSecrets = Field(default_factory=InlineSecrets)
    # URLs with a password come from these environment variables instead (no password in dbfleet.yaml)
    broker_url_env: str | None = None
    result_backend_env: str | None = None
    cache_url_env: str | None = None
    history_url_env: str | None = None

    @model_validator(mode="after")
    def _urls_from_env(self) -> FleetConfig:
        for name in ("broker_url", "result_backend", "cache_url", "history_url"):
            env = getattr(self, f"{name}_env")
            if env:
                try:
                    url = resolve_secret(f"fleet.{name}_env", env=env)  # registered with the scrubber
                except SecretMissingError as exc:
                    raise ValueError(str(exc)) from None
                if not url:
                    raise ValueError(f"{name}_env: environment variable {env} is empty")
                setattr(self, name, url)
        return self

    @field_validator("time_limits")
    @classmethod
    def _limits(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(q for q, seconds in v.items() if seconds < 2)
        if bad:
            raise ValueError(f"time_limits of {', '.join(bad)}: at least 2 seconds (the soft limit comes first)")
        return v

    @model_validator(mode="after")
    def _soft_before_hard(self) -> FleetConfig:
        for queue, soft in self.soft_time_limits.items():
            hard = self.time_limits.get(queue)
            if soft < 1 or (hard is not None and soft >= hard):
                raise ValueError(f"soft_time_limits.{queue}: {soft} s must be at least 1 and below the hard "
                                 f"limit{f' ({hard} s)' if hard is not None else ''}")
        return self

    @model_validator(mode="after")
    def _scrub_urls(self) -> FleetConfig:
        for url in (self.broker_url, self.result_backend, self.cache_url, self.history_url):
            remember_url(url)  # their passwords never reach a log, a result or history
        return self

    def state_path(self) -> Path:
        """The directory dbfleet writes its own files to."""
        return Path(self.state_dir or platformdirs.user_data_dir("dbfleet")).expanduser()

    def resolved_backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return "redis://127.0.0.1:6379/0"

    def resolved_cache(self) -> str:
        if self.cache_url:
            return self.cache_url
        backend = self.resolved_backend()
        return backend if backend.startswith(("redis://", "rediss://")) else "redis://127.0.0.1:6379/0"

    def resolved_history(self) -> str:
        return self.history_url or f"sqlite:///{self.state_path() / 'history.db'}"


class AlertRuleConfig(_Model):
    """One alert rule: ``expr`` in the rule language (engines/monitoring/rules.py), pending for ``for``."""

    name: str
    expr: str
    for_: str = Field(default="0s", alias="for")
    severity: Literal["critical", "warning", "info"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    channels: list[str] | None = None  # default: monitoring.alert_channels
    databases: list[str] | None = None  # default: every database
    tags: list[str] | None = None  # only databases with one of these tags
    repeat_interval: str | None = None  # default: monitoring.repeat_interval
    summary: str | None = None


class SlackConfig(_Model):
    webhook_url_env: str | None = None  # an incoming-webhook URL is a secret
    webhook_url_file: str | None = None


class SmtpConfig(_Model):
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    sender: str = "dbfleet@localhost"
    timeout: float = 10.0
    allow_plaintext_auth: bool = False  # with an explicit starttls: false, log in over a plain connection

    @model_validator(mode="after")
    def _tls(self) -> SmtpConfig:
        if self.user and not self.starttls and not self.plaintext_login_allowed():
            raise ValueError("a login (user) over SMTP without TLS sends the password in clear: set starttls: true, "
                             "or write starttls: false and allow_plaintext_auth: true to accept that")
        return self

    def plaintext_login_allowed(self) -> bool:
        """True when the operator wrote starttls: false and allow_plaintext_auth: true."""
        return "starttls" in self.model_fields_set and not self.starttls and self.allow_plaintext_auth


class WebhookConfig(_Model):
    url: str
    token_env: str | None = None  # sent as Authorization: Bearer

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        where = password_location(v)
        if where:
            raise ValueError(f"url must not contain credentials (found in {where}); use token_env")
        return v


class PagerDutyConfig(_Model):
    routing_key_env: str | None = None
    routing_key_file: str | None = None
    url: str = "https://events.pagerduty.com/v2/enqueue"


CHANNEL_TYPES = ("slack", "email", "webhook", "pagerduty", "log")


class MonitoringSection(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    enabled: bool = True
    interval_seconds: int = 30
    alert_thresholds: dict[str, Any] = Field(default_factory=dict)
    alert_channels: list[str] = Field(default_factory=list)
    alert_rules: list[AlertRuleConfig] = Field(default_factory=list)
    repeat_interval: str = "4h"
    slack: dict[str, SlackConfig] = Field(default_factory=dict)
    smtp: SmtpConfig | None = None
    webhooks: dict[str, WebhookConfig] = Field(default_factory=dict)
    pagerduty: dict[str, PagerDutyConfig] = Field(default_factory=dict)
    delivery_attempts: int = Field(default=3, ge=1, le=10)
    delivery_backoff_seconds: float = Field(default=1.0, ge=0)
    max_silence: str = "7d"  # the longest silence the API accepts
    prometheus_port: int | None = None
    websocket_port: int | None = None
    _custom_units: dict[str, str] = PrivateAttr(default_factory=dict)

    def custom_units(self) -> dict[str, str]:
        """Custom metric name -> unit kind, from every database's ``metrics`` (set by the Config)."""
        return dict(self._custom_units)

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> MonitoringSection:
        self._custom_units = dict((info.context or {}).get("custom_metrics") or {})
        for channel in self.alert_channels:
            self.check_channel(channel)
        if not self.alert_rules and "max_silence" not in self.model_fields_set:
            return self  # the rule parser's imports cost ~0.4 s CPU (`dbfleet wal push` runs per WAL file)
        from engines.monitoring.metrics import known_metrics
        from engines.monitoring.rules import RuleError, parse, parse_duration

        names = [r.name for r in self.alert_rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"alert_rules: duplicate names {', '.join(dupes)}")
        for i, rule in enumerate(self.alert_rules):
            try:
                parse(rule.expr, known_metrics(self._custom_units))
            except RuleError as exc:
                raise ValueError(f"alert_rules[{i}] ({rule.name}): {exc.message} at position "
                                 f"{exc.position + 1}\n    {exc.caret().replace(chr(10), chr(10) + '    ')}") from None
            for what, text in (("for", rule.for_), ("repeat_interval", rule.repeat_interval or self.repeat_interval)):
                try:
                    parse_duration(text)
                except ValueError as exc:
                    raise ValueError(f"alert_rules[{i}] ({rule.name}).{what}: {exc}") from None
            for channel in rule.channels or self.alert_channels:
                self.check_channel(channel)
        try:
            parse_duration(self.max_silence)
        except ValueError as exc:
            raise ValueError(f"max_silence: {exc}") from None
        return self

    def check_channel(self, channel: str) -> None:
        """``slack:<name>``, ``email:<address>``, ``webhook:<name>``, ``pagerduty:<name>`` or ``log``."""
        kind, _, target = channel.partition(":")
        if kind not in CHANNEL_TYPES:
            raise ValueError(f"channel {channel!r}: unknown type {kind!r} (known: {', '.join(CHANNEL_TYPES)})")
        tables: dict[str, dict[str, Any]] = {"slack": self.slack, "webhook": self.webhooks, "pagerduty": self.pagerduty}
        table = tables.get(kind)
        if table is not None and target not in table:
            raise ValueError(f"channel {channel!r}: no monitoring.{kind if kind != 'webhook' else 'webhooks'}."
                             f"{target or '<name>'} is configured")
        if kind == "email" and "@" not in target:
            raise ValueError(f"channel {channel!r}: expected email:<address>")
        if kind == "email" and self.smtp is None:
            raise ValueError(f"channel {channel!r}: configure monitoring.smtp to send e-mail")


class RetentionPolicy(_Model):
    """restic-style: keep the newest backup of each of the last N days/weeks/months/years."""

    last: int = Field(default=0, ge=0)
    daily: int = Field(default=0, ge=0)
    weekly: int = Field(default=0, ge=0)
    monthly: int = Field(default=0, ge=0)
    yearly: int = Field(default=0, ge=0)


class BackupSection(BaseModel):
    model_config = ConfigDict(extra="allow")
    enabled: bool = True
    schedule: str | None = None
    retention_days: int | None = Field(default=None, ge=1)
    retention: RetentionPolicy | None = None
    backup_type: Literal["full", "incremental"] = "full"  # both deduplicate; see docs/backup-repository.md
    compression: bool = True
    compression_level: int = Field(default=3, ge=1, le=22)
    encryption: bool = True
    storage: str | None = None
    verify_schedule: str | None = None
    drill_schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return check_cron(v, "backup") if v else v

    @field_validator("verify_schedule", "drill_schedule")
    @classmethod
    def _crons(cls, v: str | None) -> str | None:
        return check_cron(v, "backup") if v else v


class AuditSection(BaseModel):
    """``database_scripts.security_audit``: schedule and defaults; other keys are check options
    (``expected_superusers``, ``allowed_createrole``, ``pii_tables`` ...), overridable per database
    under ``options.security_audit``."""

    model_config = ConfigDict(extra="allow")
    enabled: bool = True
    schedule: str | None = "0 3 * * 0"  # weekly, Sunday 03:00
    exclude: list[str] = Field(default_factory=list)
    fail_on: Literal["critical", "high", "medium", "low", "info", "none"] = "high"

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return check_cron(v, "security_audit") if v else v


class TuningSection(BaseModel):
    """``database_scripts.performance_tuning`` (docs/tuning.md); other keys (``host``, ``max_queries``,
    ``lock_timeout_ms`` ...) pass to the tuner as options."""

    model_config = ConfigDict(extra="allow")
    enabled: bool = True
    analysis_interval: str = "daily"  # daily, weekly or a five-field cron
    auto_apply: bool = False
    optimize_for: Literal["oltp", "analytical_queries", "mixed"] = "mixed"
    min_cost_savings: float = Field(default=50.0, gt=0, le=100)  # percent
    maintenance_window: str | None = None  # "HH:MM-HH:MM" UTC; apply runs only inside it unless --now
    create_materialized_views: bool = False
    partitioning_strategy: Literal["time_based", "none"] = "none"
    optimization_targets: list[str] = Field(default_factory=list)
    apply_settings: Literal["never", "reload_only"] = "never"  # reload_only: ALTER SYSTEM + pg_reload_conf
    apply_mviews: bool = False  # --apply also creates the advised materialized views
    verify: Literal["plan", "execute"] = "plan"  # execute: timed read-only runs decide keep/rollback (docs/tuning.md)

    @field_validator("analysis_interval")
    @classmethod
    def _interval(cls, v: str) -> str:
        return v if v in ("daily", "weekly") else check_cron(v, "performance_tuning.analysis_interval")

    @field_validator("optimization_targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        from engines.tuning.targets import parse_targets  # the tuning engine reads them (docs/tuning.md)

        parse_targets(v)  # BadTarget is a ValueError: pydantic reports it with the field's path
        return v

    @field_validator("maintenance_window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"maintenance_window {v!r}: expected HH:MM-HH:MM (UTC), e.g. 02:00-04:00")
        return v


class ComplianceSection(BaseModel):
    """``database_scripts.compliance``: discovery sampling, key references (anonymisation, trail), erasure
    policies; overridable per database under ``options.compliance``. Keys are references, never values."""

    model_config = ConfigDict(extra="allow")
    enabled: bool = True
    sample_size: int = Field(default=100, ge=5, le=10_000)
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    statement_timeout_seconds: float = Field(default=10.0, gt=0)
    security_audit: bool = True  # run the security audit as evidence for the standards
    key_file: str | None = None  # anonymisation HMAC key (held like the repository key)
    key_env: str | None = None
    trail_key_file: str | None = None  # HMAC key of the tamper-evident trail
    trail_key_env: str | None = None
    anchor_schedule: str | None = "30 0 * * *"  # cron: export the trail's head to the backup storage (beat)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    erasure_policies: dict[str, Literal["delete", "anonymize", "keep"]] = Field(default_factory=dict)
    erasure_rules: dict[str, dict[str, str]] = Field(default_factory=dict)  # table -> column -> rule
    # cross-database subject links: [{from: users.email, database: crm, to: contacts.email}] (erasure follows them)
    erasure_links: list[dict[str, str]] = Field(default_factory=list)

    @field_validator("erasure_links")
    @classmethod
    def _links(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        from engines.compliance.erasure import parse_links  # the shape check lives with the eraser

        try:
            parse_links(v)
        except ConfigError as exc:
            raise ValueError("; ".join(f"{p}: {m}" for p, m in exc.problems)) from None
        return v

    def anonymization_key(self) -> bytes:
        """The anonymisation key (key_file or key_env), resolved in this process."""
        return _key_bytes("compliance anonymisation key", self.key_env, self.key_file, "key_file/key_env")

    def trail_key(self) -> bytes:
        """The trail's HMAC key (trail_key_file or trail_key_env), resolved in this process."""
        return _key_bytes("compliance trail key", self.trail_key_env, self.trail_key_file,
                          "trail_key_file/trail_key_env")


def _key_bytes(owner: str, env: str | None, file: str | None, fields: str) -> bytes:
    value = resolve_secret(owner, env=env, file=file)
    if not value:
        raise ConfigError([(f"database_scripts.compliance.{fields.split('/')[0]}",
                            f"{owner} is not configured: set database_scripts.compliance.{fields}")])
    if len(value.encode()) < 16:
        raise ConfigError([(f"database_scripts.compliance.{fields.split('/')[0]}", f"{owner} must be >= 16 bytes")])
    return value.encode()


class ScriptsSection(BaseModel):
    """The seed's ``database_scripts:`` block. Sections later engines read stay open."""

    model_config = ConfigDict(extra="allow")
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection)
    backup: BackupSection = Field(default_factory=BackupSection)
    performance_tuning: TuningSection = Field(default_factory=TuningSection)
    disaster_recovery: DisasterRecoverySection = Field(default_factory=DisasterRecoverySection)
    security_audit: AuditSection = Field(default_factory=AuditSection)
    compliance: ComplianceSection = Field(default_factory=ComplianceSection)


class ScheduleConfig(_Model):
    """A static schedule: run ``script`` on ``database`` at ``cron``."""

    script: str
    database: str
    cron: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return check_cron(v, "schedule")


class Config(_Model):
    """The whole dbfleet.yaml."""

    fleet: FleetConfig = Field(default_factory=FleetConfig)
    databases: dict[str, DatabaseConfig] = Field(default_factory=dict)
    storage: dict[str, StorageConfig] = Field(default_factory=dict)
    database_scripts: ScriptsSection = Field(default_factory=ScriptsSection)
    schedules: dict[str, ScheduleConfig] = Field(default_factory=dict)
    source: str = "defaults"

    @model_validator(mode="after")
    def _ids(self) -> Config:
        seeded = {SEED_THRESHOLDS.get(k, k): v for k, v in self.database_scripts.monitoring.alert_thresholds.items()}
        for key, db in self.databases.items():
            db.id = key
            for name, value in seeded.items():  # the seed's alert_thresholds are defaults; a database's own win
                if name not in db.thresholds.model_fields_set and name not in (db.thresholds.model_extra or {}):
                    setattr(db.thresholds, name, value)
        mon = self.database_scripts.monitoring  # the documented ports serve the exporter and the API's WebSocket
        if mon.prometheus_port and "port" not in self.fleet.exporter.model_fields_set:
            self.fleet.exporter.port = mon.prometheus_port
        if mon.websocket_port and "port" not in self.fleet.api.model_fields_set:
            self.fleet.api.port = mon.websocket_port
        units = custom_metric_units({"databases": {k: db.model_dump() for k, db in self.databases.items()}})
        self.database_scripts.monitoring._custom_units.update(units)
        target = self.database_scripts.backup.storage
        if target and target not in self.storage:
            raise ValueError(f"database_scripts.backup.storage: unknown storage target {target!r}")
        for name, sched in self.schedules.items():
            if sched.database not in self.databases:
                raise ValueError(f"schedules.{name}: unknown database id {sched.database!r}")
        for dr_id, group in self.database_scripts.disaster_recovery.all_groups().items():
            for site in group.sites():
                if site.database not in self.databases:
                    raise ValueError(f"disaster_recovery ({dr_id}): unknown database id {site.database!r}")
        return self

    def backup_storage(self, name: str | None = None) -> tuple[str, StorageConfig]:
        """The storage target backups go to: ``name``, ``backup.storage``, or the only one configured."""
        name = name or self.database_scripts.backup.storage
        if name is None:
            if len(self.storage) != 1:
                problem = ("no storage target is configured" if not self.storage else
                           f"several storage targets ({', '.join(sorted(self.storage))}); set backup.storage")
                raise ConfigError([("database_scripts.backup.storage", problem)], self.source)
            name = next(iter(self.storage))
        if name not in self.storage:
            known = ", ".join(sorted(self.storage)) or "none configured"
            raise ConfigError([("storage", f"unknown storage target {name!r} (known: {known})")], self.source)
        return name, self.storage[name]

    def database(self, database_id: str) -> DatabaseConfig:
        """Look a database up by id; unknown ids raise :class:`UnknownDatabaseError`."""
        try:
            return self.databases[database_id]
        except KeyError:
            raise UnknownDatabaseError(database_id, list(self.databases)) from None


def check_cron(expr: str, what: str) -> str:
    """Validate a five-field cron string."""
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise ValueError(f"{what}: {expr!r} is not a valid five-field cron expression")
    return expr


def interpolate(value: Any, path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a YAML tree."""
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group("name"), m.group("default")
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError([(path, f"environment variable {name} is not set (used as ${{{name}}})")])

    return _INTERP.sub(sub, value)


def env_overrides(environ: dict[str, str] | None = None) -> list[tuple[tuple[str, ...], Any]]:
    """``DBFLEET_FLEET__BROKER_URL=x`` -> ((fleet, broker_url), x); values parsed as YAML scalars."""
    environ = dict(os.environ if environ is None else environ)
    out: list[tuple[tuple[str, ...], Any]] = []
    for name, raw in sorted(environ.items()):
        if name in ENV_SHORTCUTS:
            out.append((ENV_SHORTCUTS[name], raw))
        elif name.startswith(ENV_PREFIX) and "__" in name:
            keys = tuple(k.lower() for k in name[len(ENV_PREFIX):].split("__"))
            try:
                value = yaml.safe_load(raw) if raw else raw
            except yaml.YAMLError:
                value = raw
            out.append((keys, value))
    return out


def _apply(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = node[key] = {}
        node = nxt
    node[keys[-1]] = value


def default_config_path() -> Path | None:
    """DBFLEET_CONFIG, else ./dbfleet.yaml when it exists."""
    if os.environ.get("DBFLEET_CONFIG"):
        return Path(os.environ["DBFLEET_CONFIG"])
    local = Path("dbfleet.yaml")
    return local if local.exists() else None


def parse_config(text: str, source: str = "dbfleet.yaml",
                 environ: dict[str, str] | None = None) -> Config:
    """Parse YAML text into a :class:`Config`, reporting every problem with its field path."""
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([(where, f"malformed YAML: {getattr(exc, 'problem', exc)}")], source) from None
    if not isinstance(tree, dict):
        raise ConfigError([("", "top level must be a mapping")], source)
    try:
        tree = interpolate(tree)
    except ConfigError as exc:
        raise ConfigError(exc.problems, source) from None
    from engines.config_env import apply_documented_env

    apply_documented_env(tree, dict(os.environ if environ is None else environ))  # below DBFLEET_* overrides
    for keys, value in env_overrides(environ):
        _apply(tree, keys, value)
    tree["source"] = source
    try:
        return Config.model_validate(tree, context={"custom_metrics": custom_metric_units(tree)})
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, "))
                    for err in exc.errors()]
        raise ConfigError(problems, source) from None


def custom_metric_units(tree: dict[str, Any]) -> dict[str, str]:
    """Every database's custom metric names with their unit kind (the rule language's view of them)."""
    out: dict[str, str] = {}
    for db in (tree.get("databases") or {}).values():
        for name, spec in ((db or {}).get("metrics") or {}).items() if isinstance(db, dict) else ():
            unit = spec.get("unit", "number") if isinstance(spec, dict) else "number"
            out[str(name)] = METRIC_UNITS.get(str(unit), "number")
        if isinstance(db, dict) and db.get("host_metrics"):
            out.update({"cpu_usage": "%", "memory_usage": "%", "disk_usage": "%"})
    return out


def load_config(path: str | Path | None = None) -> Config:
    """Load dbfleet.yaml (or defaults plus env overrides when there is no file)."""
    path = Path(path) if path else default_config_path()
    if path is None:
        return parse_config("{}", "defaults")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    return parse_config(text, str(path))
