"""The C COPY relay (``_relay``) bound to the libpq that psycopg itself uses.

psycopg hands out each connection's ``PGconn *`` (``pgconn.pgconn_ptr``, documented for passing to C code);
the relay needs that same libpq's functions, because psycopg-binary carries a private copy whose structures
need not match the system's. The library is found among those mapped into this process (psycopg's C
implementations) or taken from psycopg's ctypes binding (its Python implementation), and used only after
it answers for a live connection exactly as psycopg does (library version and server process id).
Anything else, or the module not compiled: ``available()`` is False and batches use the Python loop.
"""

from __future__ import annotations

import ctypes
import logging
import re
from pathlib import Path
from typing import Any

from psycopg import pq

log = logging.getLogger(__name__)

DONE, SOURCE_FAILED, TARGET_FAILED, LAYOUT = 0, 1, 2, 3
_NAMES = ("PQgetCopyData", "PQputCopyData", "PQfreemem", "PQsetnonblocking", "PQisnonblocking")

try:
    from engines.migration._relay import relay as _c_relay
except ImportError:  # not compiled here (no C compiler at install time)
    _c_relay = None

_found: dict[str, tuple[int, ...] | None] = {}


def _candidates() -> list[str]:
    if pq.__impl__ == "python":
        try:
            from psycopg.pq import _pq_ctypes  # the CDLL psycopg's ctypes binding opened

            return [str(_pq_ctypes.pq._name)]  # type: ignore[attr-defined]
        except (ImportError, AttributeError):  # another psycopg layout: the Python loop
            return []
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return []
    return sorted({line.split(None, 5)[-1] for line in maps.splitlines()
                   if re.search(r"/libpq[-.][^/]*\.so[.\d]*$", line)})


def functions(pgconn: Any) -> tuple[int, ...] | None:
    """The relay's libpq function addresses for connections like ``pgconn`` (psycopg's), or None."""
    if _c_relay is None:
        return None
    if "libpq" not in _found:
        _found["libpq"] = None
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
                lib.PQlibVersion.restype = ctypes.c_int
                lib.PQbackendPID.argtypes = [ctypes.c_void_p]
                lib.PQbackendPID.restype = ctypes.c_int
                if (lib.PQlibVersion() == pq.version()
                        and lib.PQbackendPID(ctypes.c_void_p(pgconn.pgconn_ptr)) == pgconn.backend_pid):
                    _found["libpq"] = tuple(ctypes.cast(getattr(lib, n), ctypes.c_void_p).value or 0
                                            for n in _NAMES)
                    break
            except (OSError, AttributeError) as exc:
                log.debug("libpq at %s not usable for the COPY relay: %s", path, exc)
        if _found["libpq"] is None:
            log.info("COPY relay: psycopg's libpq not found in this process; batches use the Python loop")
    return _found["libpq"]


def available(pgconn: Any) -> bool:
    return functions(pgconn) is not None


def relay(source: Any, target: Any, hashed: bool) -> tuple[int, int, int]:
    """Relay the source's COPY TO (already started) into the target's COPY FROM (already started), both
    psycopg ``PGconn``s. Returns (status, rows, hash sum modulo 2**64); rows and the sum count only when
    ``hashed`` (the stream is binary with a trailing bigint hash column, which is not written)."""
    fns = functions(source)
    if fns is None or _c_relay is None:
        raise RuntimeError("the C COPY relay is not available here")
    status, rows, total, _ = _c_relay(source.pgconn_ptr, target.pgconn_ptr, fns, hashed)
    return int(status), int(rows), int(total)
