"""Database references of the documented API: ``{"type": "postgresql", "host": ..., "database": ...}``.

``type``/``database`` are aliases of ``kind``/``dbname``. A mapping that names a registry entry (same kind,
host, port and dbname) becomes that entry's id, so its credentials come from the registry; any other
mapping stays inline and is subject to ``fleet.allow_inline_databases`` and its allow-list.
"""

from __future__ import annotations

from typing import Any

from engines.config import Config
from engines.errors import ConfigError
from engines.kinds import DEFAULT_PORTS, KIND_ALIASES

ALIASES = {"type": "kind", "database": "dbname"}
_MATCH = ("kind", "host", "port", "dbname")


def normalize(ref: dict[str, Any]) -> dict[str, Any]:
    """``ref`` with the documented aliases renamed; both spellings of one field is an error."""
    out = dict(ref)
    for alias, field in ALIASES.items():
        if alias in out:
            if field in out:
                raise ConfigError([(alias, f"give {alias!r} or {field!r}, not both")], "database reference")
            out[field] = out.pop(alias)
    if isinstance(out.get("kind"), str):
        out["kind"] = KIND_ALIASES.get(out["kind"].strip().lower(), out["kind"])
    return out


def registry_ref(ref: Any, cfg: Config) -> Any:
    """A registry id for ``ref`` when one entry matches it; otherwise ``ref`` normalised (or unchanged)."""
    if not isinstance(ref, dict):
        return ref
    ref = normalize(ref)
    wanted = {k: ref.get(k) for k in _MATCH}
    wanted["port"] = int(wanted["port"]) if wanted["port"] else DEFAULT_PORTS.get(str(wanted["kind"]))
    matches = [db_id for db_id, db in cfg.databases.items()
               if all(str(getattr(db, k)) == str(wanted[k]) for k in _MATCH)]
    extra = set(ref) - {*_MATCH, "user"}
    if len(matches) == 1 and not extra and ref.get("user") in (None, cfg.databases[matches[0]].user):
        return matches[0]
    return ref
