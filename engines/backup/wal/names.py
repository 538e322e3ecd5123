"""WAL file names: ``TTTTTTTTXXXXXXXXYYYYYYYY`` segments, ``.history``, ``.backup`` and ``.partial`` files."""

from __future__ import annotations

import re

SEGMENT = re.compile(r"^[0-9A-F]{24}$")
ARCHIVABLE = re.compile(r"^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$")
DEFAULT_SEGMENT_SIZE = 16 << 20


def check_name(name: str) -> str:
    """``name`` when it is a WAL file name PostgreSQL archives; raises ValueError otherwise."""
    if not ARCHIVABLE.match(name):
        raise ValueError(f"{name!r} is not a WAL file name (24 hex digits, a .history, .backup or .partial file)")
    return name


def is_segment(name: str) -> bool:
    return bool(SEGMENT.match(name))


def timeline(name: str) -> int:
    return int(name[:8], 16)


def segments_per_id(segment_size: int) -> int:
    """How many segments one 'log id' (the middle 8 hex digits) holds."""
    return 0x100000000 // segment_size


def segment_number(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """The absolute segment number (timeline excluded)."""
    return int(name[8:16], 16) * segments_per_id(segment_size) + int(name[16:24], 16)


def segment_name(tli: int, number: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per = segments_per_id(segment_size)
    return f"{tli:08X}{number // per:08X}{number % per:08X}"


def parse_lsn(text: str) -> int:
    """``'0/2000028'`` -> 33554472."""
    high, _, low = text.strip().partition("/")
    if not low:
        raise ValueError(f"{text!r} is not an LSN (like 0/16B3748)")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_of(tli: int, lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The segment file holding ``lsn`` on timeline ``tli``."""
    return segment_name(tli, lsn // segment_size, segment_size)


def stream_slot(database_id: str) -> str:
    """The physical replication slot ``dbfleet wal stream`` uses for ``database_id`` (a valid slot name)."""
    cleaned = "".join(c if c.isalnum() else "_" for c in database_id.lower())
    return ("dbfleet_" + cleaned)[:63]
