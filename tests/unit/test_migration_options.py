"""MigrationOptions: one dataclass instead of plan_migration's positional parameters."""

from __future__ import annotations

import pytest

from engines.errors import ConfigError
from engines.migration.model import MigrationType
from engines.migration.plan import MigrationOptions
from engines.migration.registry import source_class, target_class


def test_options_by_name_with_the_old_kind_alias_and_broker_json() -> None:
    opts = MigrationOptions.of(kind="incremental", batch_size="500", validation=0, watermark="updated_at")
    assert opts.type is MigrationType.INCREMENTAL and opts.batch_size == 500 and opts.validation is False
    base = MigrationOptions(parallel_workers=2)
    assert MigrationOptions.of(base, tables=["a"]) == MigrationOptions(parallel_workers=2, tables=["a"])
    assert base.tables is None  # the given options are not changed


def test_an_unknown_option_is_named_not_ignored() -> None:
    with pytest.raises(ConfigError, match="unknown migration options: batchsize"):
        MigrationOptions.of(batchsize=10)


def test_the_registry_names_what_it_can_read_and_write() -> None:
    assert source_class("mysql").kind == "mysql" and target_class("clickhouse").kind == "clickhouse"
    with pytest.raises(ConfigError, match="cannot migrate into 'redis'; targets: postgresql, mongodb"):
        target_class("redis")
    with pytest.raises(ConfigError, match="cannot migrate from 'mongodb'; sources: postgresql, mysql"):
        source_class("mongodb")


@pytest.mark.parametrize(("field", "value", "message"), [("parallel_workers", 0, "parallel_workers must be at least 1"),
                                                         ("batch_size", 0, "batch_size must be at least 1"),
                                                         ("max_rejects", -1, "max_rejects must be at least 0")])
def test_out_of_range_numbers_are_refused_under_their_own_name_before_connecting(field: str, value: int,
                                                                                 message: str) -> None:
    from engines.config import DatabaseConfig
    from engines.migration.plan import plan_migration

    nowhere = DatabaseConfig(kind="postgresql", host="127.0.0.1", port=1, connect_timeout=1)
    with pytest.raises(ConfigError) as info:
        plan_migration(nowhere, nowhere, **{field: value})
    assert info.value.problems == [(field, message + f", got {value}")]
