"""PostgreSQL's ``hashtextextended(line, 0)`` computed here, for the MySQL -> PostgreSQL text path's checksums.

The worker hashes the COPY lines it sends; validation has PostgreSQL rebuild each stored row's line and hash
it with ``hashtextextended`` (about half the server's CPU of md5 and its hex conversions). The compiled
``_linehash`` module does it in C over a whole COPY payload (``sum_lines``); when it was not built (no C
compiler at install time) the same algorithm runs in Python below: correct, about 100x slower.
"""

from __future__ import annotations

MOD = 2 ** 64
_M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """lookup3's mix(): six steps ``x -= z; x ^= rot(z, r); z += y``, the roles turning a -> b -> c."""
    for r in (4, 6, 8, 16, 19, 4):
        a = ((a - c) & _M32) ^ _rot(c, r)
        c = (c + b) & _M32
        a, b, c = b, c, a
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    """lookup3's final(): seven steps ``x ^= y; x -= rot(y, r)`` on (c, b), (a, c), (b, a), (c, b) ..."""
    v = [a, b, c]
    for i, r in enumerate((14, 11, 25, 16, 4, 14, 24)):
        x, y = ((2, 1), (0, 2), (1, 0))[i % 3]
        v[x] = ((v[x] ^ v[y]) - _rot(v[y], r)) & _M32
    return v[0], v[1], v[2]


def py_hash(data: bytes, seed: int = 0) -> int:
    """hash_bytes_extended (Jenkins' lookup3 as PostgreSQL uses it), as the signed bigint SQL returns."""
    n = len(data)
    a = b = c = (0x9E3779B9 + n + 3923095) & _M32
    if seed:
        a = (a + (seed >> 32)) & _M32
        b = (b + seed) & _M32
        a, b, c = _mix(a, b, c)
    i = 0
    while n - i >= 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & _M32
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & _M32
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & _M32
        a, b, c = _mix(a, b, c)
        i += 12
    tail = data[i:]
    a = (a + int.from_bytes(tail[0:4], "little")) & _M32
    b = (b + int.from_bytes(tail[4:8], "little")) & _M32
    c = (c + (int.from_bytes(tail[8:11], "little") << 8)) & _M32  # c's lowest byte: the length's
    a, b, c = _final(a, b, c)
    h = (b << 32) | c
    return h - MOD if h >= 2 ** 63 else h


def py_sum_lines(data: bytes) -> tuple[int, int]:
    """(lines, sum of their hashes modulo 2**64) of newline-terminated ``data``."""
    lines = bytes(data).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return len(lines), sum(py_hash(line) for line in lines) % MOD


try:
    from engines.migration._linehash import hash as line_hash
    from engines.migration._linehash import sum_lines

    ACCELERATED = True
except ImportError:  # not compiled here: the same results, slower
    line_hash, sum_lines = py_hash, py_sum_lines
    ACCELERATED = False
