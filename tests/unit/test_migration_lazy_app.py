"""The Celery app reads no config at import (task modules and the CLI import it freely); it loads the
config on first use, registers every task module of TASK_MODULES, and `celery -A workers.app` finds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, config: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DBFLEET_CONFIG=config)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_importing_the_app_and_every_task_module_reads_no_config(tmp_path: Path) -> None:
    missing = tmp_path / "not-written-yet.yaml"  # loading it would fail: nothing may try at import
    out = _python("import workers.app, workers.manager, workers.cli\n"
                  "from workers.app import TASK_MODULES\n"
                  "import importlib\n"
                  "for name in TASK_MODULES: importlib.import_module(name)\n"
                  "from workers import runtime\n"
                  "print('loaded', runtime.config.cache_info().currsize)\n", str(missing))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loaded 0"


def test_the_app_loads_the_config_on_first_use_and_registers_the_task_modules(tmp_path: Path) -> None:
    config = tmp_path / "dbfleet.yaml"
    config.write_text("fleet:\n  broker_url: redis://127.0.0.1:6390/3\n  time_limits: {migrations: 600}\n")
    out = _python("from workers.app import app, TASK_MODULES\n"
                  "print(app.conf.broker_url, app.conf.include == TASK_MODULES)\n"
                  "app.loader.import_default_modules()\n"
                  "t = app.tasks['migrations.retry_rejects']\n"
                  "from workers.common import FleetTask\n"
                  "print(t.time_limit, isinstance(t, FleetTask))\n", str(config))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["redis://127.0.0.1:6390/3", "True", "600", "True"]


def test_celery_finds_the_app_by_module(tmp_path: Path) -> None:
    config = tmp_path / "dbfleet.yaml"
    config.write_text("fleet:\n  broker_url: redis://127.0.0.1:6390/4\n")
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.app", "report"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env=dict(os.environ, DBFLEET_CONFIG=str(config)))
    assert out.returncode == 0, out.stderr
    assert "127.0.0.1:6390/4" in out.stdout and "workers.migrations" in out.stdout
