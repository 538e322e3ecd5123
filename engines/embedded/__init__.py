"""Servers that start from Python with no root and no service manager (demo and tests)."""

from engines.embedded.postgres import EmbeddedPostgres
from engines.embedded.redis import EmbeddedRedis, free_port

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "free_port"]
