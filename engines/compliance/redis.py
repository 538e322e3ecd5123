"""Redis discovery: SCAN a bounded number of keys, group them into key patterns (``user:*:profile``),
sample values of each pattern (strings, hash fields, list/set members) and the key segments themselves."""

from __future__ import annotations

import re
from typing import Any

from engines.compliance.base import ColumnInfo, Discoverer, TableInfo

SEPARATORS = re.compile(r"([:/|])")
_VARIABLE = re.compile(r"^(\d+|[0-9a-f]{8,}|[0-9a-f-]{36}|.*@.*|\+?[\d\s()-]{7,})$", re.I)
KEY_COLUMN = "(key)"
VALUE_COLUMN = "(value)"


def pattern_of(key: str) -> tuple[str, list[str]]:
    """``user:42:profile`` -> (``user:*:profile``, ["42"]): variable segments become ``*``."""
    parts = SEPARATORS.split(key)
    variable = [p for i, p in enumerate(parts) if i % 2 == 0 and _VARIABLE.match(p)]
    return "".join("*" if i % 2 == 0 and _VARIABLE.match(p) else p for i, p in enumerate(parts)), variable


class RedisDiscoverer(Discoverer):
    kind = "redis"

    def tables(self) -> list[TableInfo]:
        client = self.connector.conn
        limit = int(self.settings.get("redis_scan_keys", 5000))
        groups: dict[str, list[str]] = {}
        for raw in client.scan_iter(count=500):
            key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            groups.setdefault(pattern_of(key)[0], []).append(key)
            limit -= 1
            if limit <= 0:
                break
        out = []
        for pattern, keys in sorted(groups.items()):
            cols = [ColumnInfo(KEY_COLUMN, "key")] if "*" in pattern else []
            kinds = {self._type(k) for k in keys[:5]}
            if kinds & {"string", "list", "set", "zset"}:
                cols.append(ColumnInfo(VALUE_COLUMN, "/".join(sorted(kinds))))
            if "hash" in kinds:
                fields = sorted({self._text(f) for k in keys[:5] if self._type(k) == "hash"
                                 for f in client.hkeys(k)})
                cols += [ColumnInfo(f, "hash field") for f in fields[:200]]
            out.append(TableInfo(pattern, cols, rows_estimate=len(keys), ident=keys))
        return out

    def _type(self, key: str) -> str:
        return self._text(self.connector.conn.type(key))

    @staticmethod
    def _text(v: Any) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    def _value(self, key: str, kind: str) -> Any:
        client = self.connector.conn
        if kind == "string":
            return client.get(key)
        if kind == "list":
            return next(iter(client.lrange(key, 0, 0)), None)
        if kind == "set":
            return client.srandmember(key)
        if kind == "zset":
            return next(iter(client.zrange(key, 0, 0)), None)
        return None

    def sample(self, table: TableInfo, columns: list[ColumnInfo], n: int) -> list[tuple[Any, ...]]:
        keys = list(table.ident)
        chosen = self.random.sample(keys, min(n, len(keys)))
        rows = []
        for key in chosen:
            kind = self._type(key)
            fields = [c.name for c in columns if c.name not in (KEY_COLUMN, VALUE_COLUMN)]
            hashed = dict(zip(fields, self.connector.conn.hmget(key, fields), strict=True)) if kind == "hash" and fields \
                else {}
            row = []
            for c in columns:
                if c.name == KEY_COLUMN:
                    row.append(" ".join(pattern_of(key)[1]) or None)
                elif c.name == VALUE_COLUMN:
                    row.append(self._value(key, kind))
                else:
                    row.append(hashed.get(c.name))
            rows.append(tuple(self._text(v) if isinstance(v, bytes) else v for v in row))
        return rows
