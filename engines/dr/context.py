"""What every DR operation needs: the group, the registry, the coordination store, a place for files."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.config import DatabaseConfig
from engines.dr.coord import Coordinator
from engines.dr.models import DRConfiguration, DREvent
from engines.history import FAILED, SUCCEEDED
from engines.secrets import resolve_secret, scrub

log = logging.getLogger("dbfleet.dr")


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def is_local_host(host: str | None) -> bool:
    """True when ``host`` names this machine (loopback, its hostname, or one of its addresses)."""
    if not host or host.startswith("/") or host in LOOPBACK:
        return True
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return host in names


@dataclass
class DRContext:
    """A DR group bound to a registry lookup, a coordinator, a state directory and (optionally) history."""

    cfg: DRConfiguration
    resolve: Callable[[str], DatabaseConfig]
    coord: Coordinator
    state_dir: Path
    observer: str = "local"
    history: Any = None  # engines.history.HistoryStore
    repository: Callable[[], Any] | None = None  # opens the group's backup repository (warm standby, restore)
    server_env: dict[str, str] = field(default_factory=dict)  # what a restore_command needs (config path, key env)
    clock: Callable[[], float] = field(default=time.time)

    @property
    def dr_id(self) -> str:
        return self.cfg.dr_id

    def db(self, database_id: str) -> DatabaseConfig:
        return self.resolve(database_id)

    def current_primary(self) -> str:
        """The primary recorded by the last failover/switchover, else the configured one."""
        recorded = self.coord.primary(self.dr_id)
        if recorded:
            return recorded
        if self.cfg.primary_site is None:
            raise ValueError(f"DR group {self.dr_id!r} has no primary_site")
        return self.cfg.primary_site.database

    def standbys(self) -> list[str]:
        """Every site but the current primary."""
        primary = self.current_primary()
        return [s.database for s in self.cfg.sites() if s.database != primary]

    def replication_password(self) -> str | None:
        """The replication role's password, resolved here (it is then known to scrub)."""
        return resolve_secret(f"disaster_recovery {self.dr_id!r} replication",
                              env=self.cfg.replication_password_env, file=self.cfg.replication_password_file)

    def local_data_dir(self, database_id: str, *, must_exist: bool = True) -> Path | None:
        """The site's data directory when its node runs on this host (and holds a cluster), else None.

        Two hosts often use the same path: a path alone never proves the cluster there is this node's.
        """
        site = self.cfg.site(database_id)
        if not site.data_dir or not is_local_host(self.db(database_id).host):
            return None
        path = Path(site.data_dir)
        return path if not must_exist or (path / "PG_VERSION").exists() else None

    def repo(self) -> Any:
        """The group's backup repository (``repository:`` storage target); a clear error when unset."""
        if self.repository is None:
            from engines.errors import ConfigError

            raise ConfigError([(f"disaster_recovery.{self.dr_id}.repository",
                                f"strategy {self.cfg.strategy.value} needs the backup repository it reads "
                                "(a storage target of database_scripts.backup, with physical backups and "
                                "WAL archiving of the primary)")])
        return self.repository()

    def group_dir(self) -> Path:
        path = self.state_dir / "dr" / self.dr_id
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def record(self, event: DREvent) -> DREvent:
        """Store ``event`` (scrubbed) in the coordination store and, when set, in history."""
        safe = DREvent.model_validate_json(scrub(event.model_dump_json()))
        self.coord.record_event(self.dr_id, safe.model_dump(mode="json"))
        if self.history is not None:
            # unique per event: racing observers refused in the same millisecond record one row each
            run_id = f"dr-{event.kind}-{self.dr_id}-{int(event.started_at * 1000)}-{event.token or 0}-{uuid.uuid4().hex[:8]}"
            self.history.start(run_id, f"dr_{event.kind}", self.dr_id, {"reason": event.reason}, queue="dr",
                               worker=self.observer)
            self.history.finish(run_id, SUCCEEDED if event.ok else FAILED, summary=safe.model_dump(mode="json"),
                                error=None if event.ok else f"{event.status}: {event.detail}")
        log.info("dr %s %s on %s: %s %s", event.kind, event.status, self.dr_id, event.new_primary or "",
                 scrub(event.detail))
        return safe
