"""The documented configuration shortcuts, applied to the YAML tree before validation.

Precedence, lowest first: dbfleet.yaml, then these documented variables, then ``DBFLEET_*`` overrides.

- ``<ID>_DB_HOST|PORT|USER`` set a database's fields (``SPOTIFY_DB_HOST`` for id ``spotify``);
  ``<ID>_DB_PASSWORD`` becomes the reference ``password_env: <ID>_DB_PASSWORD`` (read on the worker)
  unless the entry already names a password source.
- ``MONITORING_ENABLED``, ``PROMETHEUS_PORT``, ``WEBSOCKET_PORT``: ``database_scripts.monitoring``.
- ``BACKUP_STORAGE_TYPE``, ``BACKUP_BUCKET``, ``BACKUP_RETENTION_DAYS``: the default backup storage and
  retention. ``database_scripts.backup.storage`` may be a mapping (``{type: s3, bucket: b, encryption: true}``):
  it defines the storage target ``default`` and makes it the backup default.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

DEFAULT_TARGET = "default"
_DB_VAR = re.compile(r"^(?P<id>[A-Z0-9_]+)_DB_(?P<field>HOST|PORT|USER|PASSWORD)$")
_SCALARS = {"MONITORING_ENABLED": ("monitoring", "enabled"), "PROMETHEUS_PORT": ("monitoring", "prometheus_port"),
            "WEBSOCKET_PORT": ("monitoring", "websocket_port"),
            "BACKUP_RETENTION_DAYS": ("backup", "retention_days")}
_STORAGE_KEYS = {"type", "bucket", "prefix", "path", "url", "endpoint_url", "region", "key_env", "key_file"}


def _scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _section(tree: dict[str, Any], name: str) -> dict[str, Any]:
    scripts = tree.setdefault("database_scripts", {}) or {}
    tree["database_scripts"] = scripts
    node = scripts.get(name)
    if not isinstance(node, dict):
        node = scripts[name] = {}
    return node


def apply_documented_env(tree: dict[str, Any], environ: dict[str, str]) -> None:
    """Apply the documented variables and the storage mapping to ``tree`` in place."""
    _database_vars(tree, environ)
    for var, (section, key) in _SCALARS.items():
        if environ.get(var):
            _section(tree, section)[key] = _scalar(environ[var])
    backup = _section(tree, "backup") if ("BACKUP_STORAGE_TYPE" in environ or "BACKUP_BUCKET" in environ
                                          or isinstance((tree.get("database_scripts") or {}).get("backup"), dict))\
        else None
    if backup is None:
        return
    storage = backup.get("storage")
    if environ.get("BACKUP_STORAGE_TYPE") or environ.get("BACKUP_BUCKET"):
        storage = dict(storage) if isinstance(storage, dict) else {}
        storage.setdefault("type", "s3")
        if environ.get("BACKUP_STORAGE_TYPE"):
            storage["type"] = environ["BACKUP_STORAGE_TYPE"]
        if environ.get("BACKUP_BUCKET"):
            storage["bucket"] = environ["BACKUP_BUCKET"]
    if isinstance(storage, dict):
        _storage_mapping(tree, backup, storage)


def _database_vars(tree: dict[str, Any], environ: dict[str, str]) -> None:
    databases = tree.get("databases") or {}
    by_upper = {str(k).upper(): k for k in databases}
    for var, raw in environ.items():
        m = _DB_VAR.match(var)
        if not m or m["id"] not in by_upper or not isinstance(databases[by_upper[m["id"]]], dict):
            continue
        entry = databases[by_upper[m["id"]]]
        field = m["field"].lower()
        if field == "password":
            if not (entry.get("password_env") or entry.get("password_file")):
                entry["password_env"] = var  # a reference: the value is read where the task runs
        else:
            entry[field] = _scalar(raw) if field == "port" else raw


def _storage_mapping(tree: dict[str, Any], backup: dict[str, Any], storage: dict[str, Any]) -> None:
    """``backup.storage: {type: s3, bucket: b, encryption: true}`` -> storage target ``default``."""
    target = {k: v for k, v in storage.items() if k in _STORAGE_KEYS or k not in ("encryption", "compression")}
    if "encryption" in storage:
        backup["encryption"] = storage["encryption"]
    if "compression" in storage:
        backup["compression"] = storage["compression"]
    bucket, prefix = target.pop("bucket", None), target.pop("prefix", "")
    if bucket and not target.get("url"):
        target["url"] = f"s3://{bucket}/{str(prefix).strip('/')}".rstrip("/")
    if target.get("type") == "s3" and target.get("url") and not target["url"].startswith("s3://"):
        target["url"] = f"s3://{target['url']}"
    storages = tree.get("storage")
    if not isinstance(storages, dict):
        storages = tree["storage"] = {}
    storages[DEFAULT_TARGET] = {**(storages.get(DEFAULT_TARGET) or {}), **target}
    backup["storage"] = DEFAULT_TARGET
