"""Where the test servers are, and the rule: skip locally with a reason, fail in CI."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

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


# --- ClickHouse (Debian's clickhouse-server, started per test session; see clickhouse_server) ---

CLICKHOUSE_USER = "h5_dbfleet"  # a user whose password is the canary, beside the passwordless "default"
_CH_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/log/server.log</log><errorlog>{root}/log/error.log</errorlog>
    <console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
</yandex>
"""
_CH_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></default>
    <{user}><password_sha256_hex>{password_sha256}</password_sha256_hex><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></{user}>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"""


def clickhouse_binary() -> str | None:
    """clickhouse-server from PATH, else where Debian puts it (/usr/sbin is not on every user's PATH)."""
    found = shutil.which("clickhouse-server")
    if found:
        return found
    return next((p for p in ("/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server") if os.access(p, os.X_OK)), None)


class ClickHouseServer:
    """A clickhouse-server child process with its data in ``root`` on free loopback ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = "127.0.0.1"
        self.http_port = self.tcp_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self, timeout: float = 60.0) -> ClickHouseServer:
        """Write the config, start the server and wait until its HTTP interface answers ``Ok.``."""
        from engines.embedded.redis import free_port

        binary = clickhouse_binary()
        if binary is None:
            raise FileNotFoundError("clickhouse-server")
        for sub in ("log", "data", "tmp", "user_files", "format_schemas"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.http_port, self.tcp_port = free_port(), free_port()
        digest = hashlib.sha256(CANARY.encode()).hexdigest()  # the canary itself is written nowhere
        (self.root / "users.xml").write_text(_CH_USERS.format(user=CLICKHOUSE_USER, password_sha256=digest))
        config = self.root / "config.xml"
        config.write_text(_CH_CONFIG.format(root=self.root, http=self.http_port, tcp=self.tcp_port))
        self.proc = subprocess.Popen([binary, f"--config-file={config}"], cwd=self.root,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.root / "log" / "error.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"clickhouse-server exited with {self.proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:  # noqa: S310 - loopback
                    if resp.read().strip() == b"Ok.":
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"clickhouse-server did not answer on {self.url} within {timeout:.0f}s")

    def query(self, sql_text: str) -> str:
        """Run one statement as ``default`` over HTTP (test set-up only)."""
        req = urllib.request.Request(self.url, data=sql_text.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode())

    def stop(self) -> None:
        """Terminate the server (kill after 10 s)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def clickhouse_server(root: Path) -> ClickHouseServer:
    """A started ClickHouse server; skip locally / fail under CI=true when clickhouse-server is not installed."""
    if clickhouse_binary() is None:
        reason = "clickhouse-server is not installed (ops/scripts/ensure-services.sh installs Debian's package)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must not skip: {reason}")
        pytest.skip(reason)
    return ClickHouseServer(root).start()
