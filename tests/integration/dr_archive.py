"""A filesystem backup repository the DR tests' primary archives into with the real ``dbfleet wal push``.

PostgreSQL runs the archive and restore commands as the cluster's OS user; as root, that user cannot
enter /root where this venv's interpreter may live, so (as in test_pitr) ``dbfleet`` is this venv's
``workers.cli:main`` started by the system's Python from a wrapper on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from engines.backup.repository import Repository
from engines.storage.filesystem import FilesystemStorage

KEY = "h19-dr-repository-key"
OWNER = "postgres"


class Archive:
    """``root/repo`` (key in a 0600 file), ``root/dbfleet.yaml`` naming the primary, a ``dbfleet`` on PATH."""

    def __init__(self, root: Path, primary_id: str) -> None:
        if os.geteuid() == 0 and not Path("/usr/bin/python3").exists():
            pytest.skip("as root, /usr/bin/python3 is needed to run dbfleet as the cluster's OS user")
        self.root = root
        self.config = root / "dbfleet.yaml"
        self.bindir = root / "bin"
        self.key = root / "repo.key"
        self._private(self.key, KEY)
        self._private(self.config, json.dumps({
            "fleet": {"state_dir": str(root / "state")},
            "storage": {"repo": {"type": "filesystem", "path": str(root / "repo"), "key_file": str(self.key)}},
            "database_scripts": {"backup": {"storage": "repo"}},
            # wal push/fetch read only the kind of the database whose archive they serve
            "databases": {primary_id: {"kind": "postgresql", "host": "127.0.0.1", "dbname": "postgres",
                                       "user": "postgres"}}}))
        self.dbfleet = self._wrapper()
        self.repo_dir = root / "repo"
        self.repo_dir.mkdir(exist_ok=True)
        self._own(self.repo_dir)
        self.repository = Repository.open_or_init(FilesystemStorage(self.repo_dir), KEY)
        self.chown_tree(self.repo_dir)

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, OWNER, OWNER)

    def chown_tree(self, path: Path) -> None:
        self._own(path)
        for p in path.rglob("*"):
            self._own(p)

    def _private(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        self._own(path)

    def _wrapper(self) -> str:
        if os.geteuid() != 0:
            return str(Path(sys.executable).with_name("dbfleet"))
        self.bindir.mkdir(exist_ok=True)
        site = sysconfig.get_paths()["purelib"]
        script = self.bindir / "dbfleet"
        script.write_text(f"#!/bin/sh\nexec /usr/bin/python3 -c 'import site, sys; site.addsitedir(\"{site}\"); "
                          f"sys.argv[0] = \"dbfleet\"; from workers.cli import main; main()' \"$@\"\n")
        script.chmod(0o755)
        return str(script)

    def archive_conf(self, database_id: str) -> dict[str, str]:
        """postgresql.conf settings that archive into the repository with ``dbfleet wal push``."""
        return {"archive_mode": "on", "archive_command": f"{self.dbfleet} --config {self.config} wal push %p "
                                                         f"--db {database_id}"}

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """restore_command resolves ``dbfleet`` and the config from this process's PATH and DBFLEET_CONFIG."""
        monkeypatch.setenv("DBFLEET_CONFIG", str(self.config))
        if os.geteuid() == 0:
            monkeypatch.setenv("PATH", f"{self.bindir}:{os.environ['PATH']}")

    def open(self) -> Repository:
        return Repository.open(FilesystemStorage(self.repo_dir), KEY)


def switch_and_archive(sql: object, timeout: float = 120.0) -> str:
    """Close the current segment on the primary and wait until the archiver has pushed it."""
    closed = sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0]  # type: ignore[operator]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last, failed = sql("SELECT last_archived_wal, failed_count FROM pg_stat_archiver")[0]  # type: ignore[operator]
        if last and last >= closed:
            return str(closed)
        time.sleep(0.1)
    raise AssertionError(f"the archiver did not push {closed} (failed_count {failed})")
