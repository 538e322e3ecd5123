"""The `dbfleet` console script: `wal push` / `wal fetch` take a lean path, everything else the full CLI.

PostgreSQL runs ``archive_command`` and ``restore_command`` once per WAL file; importing the whole
CLI (click, rich, the config models, Celery's world) for each was most of a push. Anything the lean
parser does not recognise exactly, ``--help`` included, goes to :func:`workers.cli.main` unchanged.
"""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if "wal" in argv[:5]:
        from engines.backup.wal import lean

        parsed = lean.parse(argv)
        if parsed is not None:
            lean.run(parsed)
            return
    from workers.cli import main as full

    full()


if __name__ == "__main__":
    main()
