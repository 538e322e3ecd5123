"""Elasticsearch through the official client (optional: pip install 'dbfleet[elasticsearch]').

No Elasticsearch server runs on the development machines: this path is exercised by the
integration tests only when DBFLEET_TEST_ELASTICSEARCH_URL points at a server.
"""

from __future__ import annotations

from typing import Any

from engines.connectors.base import Connector, ServerInfo
from engines.errors import DriverMissingError


class ElasticsearchConnector(Connector):
    kind = "elasticsearch"

    def _connect(self) -> Any:
        try:
            from elasticsearch import Elasticsearch
        except ImportError:
            raise DriverMissingError("elasticsearch", "elasticsearch") from None
        db = self.db
        url = db.dsn or f"http://{db.host}:{db.port}"
        auth = (db.user, self.password or "") if db.user else None
        client = Elasticsearch(url, basic_auth=auth, request_timeout=db.query_timeout)
        client.info()
        return client

    def _roundtrip(self) -> None:
        self.conn.info()

    def describe(self) -> ServerInfo:
        info = self.conn.info()
        stats = self.conn.cluster.stats()
        size = stats.get("indices", {}).get("store", {}).get("size_in_bytes")
        return ServerInfo(version=str(info["version"]["number"]), role="cluster",
                          size_bytes=size, extra={"cluster": info.get("cluster_name")})
