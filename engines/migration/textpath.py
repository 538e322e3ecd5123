"""MySQL -> PostgreSQL as COPY text lines, without building Python values.

Rows arrive as the server's bytes (``MySQLSource.raw_chunks``: mysqlclient when it is installed, PyMySQL
otherwise). Each column either passes through untouched or goes through a small byte encoder (booleans,
zero dates, blobs to ``\\x`` hex, sets to array literals); a row becomes one line of PostgreSQL's COPY
text format. Escaping is decided per chunk, on its fields' bytes joined: a chunk whose fields hold no byte
COPY escapes (backslash, \\b \\f \\n \\r \\t \\v) is sent as joined (the usual case); any other chunk is
re-encoded with every field escaped.

The batch checksum hashes those same lines with PostgreSQL's own ``hashtextextended`` (``linehash``: in C
over the whole payload, summed modulo 2**64), and PostgreSQL rebuilds each stored row's COPY line with
``row_line`` to recompute it: both sides hash the same text without a second read of the source. A table
with any other column type (floats, whose text forms differ between the servers; fractional-second
datetimes; json...) takes the typed path instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import chain

from psycopg import sql

from engines.migration.linehash import sum_lines
from engines.migration.model import Table

TAB, NL, NULL = b"\t", b"\n", b"\\N"
Encode = Callable[[bytes], "bytes | None"]


# What COPY TO writes escaped in text format (CopyAttributeOutText), backslash first: byte -> escape.
# Both paths escape their lines with it and PostgreSQL rebuilds stored rows' lines with it (``_sql_escaped``).
COPY_ESCAPES = [(b"\\", b"\\\\"), (b"\b", b"\\b"), (b"\f", b"\\f"), (b"\n", b"\\n"), (b"\r", b"\\r"),
                (b"\t", b"\\t"), (b"\v", b"\\v")]


def escape(v: bytes) -> bytes:
    """A field as COPY text writes it."""
    for raw, escaped in COPY_ESCAPES:
        v = v.replace(raw, escaped)
    return v


_UNESCAPE = {escaped[1:]: raw for raw, escaped in COPY_ESCAPES}
_ESCAPED = re.compile(rb"\\(.)", re.DOTALL)


def unescape(field: bytes) -> str | None:
    """A field of a COPY TO text line as the text it stands for (None for the NULL marker)."""
    if field == NULL:
        return None
    return _ESCAPED.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(1)), field).decode()


def _sql_escaped(expr: sql.Composable) -> sql.Composable:
    """``expr`` (text) escaped as ``escape`` does, in PostgreSQL."""
    for raw, escaped in COPY_ESCAPES:
        expr = sql.SQL("replace({}, chr({}), {})").format(expr, sql.Literal(raw[0]), sql.Literal(escaped.decode()))
    return expr


def _zero(v: bytes) -> bytes | None:
    return None if v.startswith(b"0000-00-00") else v


def _bool(v: bytes) -> bytes:  # as boolean::text prints it
    return b"false" if v in (b"0", b"-0") else b"true"


def _bit_bool(v: bytes) -> bytes:
    return b"true" if int.from_bytes(v, "big") else b"false"


def _hex(v: bytes) -> bytes:
    return b"\\x" + v.hex().encode()


_ARRAY_SPECIAL = re.compile(rb'[{},"\\\s]')


def _set_array(v: bytes) -> bytes:
    """A MySQL SET ('a,b') as PostgreSQL prints a text[] (elements quoted only where it would quote them)."""
    out = []
    for p in (p for p in v.split(b",") if p):
        if _ARRAY_SPECIAL.search(p) or p.upper() == b"NULL":
            p = b'"' + p.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        out.append(p)
    return b"{" + b",".join(out) + b"}"


Spec = tuple["Encode | None", sql.Composable, bool]


def _column(table: Table, i: int) -> Spec | None:
    """(byte encoder or None for pass-through, PostgreSQL expression of the stored field's text, whether
    that text may hold bytes COPY escapes) or None when the column needs the typed path."""
    c = table.columns[i]
    col = sql.Identifier(c.name)
    source, target = c.source_type.lower(), c.target_type
    text = sql.SQL("{}::text").format(col)  # numbers, dates, times, booleans: nothing to escape
    if c.cast == "bool":
        return _bool, text, False
    if c.cast == "bit_bool":
        return _bit_bool, text, False
    if c.cast == "set":
        return _set_array, text, True
    if target == "bytea":  # the line holds the escaped form of \x...: always escaped, like the Encoder's
        return _hex, sql.SQL("'\\\\x' || encode({}, 'hex')").format(col), False
    if c.cast == "zero_date" and source in ("date", "datetime"):
        return _zero, text, False
    if c.cast == "zero_date_utc" and source == "timestamp":
        return _zero, sql.SQL("({} AT TIME ZONE 'UTC')::text").format(col), False
    if source == "time":
        return None, text, False
    if c.cast is None and re.match(r"^(smallint|integer|bigint|numeric\(\d+(,\d+)?\))$", target):
        return None, text, False
    if c.cast is None and (re.match(r"^(text|varchar\(\d+\))$", target) or c.name in table.enums):
        return None, text, True
    return None


def plan_text(table: Table) -> list[Spec] | None:
    """The per-column text handling of ``table``, or None when a column needs the typed path."""
    cols = [_column(table, i) for i in range(len(table.columns))]
    return None if any(c is None for c in cols) else [c for c in cols if c is not None]


class Encoder:
    """Raw MySQL rows -> COPY text lines (and, when validating, their count and hash sum)."""

    def __init__(self, spec: Sequence[Spec], hashing: bool = True) -> None:
        # zero dates are rare: their encoder runs only on chunks where the bytes 0000-00-00 appear at all
        self.encoders = [(i, s[0]) for i, s in enumerate(spec) if s[0] is not None and s[0] is not _zero]
        self.zero_dates = [(i, s[0]) for i, s in enumerate(spec) if s[0] is _zero]
        self.hashing = hashing
        self.escaped = False  # some chunk held a byte COPY escapes (validation must rebuild lines escaped)

    @staticmethod
    def _apply(row: Sequence[bytes | None], encoders: Sequence[tuple[int, Encode]]) -> list[bytes | None]:
        out = list(row)
        for i, f in encoders:
            v = out[i]
            if v is not None:
                out[i] = f(v)
        return out

    def encode(self, rows: Sequence[Sequence[bytes | None]]) -> tuple[bytes, list[bytes], int]:
        """(COPY payload, its lines, the sum of their hashes modulo 2**64) for one chunk of rows."""
        if self.encoders:
            rows = [self._apply(r, self.encoders) for r in rows]
        data, lines, dirty = self._join(rows)
        if self.zero_dates and b"0000-00-00" in data:
            rows = [self._apply(r, self.zero_dates) for r in rows]
            data, lines, dirty = self._join(rows)
        self.escaped = self.escaped or dirty
        return data, lines, (sum_lines(data)[1] if self.hashing else 0)

    @staticmethod
    def _join(rows: Sequence[Sequence[bytes | None]]) -> tuple[bytes, list[bytes], bool]:
        """Rows joined as COPY lines; fields are escaped only when some field of the chunk needs it."""
        fields = b"".join(filter(None, chain.from_iterable(rows)))  # type: ignore[arg-type]
        dirty = any(raw in fields for raw, _ in COPY_ESCAPES)
        if dirty:
            lines = [TAB.join([NULL if v is None else escape(v) for v in row]) for row in rows]
        else:
            lines = [TAB.join(row) if None not in row else  # type: ignore[arg-type]
                     TAB.join([NULL if v is None else v for v in row]) for row in rows]
        return (NL.join(lines) + NL if lines else b""), lines, dirty


def row_line(spec: Sequence[Spec], escaped: bool = True) -> sql.Composed:
    """The PostgreSQL expression of a stored row's COPY text line (what ``Encoder`` hashed). ``escaped``
    False leaves out the escaping: the same line for rows whose fields hold no byte COPY escapes (a batch
    the Encoder sent unescaped), at about half the cost."""
    return sql.SQL("concat_ws(E'\\t', {})").format(sql.SQL(", ").join(
        sql.SQL("coalesce({}, E'\\\\N')").format(_sql_escaped(e) if escapable and escaped else e)
        for _, e, escapable in spec))
