"""Private working directories: every decrypted spool and passfile of a task lives under one of them.

``<root>/private/<task id>/`` is 0700 (as is ``<root>/private``), holds an ``owner`` file (host,
pid) and is removed when the task ends. What a killed worker or local run left behind is removed when
a worker starts (:func:`sweep`) and whenever the next task or local run opens its own directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engines.errors import ConfigError

log = logging.getLogger("dbfleet.backup")
_TASK_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
OWNERLESS_GRACE = 300.0  # seconds a directory without its owner file is taken as being created


def private_root(base: Path) -> Path:
    """``base/private``, created 0700 (and made 0700 if it was not)."""
    root = Path(base) / "private"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    return root


def _owner_alive(path: Path) -> bool:
    """True when the task that owns ``path`` is still running on this host."""
    try:
        owner = json.loads((path / "owner").read_text())
    except (OSError, ValueError):  # no owner yet: a task creating its directory right now, unless it is old
        try:
            return time.time() - path.stat().st_mtime < OWNERLESS_GRACE
        except OSError:
            return False
    if owner.get("host") != socket.gethostname():
        return True  # another host's task (shared storage): never ours to judge
    try:
        os.kill(int(owner.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return int(owner.get("pid", 0)) > 0


def sweep(base: Path) -> list[str]:
    """Remove the private directories of tasks that are no longer running here; returns their names."""
    root = Path(base) / "private"
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not _owner_alive(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("removed %d private directories left by killed tasks under %s", len(removed), root)
    return removed


@contextmanager
def task_dir(base: Path, task_id: str) -> Iterator[Path]:
    """``base/private/<task_id>``, 0700, removed on exit; a dead previous run's copy is removed first."""
    if not _TASK_ID.match(task_id):
        raise ConfigError([("task_id", f"refusing task id {task_id!r} as a directory name")])
    sweep(base)  # whoever runs next (a worker's task or a local run) removes what killed runs left here
    path = private_root(base) / task_id
    if path.exists():
        if _owner_alive(path):
            raise ConfigError([("task_id", f"task {task_id} is already running here ({path})")])
        shutil.rmtree(path, ignore_errors=True)  # a redelivered task: its killed run's leftovers
    path.mkdir(mode=0o700)
    (path / "owner").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def contained(path: str | Path, roots: list[Path], what: str) -> Path:
    """``path`` resolved (symlinks followed); refused unless it lies inside one of ``roots``."""
    resolved = Path(path).expanduser().resolve()
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if not any(resolved == r or resolved.is_relative_to(r) for r in allowed):
        where = ", ".join(str(r) for r in allowed) or "(none configured)"
        raise ConfigError([(what, f"{path} is outside the directories the config allows for it: {where}")])
    return resolved
