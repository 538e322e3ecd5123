"""Type mapping to PostgreSQL with pgloader's default casts, and the value converters they need.

MySQL/MariaDB -> PostgreSQL (pgloader's defaults): tinyint(1) -> boolean, unsigned integers widened
(tinyint/smallint -> smallint/integer, int unsigned -> bigint, bigint unsigned -> numeric(20)),
auto_increment -> identity, zero dates -> NULL (and the column loses NOT NULL), datetime -> timestamp,
timestamp -> timestamptz, enum -> a PostgreSQL enum type, set -> text[], blobs and binaries -> bytea,
json -> jsonb, year -> smallint, float -> real, double -> double precision, decimal -> numeric.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

INT_TYPES = {"tinyint": ("smallint", "smallint"), "smallint": ("smallint", "integer"),
             "mediumint": ("integer", "integer"), "int": ("integer", "bigint"), "integer": ("integer", "bigint"),
             "bigint": ("bigint", "numeric(20)")}
SIMPLE = {"float": "real", "double": "double precision", "real": "double precision",
          "tinytext": "text", "text": "text", "mediumtext": "text", "longtext": "text",
          "binary": "bytea", "varbinary": "bytea", "tinyblob": "bytea", "blob": "bytea", "mediumblob": "bytea",
          "longblob": "bytea", "json": "jsonb", "year": "smallint", "date": "date", "datetime": "timestamp",
          "timestamp": "timestamptz", "time": "time", "geometry": "bytea", "point": "bytea"}


def map_mysql(data_type: str, column_type: str, extra: str, nullable: bool) -> tuple[str, str | None, bool, bool]:
    """(PostgreSQL type, cast name, identity, nullable) for one MySQL column."""
    data_type, column_type = data_type.lower(), column_type.lower()
    unsigned = "unsigned" in column_type
    if data_type == "tinyint" and column_type.startswith("tinyint(1)"):
        return "boolean", "bool", False, nullable
    if data_type in INT_TYPES:
        target = INT_TYPES[data_type][1 if unsigned else 0]
        return target, None, "auto_increment" in extra.lower() and target != "numeric(20)", nullable
    if data_type in ("decimal", "numeric"):
        m = re.search(r"\((\d+)(?:,(\d+))?\)", column_type)
        return (f"numeric({m.group(1)},{m.group(2) or 0})" if m else "numeric"), None, False, nullable
    if data_type in ("char", "varchar"):
        m = re.search(r"\((\d+)\)", column_type)
        return (f"varchar({m.group(1)})" if m else "text"), None, False, nullable
    if data_type == "bit":
        return ("boolean", "bit_bool", False, nullable) if column_type == "bit(1)" else ("bytea", None, False, nullable)
    if data_type in ("date", "datetime", "timestamp"):
        cast = "zero_date_utc" if data_type == "timestamp" else "zero_date"
        return SIMPLE[data_type], cast, False, True  # zero dates become NULL: NOT NULL is dropped
    if data_type == "time":
        return "time", "time", False, nullable
    if data_type == "set":
        return "text[]", "set", False, nullable
    if data_type == "enum":
        return "enum", None, False, nullable  # the caller creates the type and names it
    return SIMPLE.get(data_type, "text"), None, False, nullable


def enum_values(column_type: str) -> list[str]:
    """enum('a','b''c') -> ['a', "b'c"]."""
    inner = column_type[column_type.index("(") + 1: column_type.rindex(")")]
    return [v.replace("''", "'").replace("\\\\", "\\") for v in re.findall(r"'((?:[^']|'')*)'", inner)]


def _zero_date(v: Any) -> Any:
    if isinstance(v, str):  # PyMySQL hands back what it cannot parse ('0000-00-00') as text
        return None
    return v


def _zero_date_utc(v: Any) -> Any:
    v = _zero_date(v)
    return v.replace(tzinfo=dt.timezone.utc) if isinstance(v, dt.datetime) else v


def _time(v: Any) -> Any:
    if isinstance(v, dt.timedelta):
        if not dt.timedelta(0) <= v < dt.timedelta(days=1):
            raise ValueError(f"time {v} is outside 00:00..24:00 and has no PostgreSQL time")
        return (dt.datetime.min + v).time()
    return v


def _set(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    return [p for p in str(v).split(",") if p]


def _json(v: Any) -> Any:
    """dicts and lists from a PostgreSQL json/jsonb column; text (MySQL's JSON) goes as is."""
    if v is None or isinstance(v, str):
        return v
    from psycopg.types.json import Jsonb

    return Jsonb(v)


CASTS: dict[str, Callable[[Any], Any]] = {
    "json": _json,
    "bool": lambda v: None if v is None else bool(v),
    "bit_bool": lambda v: None if v is None else (int.from_bytes(v, "big") != 0 if isinstance(v, bytes) else bool(v)),
    "zero_date": _zero_date,
    "zero_date_utc": _zero_date_utc,
    "time": _time,
    "set": _set,
}


def converter(casts: list[str | None]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A row converter applying each column's cast (identity when no column has one)."""
    fns = [(i, CASTS[c]) for i, c in enumerate(casts) if c]
    if not fns:
        return lambda row: row

    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(row)
        for i, fn in fns:
            out[i] = fn(out[i])
        return tuple(out)

    return convert
