"""The table of contents of a ``pg_dump --format=custom`` archive, and its data blocks, read as they stream.

A custom archive is a header, the TOC (every object with its dump id, section and dependencies),
then one data block per TABLE DATA entry: ``1`` (data block), the dump id, then length-prefixed
pieces up to a zero length. dbfleet dumps with ``--compress=0`` to a pipe, so the pieces are the
table's ``COPY`` text as is and the TOC holds no data offsets (blocks follow in dump order).

This module reads the TOC only as far as scheduling needs (pg_dump's ``pg_backup_archiver.c``
``ReadHead``/``ReadToc``, ``pg_backup_custom.c`` ``_ReadExtraToc``); the SQL of every entry is
still run by pg_restore itself, given a TOC-only copy of the archive and a ``-L`` list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engines.errors import IntegrityError

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
# archive versions (major, minor) this reader knows: pg_dump 12-18 write 1.14-1.16
MIN_VERSION = (1, 14)
MAX_VERSION = (1, 16)
SECTION_NONE, SECTION_PRE_DATA, SECTION_DATA, SECTION_POST_DATA = 1, 2, 3, 4
COMPRESSION_NONE = 0


class NeedMore(Exception):
    """The buffer ends before the structure being read does."""


class Unsupported(Exception):
    """An archive this reader does not schedule (old version, compressed, large objects): use pg_restore."""


@dataclass
class TocEntry:
    dump_id: int
    had_dumper: bool
    tag: str
    desc: str
    section: int
    defn: str
    copy_stmt: str
    namespace: str
    owner: str
    deps: list[int] = field(default_factory=list)
    data_state: int = 0


@dataclass
class Toc:
    version: tuple[int, int, int]
    int_size: int
    off_size: int
    entries: list[TocEntry]
    end: int  # bytes of header + TOC: a TOC-only archive is exactly these

    def by_id(self) -> dict[int, TocEntry]:
        return {e.dump_id: e for e in self.entries}


class Reader:
    """Little-endian pg_dump integers and strings from a bytes buffer; NeedMore when it runs out."""

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, int_size: int = 4, off_size: int = 8):
        self.buf = buf
        self.pos = pos
        self.int_size = int_size
        self.off_size = off_size

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise NeedMore
        self.pos += 1
        return int(self.buf[self.pos - 1])

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise NeedMore
        self.pos += n
        return bytes(self.buf[self.pos - n:self.pos])

    def integer(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.raw(self.int_size), "little")
        return -value if sign else value

    def string(self) -> str | None:
        n = self.integer()
        if n < 0:
            return None
        return self.raw(n).decode("utf-8", errors="surrogateescape")

    def offset(self) -> int:
        flag = self.byte()
        self.raw(self.off_size)
        return flag


def parse_toc(buf: bytes | bytearray) -> Toc:
    """Header and TOC from the start of a custom archive (NeedMore if ``buf`` is too short)."""
    if len(buf) < 5:
        raise NeedMore
    if bytes(buf[:5]) != MAGIC:
        raise IntegrityError("the dump stream is not a pg_dump custom archive (no PGDMP header)")
    r = Reader(buf, 5)
    version = (r.byte(), r.byte(), r.byte())
    r.int_size, r.off_size = r.byte(), r.byte()
    fmt = r.byte()
    if fmt != FORMAT_CUSTOM:
        raise Unsupported(f"archive format {fmt}")
    if not MIN_VERSION <= version[:2] <= MAX_VERSION:
        raise Unsupported(f"archive version {'.'.join(map(str, version))}")
    if version[:2] >= (1, 15):
        compression = r.byte()
    else:
        compression = r.integer()  # a zlib level; 0 is none
    if compression != COMPRESSION_NONE:
        raise Unsupported("compressed archive data")
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        r.integer()
    r.string()  # database name
    r.string()  # server version
    r.string()  # pg_dump version
    entries = []
    for _ in range(r.integer()):
        dump_id = r.integer()
        had_dumper = bool(r.integer())
        r.string()  # table oid
        r.string()  # oid
        tag, desc = r.string() or "", r.string() or ""
        section = r.integer()
        defn = r.string() or ""
        r.string()  # drop statement
        copy_stmt = r.string() or ""
        namespace = r.string() or ""
        r.string()  # tablespace
        r.string()  # table access method
        if version[:2] >= (1, 16):
            r.integer()  # relkind
        owner = r.string() or ""
        r.string()  # "with oids": always false
        deps = []
        while (dep := r.string()) is not None:
            deps.append(int(dep))
        data_state = r.offset()
        entries.append(TocEntry(dump_id, had_dumper, tag, desc, section, defn, copy_stmt, namespace, owner, deps,
                                data_state))
    return Toc(version, r.int_size, r.off_size, entries, r.pos)
