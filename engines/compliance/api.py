"""The documented Python API: ``engine = await initialize_compliance_system()`` then
``await engine.scan_database_compliance({"id": "users_db"})`` and ``await engine.anonymize_data(...)``.

Databases are named by registry id (a string, or a dict whose ``id`` names a registry entry); inline
connection configs are refused. The engine runs each operation through a runner: in this process, or
(workers.compliance) as a task on the ``compliance`` queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engines.config import Config
from engines.errors import ConfigError

Runner = Callable[[str, str, dict[str, Any]], dict[str, Any]]
MATCHED = ("kind", "type", "host", "port", "dbname", "path")


def database_id(ref: str | dict[str, Any], cfg: Config) -> str:
    """The registry id ``ref`` names; a dict may repeat registry fields, never add or change one."""
    if isinstance(ref, str):
        cfg.database(ref)
        return ref
    if not isinstance(ref, dict) or not isinstance(ref.get("id"), str):
        raise ConfigError([("database_config", "name a registered database: \"users_db\" or {\"id\": \"users_db\"}")])
    entry = cfg.database(ref["id"])
    extra = sorted(k for k in ref if k != "id" and k not in MATCHED)
    differs = sorted(k for k in ref if k in MATCHED and str(ref[k]) != str(
        entry.kind if k in ("kind", "type") and ref[k] in (entry.kind, "postgres", "mariadb") else getattr(
            entry, "kind" if k == "type" else k, None)))
    if extra or differs:
        raise ConfigError([("database_config", f"inline database configs are not allowed ({', '.join(extra + differs)} "
                            f"given for {ref['id']!r}); register the database in dbfleet.yaml and pass "
                            "{'id': ...} only")])
    return str(ref["id"])


class ComplianceEngine:
    """Scan, anonymise and erase through a runner (local or the fleet)."""

    def __init__(self, cfg: Config, runner: Runner) -> None:
        self.cfg = cfg
        self.runner = runner

    async def _run(self, script: str, ref: str | dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        db_id = database_id(ref, self.cfg)
        return await asyncio.to_thread(self.runner, script, db_id, options)

    async def scan_database_compliance(self, database_config: str | dict[str, Any], **options: Any) -> dict[str, Any]:
        """PII discovery + GDPR / PCI-DSS / HIPAA / SOX controls: ``standards_compliance``, ``recommendations``."""
        return await self._run("compliance_scan", database_config, options)

    async def anonymize_data(self, database_config: str | dict[str, Any], table_name: str,
                             anonymization_rules: dict[str, str], **options: Any) -> dict[str, Any]:
        """Mask ``table_name`` in place with ``anonymization_rules`` ({column: rule})."""
        return await self._run("compliance_anonymize", database_config,
                               {**options, "table": table_name, "rules": dict(anonymization_rules)})

    async def anonymized_copy(self, database_config: str | dict[str, Any], copy_to: str | dict[str, Any],
                              anonymization_rules: dict[str, dict[str, str]], **options: Any) -> dict[str, Any]:
        """Copy the database into ``copy_to`` (another registered PostgreSQL database), masking
        ``anonymization_rules`` ({table: {column: rule}}) in flight; the source is only read."""
        target = database_id(copy_to, self.cfg)
        return await self._run("compliance_anonymize", database_config,
                               {**options, "copy_to": target, "rules": dict(anonymization_rules)})

    async def erase_subject(self, database_config: str | dict[str, Any], subject: str, *, dry_run: bool = False,
                            **options: Any) -> dict[str, Any]:
        """Erase ``subject`` (``users.id=42``) and its dependent rows; ``dry_run`` only plans."""
        return await self._run("compliance_erase", database_config, {**options, "subject": subject, "dry_run": dry_run})
