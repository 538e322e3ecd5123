"""A pass-through reader that keeps chosen members of a tar stream (``backup_label``, ``backup_manifest``)."""

from __future__ import annotations

from typing import Any

BLOCK = 512


def _size(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.rstrip(b"\0 ").strip()
    return int(text, 8) if text else 0


class TarTap:
    """Reads from ``raw`` unchanged; members named in ``wanted`` (up to ``limit`` bytes) end up in ``members``."""

    def __init__(self, raw: Any, wanted: set[str], limit: int = 256 << 20) -> None:
        self.raw = raw
        self.wanted = wanted
        self.limit = limit
        self.members: dict[str, bytearray] = {}
        self.files = 0
        self._header = bytearray()
        self._skip = 0  # bytes of member data (with padding) still to pass
        self._take = 0  # of which content bytes to keep
        self._current: str | None = None

    def readinto(self, buffer: Any) -> int:
        n: int = self.raw.readinto(buffer)
        if n:
            self._feed(memoryview(buffer)[:n])
        return n

    def _feed(self, data: memoryview) -> None:
        i = 0
        while i < len(data):
            if self._skip:
                n = min(self._skip, len(data) - i)
                if self._current is not None and self._take:
                    k = min(n, self._take)
                    self.members[self._current] += data[i:i + k]
                    self._take -= k
                self._skip -= n
                i += n
                continue
            piece = data[i:i + BLOCK - len(self._header)]
            self._header += piece
            i += len(piece)
            if len(self._header) == BLOCK:
                self._start(bytes(self._header))
                self._header.clear()

    def _start(self, header: bytes) -> None:
        if not header.strip(b"\0"):
            self._current = None  # end-of-archive blocks
            return
        name = header[:100].split(b"\0", 1)[0].decode(errors="replace")
        if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
            name = header[345:500].split(b"\0", 1)[0].decode(errors="replace") + "/" + name
        name = name.removeprefix("./")
        size = _size(header[124:136])
        self._skip = -(-size // BLOCK) * BLOCK
        self._current = None
        if header[156:157] in (b"0", b"\0"):
            self.files += 1
            if name in self.wanted and size <= self.limit:
                self._current, self._take = name, size
                self.members[name] = bytearray()
