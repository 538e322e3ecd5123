"""Physical PostgreSQL backups (pg_basebackup tar streams) and point-in-time recovery."""


def is_physical(manifest: dict) -> bool:  # type: ignore[type-arg]
    """True for a base backup taken by pg_basebackup."""
    return bool(manifest.get("options", {}).get("method") == "physical")
