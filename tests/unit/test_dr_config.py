"""The typed ``disaster_recovery:`` section: seed spelling, groups, DR_* env vars, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.config import load_config, parse_config
from engines.dr.models import DRConfiguration, DRStrategy
from engines.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "dbfleet.yaml"
BASE = """
databases:
  p: {kind: postgresql, host: 127.0.0.1, port: 5432}
  s: {kind: postgresql, host: 127.0.0.1, port: 5433}
database_scripts:
  disaster_recovery:
"""


def test_the_seed_section_is_typed_and_still_readable_as_a_mapping() -> None:
    section = load_config(EXAMPLE).database_scripts.disaster_recovery
    assert section.rpo_minutes == 15 and section["rto_minutes"] == 60
    assert section.auto_failover_enabled is False  # failover: manual
    assert section.drill_schedule == "0 4 * * 0" and not section.configured and section.all_groups() == {}


def test_an_inline_group_and_named_groups_resolve_with_their_ids() -> None:
    cfg = parse_config(BASE + """    dr_id: main
    strategy: HOT-STANDBY
    primary_site: p
    secondary_sites: [{database: s, data_dir: /srv/s}]
    failover: automatic
    fence_command: [ssh, p, systemctl, stop, postgresql]
    groups:
      other: {primary_site: s, secondary_sites: [p], rpo_minutes: 1}
""", environ={})
    groups = cfg.database_scripts.disaster_recovery.all_groups()
    assert set(groups) == {"main", "other"}
    main = groups["main"]
    assert main.strategy is DRStrategy.HOT_STANDBY and main.auto_failover_enabled
    assert main.secondary_sites[0].data_dir == "/srv/s" and main.fence_command[0] == "ssh"
    assert groups["other"].dr_id == "other" and groups["other"].rpo_seconds == 60


def test_dr_env_vars_override_the_inline_group() -> None:
    cfg = parse_config(BASE + "    rpo_minutes: 5\n", environ={"DR_RPO_MINUTES": "2", "DR_AUTO_FAILOVER_ENABLED": "true"})
    section = cfg.database_scripts.disaster_recovery
    assert section.rpo_minutes == 2 and section.auto_failover_enabled is True


def test_the_documented_dr_enabled_and_dr_auto_failover_names_are_read() -> None:
    from beat_schedule import build_beat_schedule

    body = BASE + "    primary_site: p\n    secondary_sites: [s]\n    drill_schedule: '0 4 * * 0'\n"
    on = parse_config(body, environ={"DR_AUTO_FAILOVER": "true"})
    assert on.database_scripts.disaster_recovery.auto_failover_enabled is True
    assert {"dr_observe:default", "dr_drill:default"} <= set(build_beat_schedule(on))
    off = parse_config(body, environ={"DR_ENABLED": "false"})
    assert off.database_scripts.disaster_recovery.enabled is False
    assert not [k for k in build_beat_schedule(off) if k.startswith("dr_")]  # nothing observes, nothing fails over
    assert set(off.database_scripts.disaster_recovery.all_groups()) == {"default"}  # manual commands still know it
    with pytest.raises(ConfigError, match="enabled"):
        parse_config(body, environ={"DR_ENABLED": "perhaps"})


@pytest.mark.parametrize(("body", "message"), [
    ("    primary_site: p\n    secondary_sites: [nope]\n", "unknown database id 'nope'"),
    ("    primary_site: p\n    secondary_sites: [s]\n    fence_command: 'ssh p stop'\n", "argv list"),
    ("    primary_site: p\n    secondary_sites: [p]\n", "once in a DR group"),
    ("    failover: sometimes\n", "'manual' or 'automatic'"),
    ("    drill_schedule: 'every day'\n", "five-field cron"),
    ("    strategy: cold\n", "strategy"),
])
def test_bad_sections_name_the_problem(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + body, environ={})
    assert message in str(err.value)


def test_slot_names_are_safe_identifiers() -> None:
    cfg = DRConfiguration(dr_id="Spotify-Prod DR", primary_site="p", secondary_sites=["s.1"])
    assert cfg.slot_name("s.1") == "dbfleet_spotify_prod_dr_s_1"


def test_each_dr_group_gets_an_observe_entry_and_its_drill_on_the_dr_queue() -> None:
    from celery.schedules import crontab, schedule

    from beat_schedule import build_beat_schedule

    cfg = parse_config(BASE + """    dr_id: main
    primary_site: p
    secondary_sites: [s]
    observe_interval_seconds: 3
    drill_schedule: "0 5 * * 6"
""", environ={})
    entries = build_beat_schedule(cfg)
    observe, drill = entries["dr_observe:main"], entries["dr_drill:main"]
    assert (observe["task"], observe["args"], observe["options"]) == ("dr.observe", ["main"], {"queue": "dr"})
    assert isinstance(observe["schedule"], schedule) and observe["schedule"].run_every.total_seconds() == 3
    assert (drill["task"], drill["args"], drill["options"]) == ("dr.drill", ["main"], {"queue": "dr"})
    assert isinstance(drill["schedule"], crontab) and str(drill["schedule"].day_of_week) == "{6}"
    plain = parse_config("databases:\n  p: {kind: postgresql, host: 127.0.0.1}\n", environ={})
    assert not any(k.startswith("dr_") for k in build_beat_schedule(plain))
