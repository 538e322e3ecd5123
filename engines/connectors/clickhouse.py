"""ClickHouse over its HTTP interface (raw HTTP: clickhouse-connect cannot talk to Debian's 18.16 server).

clickhouse-connect, the field's driver, opens every client by reading ``system.settings.readonly``,
a column ClickHouse 18.16 (the version Debian ships) does not have, so every connection fails with
"Unknown identifier: readonly". The HTTP interface itself is the protocol both speak: queries go as
POST bodies, credentials in the ``X-ClickHouse-User`` / ``X-ClickHouse-Key`` headers (never in the
URL), the database in the ``database`` parameter, every request bounded by a timeout.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from engines.connectors.base import Connector, ServerInfo
from engines.errors import DbfleetError


class ClickHouseError(DbfleetError):
    """The server answered with an error (its ``Code: N ...`` text, first line)."""


def quote_ident(name: str) -> str:
    """A ClickHouse identifier in backquotes (backslash and backquote escaped)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_str(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ClickHouseHTTP:
    """A minimal client of ClickHouse's HTTP interface: one request per statement."""

    def __init__(self, url: str, user: str | None, password: str | None, database: str | None,
                 connect_timeout: float, query_timeout: float) -> None:
        self.url = url.rstrip("/") + "/"
        self.database = database
        self.timeout = max(connect_timeout, query_timeout)
        self.headers = {"X-ClickHouse-User": user or "default"}
        if password:
            self.headers["X-ClickHouse-Key"] = password

    def _request(self, sql_text: str, body: bytes | IO[bytes] | None, database: str | None,
                 timeout: float | None) -> Any:
        params = {"database": database} if database else {}
        if body is None:
            data: Any = sql_text.encode()
        else:  # the statement travels in the URL when the body carries data
            params["query"] = sql_text
            data = body
        url = self.url + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = dict(self.headers)
        if isinstance(data, io.IOBase) and data.seekable():  # a file: its size, so the body is not sent chunked
            here = data.tell()
            headers["Content-Length"] = str(data.seek(0, io.SEEK_END) - here)
            data.seek(here)
        req = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)  # noqa: S310 - URL from the config
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            raise ClickHouseError(text.splitlines()[0][:500] if text else f"HTTP {exc.code}") from None

    def execute(self, sql_text: str, body: bytes | IO[bytes] | None = None, *, database: str | None = "",
                timeout: float | None = None) -> str:
        """Run one statement and return its whole answer as text (``database=""``: the client's database)."""
        with self._request(sql_text, body, self.database if database == "" else database, timeout) as resp:
            return str(resp.read().decode())

    def rows(self, sql_text: str, *, database: str | None = "") -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts (``FORMAT JSONEachRow`` is appended)."""
        out = self.execute(f"{sql_text} FORMAT JSONEachRow", database=database)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    @contextmanager
    def stream(self, sql_text: str, *, database: str | None = "", timeout: float | None = None) -> Iterator[IO[bytes]]:
        """The answer of a statement as a readable byte stream (for ``FORMAT Native`` dumps)."""
        with self._request(sql_text, None, self.database if database == "" else database, timeout) as resp:
            yield resp


class ClickHouseConnector(Connector):
    kind = "clickhouse"

    def _url(self) -> str:
        if self.db.dsn:
            parts = urllib.parse.urlsplit(self.db.dsn)
            return urllib.parse.urlunsplit((parts.scheme or "http", parts.netloc, parts.path or "/", "", ""))
        return f"http://{self.db.host}:{self.db.port or 8123}"

    def _dbname(self) -> str | None:
        if self.db.dbname:
            return self.db.dbname
        if self.db.dsn:
            found = urllib.parse.parse_qs(urllib.parse.urlsplit(self.db.dsn).query).get("database")
            return found[0] if found else None
        return None

    def _connect(self) -> ClickHouseHTTP:
        client = ClickHouseHTTP(self._url(), self.db.user, self.password, self._dbname(),
                                self.db.connect_timeout, self.db.query_timeout)
        client.execute("SELECT 1", database=None, timeout=self.db.connect_timeout)  # reachability and credentials now
        return client

    def _close(self) -> None:
        """Nothing to close: every statement is its own HTTP request."""

    def _roundtrip(self) -> None:
        self.conn.execute("SELECT 1", database=None)

    def describe(self) -> ServerInfo:
        conn: ClickHouseHTTP = self.conn
        version = conn.execute("SELECT version()", database=None).strip()
        replicated = int(conn.execute("SELECT count() FROM system.replicas", database=None).strip() or 0)
        where = f" AND database = {quote_str(self._dbname() or '')}" if self._dbname() else ""
        size = int(conn.execute(f"SELECT sum(bytes) FROM system.parts WHERE active{where}", database=None).strip() or 0)  # noqa: S608 - literal quoted
        return ServerInfo(version=version, role="replica" if replicated else "standalone", size_bytes=size,
                          extra={"replicated_tables": replicated, "database": self._dbname() or "default"})
