"""The connector contract shared by every database kind."""

from __future__ import annotations

import abc
import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from engines.config import DatabaseConfig
from engines.errors import ConnectionFailed
from engines.secrets import scrub


@dataclass
class ServerInfo:
    """What a connector can say about its server."""

    version: str
    role: str  # primary | replica | standalone
    size_bytes: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Connector(abc.ABC):
    """One database connection for one registry entry.

    Contract:
    - the constructor does no I/O; the first call that needs the server opens the
      connection, bounded by ``db.connect_timeout``; every query is bounded by
      ``db.query_timeout``, so a server that accepts and never answers cannot hang a worker;
    - failures to reach or authenticate raise :class:`ConnectionFailed` whose message
      names the database id and never carries the password or a DSN with one;
    - ``ping`` and ``describe`` are read-only and idempotent;
    - ``close`` is idempotent; connectors are context managers.
    Later engines extend this class (list tables, read ranges, write batches, dump streams).
    """

    kind: ClassVar[str]

    def __init__(self, db: DatabaseConfig, password: str | None = None) -> None:
        self.db = db
        self.password = password
        self._conn: Any = None

    @abc.abstractmethod
    def _connect(self) -> Any:
        """Open and return the driver connection."""

    @abc.abstractmethod
    def _roundtrip(self) -> None:
        """Run the cheapest query that proves the server answers."""

    @abc.abstractmethod
    def describe(self) -> ServerInfo:
        """Version, role and size of the server/database."""

    def _close(self) -> None:
        self._conn.close()

    @property
    def conn(self) -> Any:
        if self._conn is None:
            try:
                self._conn = self._connect()
            except ConnectionFailed:
                raise
            except Exception as exc:
                raise self.failure("cannot connect", exc) from None
        return self._conn

    def ping(self) -> float:
        """Seconds taken by one round trip (connection opened first, not timed)."""
        conn = self.conn  # noqa: F841 - connect outside the timed section
        start = time.perf_counter()
        try:
            self._roundtrip()
        except Exception as exc:
            raise self.failure("no answer", exc) from None
        return time.perf_counter() - start

    def failure(self, what: str, exc: BaseException) -> ConnectionFailed:
        """A ConnectionFailed naming the database id, with secrets scrubbed."""
        detail = scrub(f"{type(exc).__name__}: {exc}".strip())
        if self.password:
            detail = detail.replace(self.password, "***")
        where = f"{self.db.host}:{self.db.port}" if self.db.host else (self.db.path or "dsn")
        return ConnectionFailed(f"{self.db.kind} database {self.db.id!r} at {where}: {what}: {detail}")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._close()
            finally:
                self._conn = None

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
