"""Custom metrics a database declares (``databases.<id>.metrics``), measured in its health check.

Each runs read-only with its own timeout: SQL in a ``READ ONLY`` transaction with a statement timeout
(PostgreSQL, MySQL/MariaDB), a Redis command from an allow-list of read-only commands, or a
MongoDB/Elasticsearch count. A metric that cannot be measured is an ``unknown`` check with the reason.
"""

from __future__ import annotations

import shlex
from typing import Any

from engines.config import CustomMetric, DatabaseConfig
from engines.connectors import Connector
from engines.health.model import OK, UNKNOWN, CheckResult
from engines.monitoring.metrics import CUSTOM_HINT
from engines.secrets import scrub

# read-only Redis commands that return one number (or a value that parses as one)
REDIS_COMMANDS = frozenset({"GET", "STRLEN", "LLEN", "SCARD", "ZCARD", "HLEN", "XLEN", "PFCOUNT", "DBSIZE",
                            "ZCOUNT", "ZLEXCOUNT", "HGET", "HSTRLEN", "EXISTS", "BITCOUNT", "ZSCORE", "SISMEMBER",
                            "HEXISTS", "TTL", "PTTL", "OBJECT"})


class MetricError(Exception):
    """A custom metric that could not be measured (its message becomes the check's hint)."""


def collect(conn: Connector, db: DatabaseConfig) -> list[CheckResult]:
    """One check per declared metric: its value (``hint`` marks it custom), or unknown with the reason."""
    return [_one(conn, db, name, spec) for name, spec in db.metrics.items()]


def _one(conn: Connector, db: DatabaseConfig, name: str, spec: CustomMetric) -> CheckResult:
    try:
        value = measure(conn, db, spec)
    except MetricError as exc:
        return CheckResult(name, UNKNOWN, None, spec.unit, hint=f"{CUSTOM_HINT}: {exc}")
    except Exception as exc:  # a driver error: the metric is unknown this time, the check goes on
        return CheckResult(name, UNKNOWN, None, spec.unit,
                           hint=f"{CUSTOM_HINT}: {type(exc).__name__}: {scrub(str(exc))[:300]}")
    return CheckResult(name, OK, value, spec.unit, hint=CUSTOM_HINT)


def measure(conn: Connector, db: DatabaseConfig, spec: CustomMetric) -> float:
    """The metric's current value."""
    if spec.sql:
        if db.kind == "postgresql":
            return _number(_postgres(conn.conn, spec))
        if db.kind == "mysql":
            return _number(_mysql(conn.conn, spec))
        raise MetricError(f"sql metrics run on PostgreSQL and MySQL/MariaDB, not {db.kind}")
    if spec.redis:
        if db.kind != "redis":
            raise MetricError(f"redis metrics run on Redis, not {db.kind}")
        return _number(_redis(conn.conn, spec.redis))
    if db.kind == "mongodb":
        return _mongo_count(conn.conn, db, spec)
    if db.kind == "elasticsearch":
        count = dict(spec.count or {})
        answer = conn.conn.count(index=count.get("index", "_all"), query=count.get("query"),
                                 request_timeout=spec.timeout)
        return float(answer["count"])
    raise MetricError(f"count metrics run on MongoDB and Elasticsearch, not {db.kind}")


def _postgres(pg: Any, spec: CustomMetric) -> Any:
    # params=() forces the extended protocol: one statement only, so no COMMIT can end the read-only transaction
    with pg.transaction(force_rollback=True):
        pg.execute("SET TRANSACTION READ ONLY")
        pg.execute("SELECT set_config('statement_timeout', %s, true)", (str(int(spec.timeout * 1000)),))
        row = pg.execute(spec.sql, ()).fetchone()
    return row[0] if row else None


def _mysql(my: Any, spec: CustomMetric) -> Any:
    with my.cursor() as cur:
        _mysql_timeout(cur, spec.timeout)
        cur.execute("START TRANSACTION READ ONLY")
        try:
            cur.execute(spec.sql)  # PyMySQL sends one statement (no CLIENT.MULTI_STATEMENTS)
            row = cur.fetchone()
        finally:
            cur.execute("ROLLBACK")
    return row[0] if row else None


def _mysql_timeout(cur: Any, seconds: float) -> None:
    try:  # MariaDB: seconds
        cur.execute("SET SESSION max_statement_time = %s", (seconds,))
    except Exception:  # MySQL: milliseconds, SELECT only
        cur.execute("SET SESSION max_execution_time = %s", (int(seconds * 1000),))


def _redis(client: Any, command: str) -> Any:
    words = shlex.split(command)
    if not words or words[0].upper() not in REDIS_COMMANDS:
        raise MetricError(f"redis command {words[0] if words else ''!r} is not an allowed read-only command "
                          f"({', '.join(sorted(REDIS_COMMANDS))})")
    return client.execute_command(words[0].upper(), *words[1:])


def _mongo_count(client: Any, db: DatabaseConfig, spec: CustomMetric) -> float:
    count = dict(spec.count or {})
    if not count.get("collection"):
        raise MetricError("a MongoDB count needs count.collection")
    coll = client[count.get("database") or db.dbname][count["collection"]]
    return float(coll.count_documents(count.get("filter") or {}, maxTimeMS=int(spec.timeout * 1000)))


def _number(value: Any) -> float:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MetricError(f"expected a number, got {str(value)[:40]!r}") from None
