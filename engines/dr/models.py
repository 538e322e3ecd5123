"""Typed DR models: the ``disaster_recovery:`` section, a DR group, and the results engines return."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SLOT_UNSAFE = re.compile(r"[^a-z0-9_]")


class DRStrategy(str, Enum):
    """How the secondary site is kept: a streaming replica, a WAL-fed replica, or backups only."""

    HOT_STANDBY = "hot_standby"
    WARM_STANDBY = "warm_standby"
    BACKUP_RESTORE = "backup_restore"


class Site(BaseModel):
    """One node of a DR group: a registry database id, and its data directory when this worker manages it."""

    model_config = ConfigDict(extra="forbid")
    database: str
    data_dir: str | None = None
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_id(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"database": value}
        if isinstance(value, dict) and "database" not in value and "database_id" in value:
            value = dict(value)
            value["database"] = value.pop("database_id")
        return value


class DRConfiguration(BaseModel):
    """One DR group: a primary, its standbys, targets, and the hooks that fence and redirect."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)
    dr_id: str = "default"
    strategy: DRStrategy = DRStrategy.HOT_STANDBY
    primary_site: Site | None = None
    secondary_sites: list[Site] = Field(default_factory=list)
    rto_minutes: float = Field(default=15.0, gt=0)
    rpo_minutes: float = Field(default=5.0, ge=0)
    auto_failover_enabled: bool = False
    failover_after: float = Field(default=5.0, gt=0, description="seconds the primary must be unreachable")
    min_observers: int = Field(default=2, ge=1)
    restart_in_place: bool = True  # a worker on the primary's host restarts a crashed postmaster first
    lease_ttl: float = Field(default=60.0, gt=0)
    fence_command: list[str] = Field(default_factory=list)
    redirect_command: list[str] = Field(default_factory=list)
    command_timeout: float = Field(default=60.0, gt=0)
    drill_schedule: str | None = None
    observe_interval_seconds: int = Field(default=2, ge=1)
    replication_user: str = "replicator"
    replication_password_env: str | None = None
    replication_password_file: str | None = None
    synchronous: bool = False  # the primary waits for ANY 1 of the standbys (synchronous_standby_names)
    synchronous_commit: str = "on"
    repository: str | None = None  # storage target of the repository (warm_standby, backup_restore); None: default
    archive_database: str | None = None  # whose WAL archive feeds warm standbys (default: the primary site)
    restore_data_dir: str | None = None  # backup_restore: where failover restores the newest backup
    restore_port: int | None = Field(default=None, ge=1, le=65535)  # backup_restore: its port
    restore_database: str | None = None  # backup_restore: the registry id that names the restored server

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, value: Any) -> Any:
        """The seed's ``failover: manual|automatic`` spelling of ``auto_failover_enabled``."""
        if isinstance(value, dict) and "failover" in value:
            value = dict(value)
            mode = str(value.pop("failover")).strip().lower()
            if mode not in ("manual", "automatic", "auto"):
                raise ValueError(f"failover: {mode!r} is not 'manual' or 'automatic'")
            value.setdefault("auto_failover_enabled", mode != "manual")
        return value

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, v: Any) -> Any:
        return v.strip().lower().replace("-", "_") if isinstance(v, str) else v

    @field_validator("fence_command", "redirect_command", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError("give the command as an argv list (no shell), e.g. [ssh, db1, systemctl, stop, postgresql]")
        return v

    @field_validator("synchronous_commit")
    @classmethod
    def _sync_commit(cls, v: str) -> str:
        allowed = ("on", "remote_write", "remote_apply")
        if v not in allowed:
            raise ValueError(f"synchronous_commit: {v!r} is not one of {', '.join(allowed)} (the levels that wait "
                             "for a standby)")
        return v

    @field_validator("drill_schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v and (len(v.split()) != 5 or not croniter.is_valid(v)):
            raise ValueError(f"drill_schedule: {v!r} is not a valid five-field cron expression")
        return v

    @model_validator(mode="after")
    def _sites(self) -> DRConfiguration:
        ids = [s.database for s in self.sites()]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"a database may appear once in a DR group: {', '.join(dupes)}")
        if self.synchronous and self.strategy != DRStrategy.HOT_STANDBY:
            raise ValueError("synchronous: true needs strategy hot_standby (a streaming standby acknowledges commits)")
        if self.primary_site and not self.secondary_sites and self.strategy != DRStrategy.BACKUP_RESTORE:
            raise ValueError(f"strategy {self.strategy.value} needs at least one secondary site")
        return self

    @property
    def configured(self) -> bool:
        """True when the group names its primary site."""
        return self.primary_site is not None

    @property
    def rpo_seconds(self) -> float:
        return self.rpo_minutes * 60.0

    @property
    def rto_seconds(self) -> float:
        return self.rto_minutes * 60.0

    def sites(self) -> list[Site]:
        """Every site, the configured primary first."""
        return ([self.primary_site] if self.primary_site else []) + list(self.secondary_sites)

    def site(self, database_id: str) -> Site:
        """The site of ``database_id`` in this group."""
        for site in self.sites():
            if site.database == database_id:
                return site
        raise KeyError(database_id)

    def slot_name(self, database_id: str) -> str:
        """The physical replication slot a standby uses (lower-case, ``[a-z0-9_]``)."""
        return _SLOT_UNSAFE.sub("_", f"dbfleet_{self.dr_id}_{database_id}".lower())[:63]

    def __getitem__(self, key: str) -> Any:
        """Mapping-style reads (``section["rpo_minutes"]``), as the untyped section allowed."""
        return getattr(self, key)


class DisasterRecoverySection(DRConfiguration):
    """``database_scripts.disaster_recovery``: one DR group inline, more under ``groups``."""

    groups: dict[str, DRConfiguration] = Field(default_factory=dict)
    # false (DR_ENABLED=false): beat schedules no observation and no drill, so nothing fails over by itself;
    # `dbfleet dr ...` commands still act when asked
    enabled: bool = True

    @model_validator(mode="after")
    def _group_ids(self) -> DisasterRecoverySection:
        for key, group in self.groups.items():
            group.dr_id = key
        return self

    def all_groups(self) -> dict[str, DRConfiguration]:
        """Every configured DR group by id (the inline one when it names a primary site)."""
        out: dict[str, DRConfiguration] = {}
        if self.configured:
            out[self.dr_id] = DRConfiguration.model_validate(self.model_dump(exclude={"groups", "enabled"}))
        out.update(self.groups)
        return out


class NodeStatus(BaseModel):
    """What one observation saw on one node."""

    database: str
    reachable: bool
    role: str = "unknown"  # primary | standby | unknown
    error: str | None = None
    timeline: int | None = None
    lsn: str | None = None  # primary: current WAL LSN; standby: replay LSN
    receive_lsn: str | None = None
    streaming: bool | None = None
    read_only: bool | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    rpo_budget_ratio: float | None = None
    slot: str | None = None
    slot_active: bool | None = None
    slot_retained_bytes: int | None = None
    archived_wal: str | None = None  # warm standby: the newest segment in the repository
    archive_lag_seconds: float | None = None  # warm standby: how long archived WAL has waited unreplayed
    sync_state: str | None = None  # pg_stat_replication.sync_state as the primary reports it


class DRStatus(BaseModel):
    """One observation of a DR group."""

    dr_id: str
    observed_at: float
    observer: str
    primary: str | None
    primary_reachable: bool
    nodes: list[NodeStatus]
    rpo_seconds: float
    ok: bool
    problems: list[str] = Field(default_factory=list)

    def node(self, database_id: str) -> NodeStatus | None:
        return next((n for n in self.nodes if n.database == database_id), None)


class HookRun(BaseModel):
    """One run of a configured command (fence, redirect): argv and outcome, never a secret."""

    what: str
    argv: list[str]
    returncode: int | None
    output: str = ""
    seconds: float = 0.0


class DREvent(BaseModel):
    """A failover, switchover or rejoin: what happened, measured."""

    dr_id: str
    kind: str  # failover | switchover | rejoin | setup
    status: str  # promoted | refused | skipped | stale | failed | done
    reason: str = ""
    detail: str = ""
    holder: str = ""
    token: int | None = None
    old_primary: str | None = None
    new_primary: str | None = None
    forced: bool = False
    started_at: float = 0.0
    finished_at: float = 0.0
    downtime_seconds: float | None = None
    data_loss_bytes: int | None = None
    data_loss_seconds: float | None = None
    fenced_sql: bool | None = None
    hooks: list[HookRun] = Field(default_factory=list)
    steps: list[str] = Field(default_factory=list)
    measures: dict[str, Any] = Field(default_factory=dict)  # drills: rto_seconds, rpo_markers, ...

    @property
    def ok(self) -> bool:
        return self.status in ("promoted", "done")
