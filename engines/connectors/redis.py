"""Redis through redis-py."""

from __future__ import annotations

from typing import Any

from engines.connectors.base import Connector, ServerInfo


class RedisConnector(Connector):
    kind = "redis"

    def _connect(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        db = self.db
        # a health check reports what it sees: no silent retries that multiply the timeout
        kw: dict[str, Any] = {"password": self.password, "socket_connect_timeout": db.connect_timeout,
              "socket_timeout": db.query_timeout, "retry": Retry(NoBackoff(), 0)}
        if db.dsn:
            client = redis.Redis.from_url(db.dsn, **kw)
        else:
            client = redis.Redis(host=db.host or "127.0.0.1", port=db.port or 6379,
                                 db=int(db.dbname or 0), username=db.user, **kw)
        client.ping()
        return client

    def _roundtrip(self) -> None:
        self.conn.ping()

    def info(self, section: str | None = None) -> dict[str, Any]:
        """Redis INFO as a dict."""
        return dict(self.conn.info(section) if section else self.conn.info())

    def describe(self) -> ServerInfo:
        info = self.info()
        keys = sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
        role = "replica" if info.get("role") == "slave" else "primary"
        return ServerInfo(
            version=str(info.get("redis_version")), role=role,
            size_bytes=int(info.get("used_memory", 0)),
            extra={"keys": keys, "maxmemory_policy": info.get("maxmemory_policy"),
                   "used_cpu_sys": info.get("used_cpu_sys"), "used_cpu_user": info.get("used_cpu_user")},
        )
