"""Where the test servers are, and the rule: skip locally with a reason, fail in CI."""

from __future__ import annotations

import os
import socket

import pytest

CANARY = "canary-Pw-7f3b1c9e-DO-NOT-LEAK"
CANARY_WRONG = "canary-Wrong-41d2a8b6-DO-NOT-LEAK"

SERVERS = {
    "postgresql15": ("127.0.0.1", 5432),
    "mariadb": ("127.0.0.1", 3306),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
}


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str) -> tuple[str, int]:
    """Skip (locally) or fail (CI=true) when a standard-port server is missing."""
    host, port = SERVERS[name]
    if not reachable(host, port):
        reason = f"{name} is not listening on {host}:{port} (start it: ops/scripts/ensure-services.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must not skip: {reason}")
        pytest.skip(reason)
    return host, port
