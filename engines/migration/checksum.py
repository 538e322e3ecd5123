"""Order-independent checksums of rows: the sum, modulo 2**64, of a 64-bit hash of each row's canonical form.

Adding is order-independent and additive, so batch checksums add up to the table's. Three ways:

- PostgreSQL -> PostgreSQL: both servers hash each row themselves with ``hash_record_extended`` (the
  types' own extended hash functions, PostgreSQL 14+, the functions hash partitioning relies on staying
  the same across releases): ``pg_hash_items``. No row text is built and nothing is hashed in Python.
- MySQL -> PostgreSQL text path: the worker hashes the COPY text lines it sends with PostgreSQL's
  ``hashtextextended`` (``linehash``, in C) and ``line_hash_items`` has PostgreSQL rebuild and hash the
  same lines from the stored rows.
- The typed path: ``python_checksum`` over Python values (read back from both sides through their
  drivers) and, for later validation, ``sql_checksum`` inside PostgreSQL over each stored row's text
  (``hashtextextended``); the two agree with themselves, never with each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import struct
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from psycopg import sql

from engines.migration.ddl import type_sql

MOD = 2 ** 64


# built-in types with an extended hash function whose value does not depend on the server (an enum hashes
# its OID, json has no hash function: those are hashed as text), and whose binary COPY format is the same on
# every server (user types' arrays and composites carry OIDs): arrays of them too
STABLE_TYPES = re.compile(r"^(smallint|integer|bigint|numeric(\(\d+(,\d+)?\))?|real|double precision|boolean|bytea"
                       r"|date|time(\(\d\))? without time zone|timestamp(\(\d\))? with(out)? time zone|interval"
                       r"|uuid|inet|cidr|macaddr|jsonb|text|character varying(\(\d+\))?|character(\(\d+\))?)(\[\])?$")
_COLLATABLE = re.compile(r"^(text|character varying(\(\d+\))?|character(\(\d+\))?)(\[\])?$")
PG_HASH_MIN_VERSION = 140000  # hash_record_extended


def pg_row_hash(columns: Sequence[Any], source: bool = False) -> sql.Composed:
    """PostgreSQL expression: a 64-bit hash of a row of ``columns`` (``Column``s), computed by the server.

    Columns are read as their target type (``source=True`` casts a source column whose type the
    migration maps, e.g. an enum or a domain, to it), text in the "C" collation (its hash is the bytes'
    hash whatever the column's collation); types without a server-independent hash as their text."""
    items = []
    for c in columns:
        expr: sql.Composable = sql.Identifier(c.name)
        if source and c.source_type != c.target_type:
            expr = sql.SQL("{}::{}").format(expr, type_sql(c.target_type))
        if not STABLE_TYPES.match(c.target_type):
            expr = sql.SQL("{}::text COLLATE \"C\"").format(expr)
        elif _COLLATABLE.match(c.target_type):
            expr = sql.SQL("{} COLLATE \"C\"").format(expr)
        items.append(expr)
    return sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(items))


def hash_sum_items(hash_expr: sql.Composable) -> sql.Composed:
    """Select items ``count(*), checksum``: the sum of a bigint hash per row, modulo 2**64 (non-negative)."""
    return sql.SQL("count(*), coalesce(mod(mod(sum({}), 18446744073709551616) + 18446744073709551616,"
                   " 18446744073709551616), 0)").format(hash_expr)


def pg_hash_items(columns: Sequence[Any], source: bool = False) -> sql.Composed:
    """``hash_sum_items`` of ``pg_row_hash``: PostgreSQL -> PostgreSQL batches."""
    return hash_sum_items(pg_row_hash(columns, source))


def line_hash_items(line: sql.Composable) -> sql.Composed:
    """``hash_sum_items`` of ``hashtextextended(line, 0)``: what ``linehash.sum_lines`` computes."""
    return hash_sum_items(sql.SQL("hashtextextended({}, 0)").format(line))


def sql_checksum(select: sql.Composable) -> sql.Composed:
    """count and checksum of the rows of ``select``, over each row's text (``r::text``)."""
    return sql.SQL("SELECT {} FROM ({}) r").format(line_hash_items(sql.SQL("r::text")), select)


def canonical(value: Any, target_type: str = "") -> str:
    """A stable text for one value as PostgreSQL will hold it."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        if target_type == "real":
            value = struct.unpack("f", struct.pack("f", value))[0]
        return repr(float(value))
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value else "NaN"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time, dt.timedelta)):
        return str(value)
    if target_type in ("json", "jsonb") or isinstance(value, dict):
        obj = getattr(value, "obj", value)  # psycopg's Json/Jsonb wrappers keep the object in .obj
        return json.dumps(json.loads(obj) if isinstance(obj, str) else obj, sort_keys=True)
    if isinstance(value, (list, tuple)):
        return "{" + ",".join(canonical(v) for v in value) + "}"
    return str(value)


# target types whose Python values look the same (repr) from PyMySQL, psycopg and the converters
_PLAIN = re.compile(r"^(smallint|integer|bigint|text|boolean|bytea|date|time|timestamp|character varying\(\d+\)"
                    r"|varchar\(\d+\)|numeric\(\d+,\d+\)|text\[\])$")


def row_hash(row: Sequence[Any], types: Sequence[str]) -> int:
    text = "\x1f".join(canonical(v, t) for v, t in zip(row, types, strict=True))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def python_checksum(rows: Iterable[Sequence[Any]], types: Sequence[str]) -> tuple[int, int]:
    """(count, checksum) of ``rows`` whose columns will have PostgreSQL ``types``.

    When every column's type is plain (ints, text, dates, scaled numerics...) the row's repr is hashed
    directly (both drivers hand back equal values with equal reprs); otherwise each value is put in a
    canonical form first (floats stored as real, json, time zones, unscaled numerics)."""
    n = total = 0
    if all(_PLAIN.match(t) for t in types):
        blake = hashlib.blake2b
        for row in rows:
            n += 1
            total += int.from_bytes(blake(repr(tuple(row)).encode(), digest_size=8).digest(), "big")
        return n, total % MOD
    for row in rows:
        n += 1
        total += row_hash(row, types)
    return n, total % MOD
