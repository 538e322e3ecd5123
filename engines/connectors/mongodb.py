"""MongoDB through pymongo (optional: pip install 'dbfleet[mongodb]').

No MongoDB server runs on the development machines: this path is exercised by the
integration tests only when DBFLEET_TEST_MONGODB_URL points at a server.
"""

from __future__ import annotations

from typing import Any

from engines.connectors.base import Connector, ServerInfo
from engines.errors import DriverMissingError


class MongoConnector(Connector):
    kind = "mongodb"

    def _connect(self) -> Any:
        try:
            import pymongo
        except ImportError:
            raise DriverMissingError("pymongo", "mongodb") from None
        db = self.db
        ms = int(db.connect_timeout * 1000)
        kw: dict[str, Any] = {"serverSelectionTimeoutMS": ms, "connectTimeoutMS": ms,
                              "socketTimeoutMS": int(db.query_timeout * 1000)}
        if db.user:
            kw.update(username=db.user, password=self.password)
        target = db.dsn or f"mongodb://{db.host}:{db.port}"
        client = pymongo.MongoClient(target, **kw)
        client.admin.command("ping")
        return client

    def _roundtrip(self) -> None:
        self.conn.admin.command("ping")

    def describe(self) -> ServerInfo:
        hello = self.conn.admin.command("hello")
        build = self.conn.admin.command("buildInfo")
        size = None
        if self.db.dbname:
            size = int(self.conn[self.db.dbname].command("dbStats").get("storageSize", 0))
        role = "primary" if hello.get("isWritablePrimary") else "replica"
        return ServerInfo(version=str(build.get("version")), role=role, size_bytes=size,
                          extra={"set": hello.get("setName")})
