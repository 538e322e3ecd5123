"""Inline database configs: a mapping a caller sends instead of a registry id.

Off by default (``fleet.allow_inline_databases``). When an operator turns them on, every secret
reference inside one (``password_env``, ``password_file``, ``passfile``, any ``*_env`` / ``*_file``,
nested options included) must name what ``fleet.inline_secrets`` allows: an environment variable
with the configured prefix, or a file whose real path lies inside the configured directory. An
inline config never falls back to the worker's own credentials (PGPASSWORD, ~/.pgpass).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from engines.config import DatabaseConfig, FleetConfig, InlineSecrets
from engines.errors import ConfigError

SOURCE = "inline database config"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FILE_KEYS = ("passfile",)
# a path that cannot exist (/dev/null is no directory): libpq skips a missing passfile silently
NO_PASSFILE = os.path.join(os.devnull, "dbfleet-no-passfile")


class InlineDatabaseConfig(DatabaseConfig):
    """A database a caller described: no password reference means an empty password, never the
    worker's ambient ones (libpq reads PGPASSWORD and ~/.pgpass when no password is given)."""

    def password(self) -> str:
        """The referenced password, or ``""``."""
        return super().password() or ""


def secret_refs(tree: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(field path, kind 'env'|'file', value) of every secret reference in ``tree``, nested ones included."""
    for key, value in tree.items():
        where = f"{path}.{key}" if path else str(key)
        name = str(key).lower()
        if name.endswith("_env"):
            yield where, "env", value
        elif name.endswith("_file") or name in _FILE_KEYS:
            yield where, "file", value
        if isinstance(value, Mapping):
            yield from secret_refs(value, where)


def _env_problem(value: Any, allowed: InlineSecrets) -> str | None:
    prefix = allowed.env_prefix
    if not prefix:
        return "inline configs may not name environment variables: fleet.inline_secrets.env_prefix is not set"
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        return "must be an environment variable name"
    if not value.startswith(prefix) or value == prefix:
        return f"{value} is not allowed: inline configs may only name variables starting with {prefix!r}"
    return None


def _file_problem(value: Any, allowed: InlineSecrets) -> str | None:
    if not allowed.file_dir:
        return "inline configs may not name files: fleet.inline_secrets.file_dir is not set"
    if not isinstance(value, str) or not value:
        return "must be a file path"
    base = os.path.realpath(os.path.expanduser(allowed.file_dir))
    real = os.path.realpath(os.path.expanduser(value))  # symlinks and .. resolved before the check
    if real == base or os.path.commonpath([real, base]) != base:
        return f"{value} is not allowed: inline configs may only name files inside {allowed.file_dir}"
    return None


def check_inline(ref: Mapping[str, Any], fleet: FleetConfig, known: list[str] | None = None) -> None:
    """Refuse an inline config the operator has not allowed, or one naming a secret outside the allow-list."""
    if not fleet.allow_inline_databases:
        hint = ", ".join(sorted(known or [])) or "none configured"
        raise ConfigError([("", "inline database configs are off: name a registry id instead (known: "
                                f"{hint}); an operator may allow them with fleet.allow_inline_databases: true "
                                "(see docs/security.md)")], SOURCE)
    problems: list[tuple[str, str]] = []
    if ref.get("dsn"):
        problems.append(("dsn", "not accepted in an inline config (a DSN's options can read files on the worker): "
                                "use host, port, dbname and user"))
    if ref.get("path"):
        problems.append(("path", "file databases are not accepted in an inline config (the path would be read or "
                                  "written on the worker): register them in dbfleet.yaml"))
    for where, kind, value in secret_refs(ref):
        if value is None:
            continue
        problem = (_env_problem if kind == "env" else _file_problem)(value, fleet.inline_secrets)
        if problem:
            problems.append((where, problem))
    if problems:
        raise ConfigError(problems, SOURCE)


def inline_database(ref: Mapping[str, Any], fleet: FleetConfig, known: list[str] | None = None) -> DatabaseConfig:
    """Validate an inline config against the allow-list and build it (no ambient credentials)."""
    from pydantic import ValidationError

    check_inline(ref, fleet, known)
    fields = {k: v for k, v in ref.items() if k != "id"}
    try:
        db = InlineDatabaseConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError([(".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, "))
                           for e in exc.errors()], SOURCE) from None
    if db.kind == "postgresql" and not db.passfile:
        db.passfile = NO_PASSFILE  # libpq would read the worker's ~/.pgpass otherwise
    name = str(ref.get("id") or f"{db.kind}-{db.dbname or db.host}")
    db.id = name if name.startswith("inline-") else f"inline-{name}"  # never mistaken for a registry id
    return db
