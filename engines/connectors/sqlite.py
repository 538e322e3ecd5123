"""SQLite through the standard library."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from engines.connectors.base import Connector, ServerInfo
from engines.errors import ConnectionFailed


class SQLiteConnector(Connector):
    kind = "sqlite"

    def _connect(self) -> Any:
        path = Path(self.db.path or "").expanduser()
        if not path.exists():
            raise ConnectionFailed(f"sqlite database {self.db.id!r}: file {path} does not exist")
        uri = f"file:{path}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=self.db.query_timeout)

    def _roundtrip(self) -> None:
        self.conn.execute("SELECT 1").fetchone()

    def describe(self) -> ServerInfo:
        version = self.conn.execute("SELECT sqlite_version()").fetchone()[0]
        page_count = self.conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        return ServerInfo(version=version, role="standalone", size_bytes=int(page_count * page_size),
                          extra={"path": str(self.db.path)})
